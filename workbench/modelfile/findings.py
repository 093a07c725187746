"""Findings: everything personal a model file carries besides its weights, as typed, graded records.

A :class:`Finding` has a kind (:data:`KINDS`, a registry) whose severity says what leaking the file would
expose, on the scorecard's scale (:data:`workbench.report.scorecard.LEVELS`, same names, same order):

- SEVERE: the file *reproduces training photos* — a photo inside it is the person (identity encoder at its
  calibrated threshold) *and* a copy of one of their photos (registered pixel ℓ2 within the extraction δ,
  Carlini et al. 2023), i.e. the scorecard's "training photo reproduced within δ".
- HIGH: it identifies or locates a person — a face photo, an e-mail address, GPS coordinates.
- MEDIUM: it describes the person or their data — captions, dataset folder and file names, tag
  frequencies, EXIF camera/time/owner fields, user ids, training-photo hashes, fine-tuned weights.
- LOW: training settings and software details.

Scanners here read text (captions, prompts, JSON, the model card), safetensors ``__metadata__`` (kohya's
``ss_*`` keys: kohya-ss/sd-scripts ``train_network.py``; ``modelspec.*``: Stability AI's ModelSpec) and
image EXIF (read from the raw bytes, before anything re-encodes the image). Embedded photos are in
:mod:`workbench.modelfile.photos`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from io import BytesIO

LEVELS = ("LOW", "MEDIUM", "HIGH", "SEVERE")  # as workbench.report.scorecard.LEVELS, increasing risk


@dataclass(frozen=True)
class Kind:
    severity: str
    exposes: str  # what leaking the file would expose, in plain words


KINDS: dict[str, Kind] = {}


def register_kind(name: str, severity: str, exposes: str) -> None:
    if name in KINDS or severity not in LEVELS:
        raise ValueError(f"finding kind {name!r}: registered twice or unknown severity {severity!r}")
    KINDS[name] = Kind(severity, exposes)


for _name, _sev, _text in (
    ("training_photo", "SEVERE", "a training photo of the person: the same identity and a pixel copy of one of "
                                 "their photos"),
    ("photo_of_person", "HIGH", "a photo of the person (same identity as the selfies; not a copy of any given)"),
    ("face_photo", "HIGH", "a face photo of someone (biometric data; pass --selfies to check whose)"),
    ("gps", "HIGH", "where a photo was taken (EXIF GPS coordinates)"),
    ("email", "HIGH", "an e-mail address (identifies a person directly)"),
    ("unsafe_pickle", "HIGH", "code: loading this pickle would run it (it was not loaded)"),
    ("image", "MEDIUM", "an image without a detectable face"),
    ("exif", "MEDIUM", "camera, time or owner details of a photo (EXIF)"),
    ("image_text", "MEDIUM", "text stored inside an image (e.g. generation prompts)"),
    ("captions", "MEDIUM", "captions or prompts describing the training photos"),
    ("dataset_names", "MEDIUM", "folder and file names of the training data"),
    ("tag_frequency", "MEDIUM", "tags describing the training photos, with counts"),
    ("user_id", "MEDIUM", "an account, customer or user id"),
    ("training_hashes", "MEDIUM", "hashes of the training photos: whoever holds a photo can confirm it was used"),
    ("weights", "MEDIUM", "fine-tuned weights: if trained on a person, they generate that person's likeness "
                          "(measure it with `workbench mia`)"),
    ("nested_archive", "MEDIUM", "an archive inside the file, not opened (inspect it on its own)"),
    ("subject_id", "LOW", "a pseudonymous subject id"),
    ("training_settings", "LOW", "training settings and software details"),
):
    register_kind(_name, _sev, _text)


@dataclass
class Finding:
    kind: str
    where: str  # member name inside the file
    summary: str  # one line, for the text report
    details: dict = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return KINDS[self.kind].severity

    def to_dict(self) -> dict:
        return {"severity": self.severity, "exposes": KINDS[self.kind].exposes} | asdict(self)


def worst(findings: list[Finding]) -> str:
    """The highest severity among ``findings`` ("LOW" when there are none)."""
    return max((f.severity for f in findings), key=LEVELS.index, default="LOW")


def _short(text: str, n: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------------------------------------------
# Strings: e-mail addresses and labelled user ids (patterns are a registry too).

PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}"
                        r"(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}"),
    "user_id": re.compile(r"\b(?:user|customer|client|account|order|uploader|owner)[ _-]?(?:id|name)\b"
                          r"[\"']?\s*[:=]\s*[\"']?([\w.@+-]{2,64})", re.I),
}


def scan_strings(text: str, where: str) -> list[Finding]:
    """E-mail-like strings and labelled user ids in ``text``."""
    out = []
    for kind, pattern in PATTERNS.items():
        hits = sorted({m.group(m.lastindex or 0) for m in pattern.finditer(text)})
        if hits:
            out.append(Finding(kind, where, f"{len(hits)} {kind.replace('_', ' ')}(s): {', '.join(hits[:5])}",
                               {"values": hits[:50]}))
    return out


# ---------------------------------------------------------------------------------------------------
# Text files: captions/prompts, JSON records (the workbench's own bundle among them).

CAPTION_NAMES = re.compile(r"\.(txt|caption|captions|prompt|prompts)$", re.I)
#: JSON keys that carry personal data -> (finding kind, description); matched at any depth.
JSON_KEYS = {
    "train_image_sha256": ("training_hashes", "sha256 of the training photos"),
    "train_images": ("training_hashes", "the training images of the job"),
    "subject_id": ("subject_id", "subject id"),
    "instance_prompt": ("captions", "the instance prompt"),
    "prompt": ("captions", "a prompt"),
    "caption": ("captions", "a caption"),
}


def _walk_json(obj, path: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}" if path else str(k), str(k), v
            yield from _walk_json(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:1000]):
            yield from _walk_json(v, f"{path}[{i}]")


def scan_text(text: str, where: str) -> list[Finding]:
    """Findings in a text member: captions (by name), JSON keys of :data:`JSON_KEYS`, e-mails and ids."""
    out: list[Finding] = []
    try:
        obj = json.loads(text) if text.lstrip()[:1] in ("{", "[") else None
    except ValueError:
        obj = None
    if obj is not None:
        seen: dict[str, list] = {}
        for path, key, value in _walk_json(obj):
            if key in JSON_KEYS:
                seen.setdefault(key, []).append((path, value))
        for key, hits in seen.items():
            kind, what = JSON_KEYS[key]
            values = [v for _, v in hits]
            count = sum(len(v) if isinstance(v, list) else 1 for v in values)
            sample = _short(json.dumps(values[0]) if not isinstance(values[0], str) else values[0], 60)
            out.append(Finding(kind, where, f"{what} ({count} value(s) at {hits[0][0]}): {sample}",
                               {"key": key, "count": count}))
    elif CAPTION_NAMES.search(where) and text.strip():
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        out.append(Finding("captions", where, f"{len(lines)} line(s): {_short(lines[0], 70)!r}",
                           {"lines": len(lines), "sample": [_short(x, 200) for x in lines[:5]]}))
    return out + scan_strings(text, where)


# ---------------------------------------------------------------------------------------------------
# safetensors __metadata__ (kohya ss_*, modelspec.*): a registry of keys worth naming.

#: metadata key -> (finding kind, what it holds). Values that are JSON are parsed to count and show.
METADATA_KEYS = {
    "ss_dataset_dirs": ("dataset_names", "dataset folders, kohya's '<repeats>_<name>', with image counts"),
    "ss_datasets": ("dataset_names", "dataset configuration (image folders, subsets)"),
    "ss_tag_frequency": ("tag_frequency", "tag counts per dataset folder"),
    "ss_output_name": ("dataset_names", "output name chosen by whoever trained it"),
    "ss_training_comment": ("captions", "training comment"),
    "ss_reg_dataset_dirs": ("dataset_names", "regularisation image folders"),
    "modelspec.title": ("dataset_names", "model title"),
    "modelspec.author": ("user_id", "author"),
    "modelspec.description": ("captions", "model description"),
    "modelspec.trigger_phrase": ("captions", "trigger phrase"),
}
SETTINGS_PREFIXES = ("ss_", "modelspec.", "sshs_", "format", "lora_", "unet_", "text_encoder")


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def _folders(value) -> list[str]:
    if isinstance(value, dict):
        return sorted(map(str, value))
    if isinstance(value, list):  # ss_datasets: [{"subsets": [{"image_dir": ...}]}]
        return sorted({str(s.get("image_dir")) for d in value if isinstance(d, dict)
                       for s in d.get("subsets", []) if isinstance(s, dict) and s.get("image_dir")})
    return [str(value)]


def scan_metadata(meta: dict[str, str], where: str) -> list[Finding]:
    """Findings in a safetensors ``__metadata__`` block."""
    out: list[Finding] = []
    for key, (kind, what) in METADATA_KEYS.items():
        if key not in meta or not str(meta[key]).strip() or meta[key] in ("None", "null", "{}", "[]"):
            continue
        value = _json_or_text(meta[key])
        if kind == "tag_frequency" and isinstance(value, dict):
            tags = {t: c for d in value.values() if isinstance(d, dict) for t, c in d.items()}
            top = sorted(tags, key=lambda t: -tags[t] if isinstance(tags[t], (int, float)) else 0)[:8]
            out.append(Finding(kind, where, f"{key}: {len(tags)} tags in {len(value)} folder(s), e.g. {', '.join(top)}",
                               {"key": key, "folders": sorted(value)[:50], "tags": top}))
        elif kind == "dataset_names":
            names = _folders(value)
            out.append(Finding(kind, where, f"{key} ({what}) = {_short(', '.join(names), 90)}",
                               {"key": key, "values": names[:50]}))
        else:
            out.append(Finding(kind, where, f"{key} ({what}) = {_short(str(meta[key]), 80)}",
                               {"key": key, "value": _short(str(meta[key]), 500)}))
    settings = sorted(k for k in meta if k not in METADATA_KEYS)
    if settings:
        out.append(Finding("training_settings", where, f"{len(settings)} other metadata key(s): "
                           f"{_short(', '.join(settings), 90)}", {"keys": settings}))
    return out + scan_strings("\n".join(f"{k}: {v}" for k, v in meta.items()), f"{where} (metadata)")


# ---------------------------------------------------------------------------------------------------
# EXIF and image text chunks, from the raw bytes (before the safe decoder drops them).

#: EXIF tags worth naming (tag id -> name), in IFD0 and the Exif sub-IFD (EXIF 2.32 / CIPA DC-008).
EXIF_TAGS = {0x010F: "Make", 0x0110: "Model", 0x0131: "Software", 0x0132: "DateTime", 0x013B: "Artist",
             0x8298: "Copyright", 0x9003: "DateTimeOriginal", 0xA431: "BodySerialNumber",
             0xA435: "LensSerialNumber", 0x9C9B: "XPTitle", 0x9C9C: "XPComment", 0x9C9D: "XPAuthor",
             0x010E: "ImageDescription", 0x927C: "MakerNote", 0xA420: "ImageUniqueID", 0x9286: "UserComment"}
GPS_IFD, EXIF_IFD = 0x8825, 0x8769


def _gps_degrees(gps: dict) -> tuple[float, float] | None:
    try:
        def deg(v, ref, neg):
            d, m, s = (float(x) for x in v)
            return (-1 if ref in neg else 1) * (d + m / 60 + s / 3600)

        return round(deg(gps[2], gps.get(1, "N"), ("S",)), 6), round(deg(gps[4], gps.get(3, "E"), ("W",)), 6)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def scan_image_metadata(data: bytes, where: str) -> list[Finding]:
    """EXIF (GPS apart) and text chunks of a JPEG/PNG/WEBP, read without decoding its pixels."""
    from PIL import Image

    from workbench.subjects.decode import FORMATS

    try:
        with Image.open(BytesIO(data), formats=list(FORMATS)) as img:
            exif = img.getexif()
            texts = {k: v for k, v in img.info.items() if isinstance(v, str) and k not in ("icc_profile",)}
            fields = {name: exif.get(tag) for tag, name in EXIF_TAGS.items() if exif.get(tag) is not None}
            sub = exif.get_ifd(EXIF_IFD)
            fields |= {name: sub.get(tag) for tag, name in EXIF_TAGS.items() if sub.get(tag) is not None}
            gps = dict(exif.get_ifd(GPS_IFD))
    except Exception:  # noqa: BLE001 - the safe decoder reports undecodable images; EXIF is best effort
        return []
    out: list[Finding] = []
    if gps:
        coords = _gps_degrees(gps)
        text = f"latitude {coords[0]}, longitude {coords[1]}" if coords else f"{len(gps)} GPS field(s)"
        out.append(Finding("gps", where, f"EXIF GPS: {text}", {"coordinates": coords}))
    if fields:
        shown = {k: _short(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v), 60)
                 for k, v in fields.items() if k != "MakerNote"}
        out.append(Finding("exif", where, "EXIF " + "; ".join(f"{k}={v}" for k, v in shown.items()),
                           {"fields": shown}))
    if texts:
        out.append(Finding("image_text", where, "text chunks " + "; ".join(f"{k}={_short(v, 50)!r}"
                                                                           for k, v in texts.items()),
                           {"keys": sorted(texts)}))
        out += scan_strings("\n".join(texts.values()), where)
    return out
