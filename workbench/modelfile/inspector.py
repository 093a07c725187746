"""``inspect``: what a model file holds — weights and their format and base family, and everything personal.

:func:`inspect_path` opens the file or folder (:mod:`.archive`: archives are checked member by member
before anything is read, and refused whole if one member is unsafe), identifies each member by its
content (:data:`SNIFFERS`, a registry: never by file name, except that a pickle is refused by name too),
hands it to the handler of its kind (:data:`HANDLERS`) and gathers :class:`EntryReport` rows and
:class:`~.findings.Finding` records into a :class:`Report`. :func:`render_text` prints it for people;
``Report.to_dict`` is the ``--json`` output. Nothing is extracted to disk and nothing is unpickled.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from workbench.modelfile import findings as fnd
from workbench.modelfile import formats
from workbench.modelfile.archive import Member, Source, open_source
from workbench.modelfile.findings import Finding

HEAD_BYTES = 4096
_KOHYA_DIR = re.compile(r"^\d+_.+")  # kohya's dataset folders: "<repeats>_<instance prompt>"
MAX_TEXT_BYTES = 4 << 20  # text members larger than this are listed, not scanned
IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
OTHER_IMAGE_MAGIC = ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
GRADE_MEANING = {
    "SEVERE": "training photos of the person are inside the file",
    "HIGH": "the file identifies or locates a person (a face photo, an e-mail address, GPS)",
    "MEDIUM": "the file describes the person or their training data (or is fine-tuned weights)",
    "LOW": "nothing personal was found besides settings (not a proof of safety: what the weights memorised "
           "is measured by `workbench mia`, not by inspect)",
}


@dataclass
class EntryReport:
    name: str
    size: int
    kind: str  # safetensors, pickle, torch-zip, image, text, archive, binary
    status: str = "read"  # read | refused | damaged | not decoded
    format: str | None = None  # weight format (formats.WEIGHT_FORMATS) or image format
    family: str | None = None
    details: dict = field(default_factory=dict)


@dataclass
class Report:
    source: str
    container: str
    layout: str
    entries: list[EntryReport]
    findings: list[Finding]
    notes: list[str]
    selfies: dict | None = None

    @property
    def grade(self) -> str:
        return fnd.worst(self.findings)

    def to_dict(self) -> dict:
        return {"source": self.source, "container": self.container, "layout": self.layout,
                "grade": self.grade, "grade_meaning": GRADE_MEANING[self.grade],
                "entries": [asdict(e) for e in self.entries], "findings": [f.to_dict() for f in self.sorted_findings()],
                "notes": self.notes, "selfies": self.selfies}

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (-fnd.LEVELS.index(f.severity), f.where, f.kind))


@dataclass
class Context:
    source: Source
    selfies: object | None  # photos.Selfies


# ---------------------------------------------------------------------------------------------------
# Sniffers: (kind, test(head, member)) in order; the first that matches names the member's kind.


def _is_text(head: bytes) -> bool:
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a multi-byte character cut at the end of the head
    return True


SNIFFERS: tuple[tuple[str, Callable[[bytes, Member], bool]], ...] = (
    ("safetensors", lambda h, m: formats.is_safetensors(h, m.size)),
    ("pickle", lambda h, m: formats.is_pickle(h)),
    ("zip", lambda h, m: h.startswith((b"PK\x03\x04", b"PK\x05\x06"))),
    ("image", lambda h, m: any(h.startswith(s) for s, _ in IMAGE_MAGIC) or (h[:4] == b"RIFF" and h[8:12] == b"WEBP")),
    ("other-image", lambda h, m: any(h.startswith(s) for s, _ in OTHER_IMAGE_MAGIC)),
    ("archive", lambda h, m: h.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")) or h[257:262] == b"ustar"),
    ("pickle", lambda h, m: m.name.lower().endswith(formats.PICKLE_NAMES)),  # protocol 0/1 or unknown: by name
    ("text", lambda h, m: _is_text(h)),
)


def sniff(head: bytes, member: Member) -> str:
    return next((kind for kind, test in SNIFFERS if test(head, member)), "binary")


# ---------------------------------------------------------------------------------------------------
# Handlers: kind -> fn(ctx, member, entry) -> findings (they fill ``entry`` in place).

Handler = Callable[[Context, Member, EntryReport], list[Finding]]
HANDLERS: dict[str, Handler] = {}


def handler(kind: str):
    def wrap(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return wrap


PERSONAL_WEIGHTS = ("kohya-lora", "diffusers-lora", "textual-inversion", "single-file-checkpoint", "diffusers-unet")


def _describe_weights(header: formats.SafetensorsHeader, entry: EntryReport) -> list[Finding]:
    fmt = formats.weight_format(header)
    family = formats.infer_family(header)
    entry.format = fmt.name if fmt else "unknown weights"
    entry.family = family.family
    entry.details |= {"format_label": fmt.label if fmt else "no known key layout", "family_evidence": family.reasons,
                      "loads_with": fmt.loads_with if fmt else None}
    if fmt and fmt.name in PERSONAL_WEIGHTS:
        return [Finding("weights", entry.name, f"{fmt.label}; base {family.text()}",
                        {"format": fmt.name, "family": family.family})]
    return []


@handler("safetensors")
def _safetensors(ctx: Context, m: Member, entry: EntryReport) -> list[Finding]:
    with ctx.source.open(m.name) as fh:
        try:
            header = formats.read_safetensors_header(fh, m.size)
        except formats.FormatError as exc:
            entry.status, entry.details["error"] = "damaged", str(exc)
            return []
    entry.details |= {"tensors": len(header.tensors), "parameters": header.n_params,
                      "dtypes": sorted({t.dtype for t in header.tensors.values()}),
                      "metadata_keys": sorted(header.metadata)}
    return _describe_weights(header, entry) + fnd.scan_metadata(header.metadata, m.name)


PICKLE_REFUSAL = ("a pickle: loading it (pickle.load, torch.load) runs code the file's author chose, so it was not "
                  "loaded; ask for .safetensors, or convert it on a machine you can throw away")


def _pickle_findings(scan: formats.PickleScan, entry: EntryReport) -> list[Finding]:
    keys = [s for s in scan.strings if "." in s and " " not in s and len(s) < 200]
    entry.details |= {"imports": sorted(set(scan.imports))[:50], "strings_seen": len(scan.strings)}
    if scan.error:
        entry.details["scan"] = scan.error
    out: list[Finding] = []
    if keys:  # key names from the opcodes (no shapes): a format and family guess, nothing loaded
        header = formats.SafetensorsHeader({k: formats.Tensor("?", ()) for k in keys}, {})
        out += _describe_weights(header, entry)
    if scan.unsafe_imports:
        out.append(Finding("unsafe_pickle", entry.name, "loading it would call " + ", ".join(scan.unsafe_imports[:5]),
                           {"imports": scan.unsafe_imports}))
    return out + fnd.scan_strings("\n".join(scan.strings), entry.name)


@handler("pickle")
def _pickle(ctx: Context, m: Member, entry: EntryReport) -> list[Finding]:
    entry.status, entry.details["refused"] = "refused", PICKLE_REFUSAL
    with ctx.source.open(m.name) as fh:
        return _pickle_findings(formats.scan_pickle(fh), entry)


@handler("zip")
def _zip(ctx: Context, m: Member, entry: EntryReport) -> list[Finding]:
    """A torch zip checkpoint (``data.pkl`` inside) is a pickle: its file list is read, its pickle only
    disassembled. Any other zip inside the file is a nested archive, listed but not opened."""
    with ctx.source.open(m.name) as fh:
        stream: BinaryIO = fh if fh.seekable() else io.BytesIO(fh.read(MAX_TEXT_BYTES * 16))
        try:
            with zipfile.ZipFile(stream) as zf:
                names = zf.namelist()
                pkl = next((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), None)
                if pkl is None:
                    entry.kind = "archive"
                    return [Finding("nested_archive", m.name, f"a zip of {len(names)} entries, not opened",
                                    {"entries": len(names)})]
                entry.kind, entry.status, entry.details["refused"] = "torch-zip", "refused", PICKLE_REFUSAL
                more = [f"... {len(names) - 20} more"] if len(names) > 20 else []
                entry.details["container_files"] = names[:20] + more
                with zf.open(pkl) as pf:
                    return _pickle_findings(formats.scan_pickle(pf), entry)
        except zipfile.BadZipFile as exc:
            entry.status, entry.details["error"] = "damaged", f"not a readable zip ({exc})"
            return []


@handler("archive")
def _archive(ctx: Context, m: Member, entry: EntryReport) -> list[Finding]:
    return [Finding("nested_archive", m.name, "an archive inside the file, not opened: extract it and inspect it "
                    "on its own")]


@handler("other-image")
def _other_image(ctx: Context, m: Member, entry: EntryReport) -> list[Finding]:
    entry.status = "not decoded"
    entry.details["reason"] = "only JPEG, PNG and WEBP are decoded (PRIVACY.md, Inputs)"
    return [Finding("image", m.name, "an image in a format the workbench does not decode (not checked for faces)")]


@handler("image")
def _image(ctx: Context, m: Member, entry: EntryReport) -> list[Finding]:
    import numpy as np

    from workbench.modelfile.photos import analyse_photo
    from workbench.subjects.decode import MAX_BYTES, PhotoRejected, load_photo

    if m.size > MAX_BYTES:
        entry.status, entry.details["reason"] = "not decoded", "larger than the intake's limit"
        return [Finding("image", m.name, "an image too large to decode (not checked for faces)")]
    with ctx.source.open(m.name) as fh:
        data = fh.read(MAX_BYTES + 1)
    out = fnd.scan_image_metadata(data, m.name)  # EXIF first: decoding drops it
    try:
        rgb = np.asarray(load_photo(data))
    except PhotoRejected as exc:
        entry.status, entry.details["reason"] = "not decoded", exc.reason
        return out + [Finding("image", m.name, f"an image the safe decoder refused: {exc.reason}")]
    result = analyse_photo(rgb, ctx.selfies)
    entry.format = next((f for sig, f in IMAGE_MAGIC if data.startswith(sig)), "WEBP")
    entry.details |= {k: v for k, v in asdict(result).items() if v is not None}
    size = f"{result.width}x{result.height}"
    if result.training_photo:
        out.append(Finding("training_photo", m.name,
                           f"{size}: the person (cosine {result.identity:.3f} to {result.identity_selfie}, threshold "
                           f"{ctx.selfies.threshold}) and a copy of {result.copy_of} (registered l2 "
                           f"{result.registered_l2:.3f} <= {ctx.selfies.delta} at {result.compared_at} px)",
                           asdict(result)))
    elif result.same_person:
        out.append(Finding("photo_of_person", m.name,
                           f"{size}: the person (cosine {result.identity:.3f} to {result.identity_selfie}), not a "
                           f"copy of any selfie given (nearest registered l2 {result.registered_l2:.3f} > "
                           f"{ctx.selfies.delta})", asdict(result)))
    elif result.faces:
        who = (f"not the person (cosine {result.identity:.3f} < {ctx.selfies.threshold})"
               if ctx.selfies is not None and result.identity is not None else "identity not checked")
        out.append(Finding("face_photo", m.name, f"{size}: {result.faces} face(s), {who}", asdict(result)))
    else:
        out.append(Finding("image", m.name, f"{size}: no face detected"))
    return out


@handler("text")
def _text(ctx: Context, m: Member, entry: EntryReport) -> list[Finding]:
    if m.size > MAX_TEXT_BYTES:
        entry.status = "not decoded"
        entry.details["reason"] = f"text larger than {MAX_TEXT_BYTES >> 20} MiB, not scanned"
        return []
    with ctx.source.open(m.name) as fh:
        text = fh.read(MAX_TEXT_BYTES).decode("utf-8", "replace")
    return fnd.scan_text(text, m.name)


@handler("binary")
def _binary(ctx: Context, m: Member, entry: EntryReport) -> list[Finding]:
    return []


# ---------------------------------------------------------------------------------------------------
# Layouts: what the whole file is, from its member names.

LAYOUTS: tuple[tuple[str, Callable[[set[str]], bool]], ...] = (
    ("workbench model bundle (workbench export)", lambda n: "bundle.json" in n and "artifact/DONE.json" in n),
    ("workbench artifact folder", lambda n: "DONE.json" in n),
    ("diffusers pipeline folder", lambda n: "model_index.json" in n),
    ("diffusers LoRA", lambda n: any(x.endswith("pytorch_lora_weights.safetensors") for x in n)),
    ("kohya-style training folders (<repeats>_<name>/)", lambda n: any(_KOHYA_DIR.match(p) for x in n
                                                                          for p in x.split("/")[:-1])),
)


def inspect_path(path: str | Path, selfies: str | Path | None = None, encoder: str = "sface") -> Report:
    """Inspect a model file or folder (module docstring); ``selfies``: a folder of the person's photos."""
    loaded = None
    if selfies is not None:
        from workbench.modelfile.photos import load_selfies

        loaded = load_selfies(selfies, encoder)
    with open_source(path) as source:
        ctx = Context(source, loaded)
        entries: list[EntryReport] = []
        found: list[Finding] = []
        for m in source.members:
            with source.open(m.name) as fh:
                head = fh.read(HEAD_BYTES)
            entry = EntryReport(m.name, m.size, sniff(head, m))
            found += HANDLERS[entry.kind](ctx, m, entry)
            entries.append(entry)
        names = {m.name for m in source.members}
        layout = next((name for name, test in LAYOUTS if test(names)), "no known layout")
        selfie_info = None if loaded is None else {
            "encoder": loaded.encoder, "threshold": loaded.threshold, "delta_registered_l2": loaded.delta,
            "photos": len(loaded.photos), "rejected": [{"name": n, "reason": r} for n, r in loaded.rejected]}
        return Report(source.label, source.container, layout, entries, found, list(source.notes), selfie_info)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render_text(report: Report) -> str:
    """The report for people: what the file is, its grade, its members, the findings (worst first)."""
    lines = [f"Model file: {report.source}",
             f"  container: {report.container}, {len(report.entries)} file(s); layout: {report.layout}",
             f"  grade: {report.grade} - {GRADE_MEANING[report.grade]}"]
    if report.selfies:
        s = report.selfies
        lines.append(f"  selfies: {s['photos']} photo(s) with a face ({len(s['rejected'])} rejected); identity "
                     f"{s['encoder']} cosine >= {s['threshold']}, copy: registered l2 <= {s['delta_registered_l2']}")
    lines += ["", "Files"]
    for e in report.entries:
        what = f"{e.kind}: {e.format}" if e.format else e.kind
        extra = f", base {e.family}" if e.family else ""
        if "faces" in e.details:
            extra += f", {e.details['width']}x{e.details['height']}, {e.details['faces']} face(s)"
        if "tensors" in e.details:
            extra += f", {e.details['tensors']} tensors, {e.details['parameters']:,} parameters"
        status = "" if e.status == "read" else f"  [{e.status.upper()}]"
        lines.append(f"  {e.name}  ({_size(e.size)}, {what}{extra}){status}")
        if e.status == "refused":
            lines.append(f"      refused: {e.details.get('refused')}")
        elif e.status in ("damaged", "not decoded"):
            lines.append(f"      {e.details.get('error') or e.details.get('reason')}")
    lines += ["", "Findings (worst first)"]
    if not report.findings:
        lines.append("  none")
    for f in report.sorted_findings():
        lines.append(f"  {f.severity:<6}  {f.kind:<17} {f.where}: {f.summary}")
    if report.notes:
        lines += ["", "Not followed"] + [f"  {n}" for n in report.notes]
    lines += ["", "What each finding exposes if the file leaks:"]
    for kind in sorted({f.kind for f in report.findings}, key=lambda k: -fnd.LEVELS.index(fnd.KINDS[k].severity)):
        lines.append(f"  {kind}: {fnd.KINDS[kind].exposes}")
    return "\n".join(lines) + "\n"
