"""Photo intake: untrusted photos in, a subject's normalised photos and aligned crops out.

:func:`intake` takes files and folders, and for each photo: decodes and normalises it
(:mod:`.decode`), finds the faces (:mod:`.faces`) and rejects, with a reason the user can act on, a
photo with no face, with a second person, with a face too small for the backbone's resolution, or a
near-duplicate of a photo already accepted. A face smaller than :func:`min_face_px` is accepted only
under an explicit upscaling policy (:class:`UpscaleParams`, spec ``subject.upscale``): the aligned
crop is then an enlargement of the photo (bicubic, at most ``max_factor`` crop pixels per source
pixel), and the factor is recorded per photo (``upscale`` in ``subject.json`` and the report).
Accepted photos are stored under content hashes (:mod:`.store`) and split deterministically into
train and holdout. One bad photo never stops the others. Intake is additive and idempotent: the
same photos again give the same hashes and files.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from workbench.errors import UserError
from workbench.lifecycle import sealed
from workbench.subjects.decode import MAX_BYTES, PhotoRejected, encode_png, load_photo
from workbench.subjects.faces import DETECTORS, Face, align_crop, crop_zoom, detect_faces, main_face
from workbench.subjects.store import SubjectStore, load_subject, sha256_bytes  # noqa: F401 (re-export)
from workbench.subjects.upscale import UpscaleParams

MIN_SCORE = 0.6  # detector confidence for a face to count at all
SECOND_FACE_SCORE_GAP = 0.15  # a second face this close in score to the subject's ...
SECOND_FACE_AREA = 0.6  # ... and at least this large (area ratio) is a second person
DUPLICATE_DISTANCE = 0.12  # crop distance below which two photos are the same photo (LFW: re-encodes
#                            <= 0.06, different photos of one person >= 0.21)
SPLITS = ("train", "holdout")


def min_face_px(resolution: int) -> int:
    """Smallest face-box width (source pixels) worth cropping at ``resolution``."""
    return max(24, resolution // 2)


@dataclass
class Accepted:
    source: str  # the file's base name, for the user's eyes only
    sha256: str
    split: str
    crop: str  # relative to the subject folder
    new: bool = True  # False when this exact photo was already taken in
    upscale: float | None = None  # crop px per source px when accepted under the upscaling policy, else None


@dataclass
class Rejected:
    source: str
    reason: str


@dataclass
class IntakeReport:
    subject_id: str
    resolution: int
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    train: int = 0  # totals for the subject after this intake
    holdout: int = 0
    seconds: float = 0.0
    upscale: dict | None = None  # the upscaling policy in force (UpscaleParams), None: no upscaling

    def upscaled(self) -> list[float]:
        """The enlargement factors of the accepted photos that were upscaled."""
        return [a.upscale for a in self.accepted if a.upscale]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def _signature(crop: Image.Image) -> np.ndarray:
    """A small blurred grey copy of an aligned crop, for near-duplicate checks."""
    grey = np.asarray(crop.convert("L"), dtype=np.float32)
    interp = cv2.INTER_AREA if grey.shape[0] >= 48 else cv2.INTER_CUBIC
    grey = cv2.GaussianBlur(cv2.resize(grey, (48, 48), interpolation=interp), (0, 0), 1.0)
    return (grey - grey.mean()) / (grey.std() + 1e-6)


def _stored_signature(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path} is missing: the subject folder was modified; erase the subject, retake it")
    with Image.open(path) as crop:
        return _signature(crop)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two signatures after registering ``b`` onto ``a`` (ECC, affine).

    Registration absorbs the few pixels of landmark jitter a re-encode or resize causes, so that
    copies of one photo come out near 0 while different photos stay far apart.
    """
    warp = np.eye(2, 3, dtype=np.float32)
    try:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE, criteria, None, 1)
    except cv2.error:
        warp = np.eye(2, 3, dtype=np.float32)  # no convergence: compare unregistered
    b = cv2.warpAffine(b, warp, (a.shape[1], a.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
    x, y = a[6:-6, 6:-6], b[6:-6, 6:-6]
    x, y = (x - x.mean()) / (x.std() + 1e-6), (y - y.mean()) / (y.std() + 1e-6)
    return float(np.abs(x - y).mean())


def examine(data: bytes, resolution: int, detector: str = "yunet",
            upscale: UpscaleParams | None = None) -> tuple[Image.Image, Face, Image.Image, float | None]:
    """Decode, normalise and check one photo: ``(photo, face, crop, upscale)`` or :class:`PhotoRejected`;
    ``upscale`` is the crop's enlargement when the face was too small and ``upscale`` allowed it, else None."""
    img = load_photo(data)
    faces = detect_faces(np.asarray(img), detector, MIN_SCORE)
    if not faces:
        raise PhotoRejected("no face found: use a photo where the face is clearly visible, "
                            "roughly facing the camera, well lit and not covered")
    face = main_face(faces)
    others = [f for f in faces if f is not face and f.score >= face.score - SECOND_FACE_SCORE_GAP
              and f.area >= SECOND_FACE_AREA * face.area]
    if others:
        raise PhotoRejected(f"more than one person ({len(others) + 1} faces of similar size): crop the "
                            "photo to the subject alone, or use a photo where they are alone")
    need = min_face_px(resolution)
    factor = None
    if face.box[2] < need:
        small = (f"the face is too small ({face.box[2]:.0f} px wide, at least {need} px needed "
                 f"for resolution {resolution}")
        if upscale is None:
            raise PhotoRejected(f"{small}): use a closer or higher-resolution photo, a lower resolution, or allow "
                                "upscaling (spec subject.upscale: {max_factor: 4.0}; intake --max-upscale 4)")
        factor = crop_zoom(face, resolution)
        if factor > upscale.max_factor:
            raise PhotoRejected(f"{small}, and the crop would enlarge the photo {factor:.1f}x, more than "
                                f"upscale.max_factor {upscale.max_factor:g}): use a closer or higher-resolution photo")
        factor = round(factor, 3)
    return img, face, align_crop(img, face, resolution), factor


def _expand(sources: list[Path]) -> list[Path]:
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            files += sorted(p for p in src.rglob("*") if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(src).parts))
        else:
            files.append(src)  # missing files become rejections, in order
    return files


def _read(path: Path) -> bytes:
    path = sealed.working(path)  # a photo in an encrypted subject's store (the app's uploads): its working copy
    try:
        if not path.is_file():
            raise PhotoRejected("no such file (check the path)")
        if path.stat().st_size > MAX_BYTES:
            raise PhotoRejected(f"the file is larger than {MAX_BYTES // 2**20} MB: export a smaller JPEG")
        return path.read_bytes()
    except OSError as exc:
        raise PhotoRejected(f"the file could not be read ({exc.strerror or exc}): check its permissions") \
            from None


def _check_args(resolution: int, holdout_fraction: float, splits: dict | None, detector: str,
                upscale: UpscaleParams | None) -> None:
    if not isinstance(resolution, int) or not 16 <= resolution <= 1024:
        raise UserError(f"resolution: {resolution!r} is not allowed; use an integer from 16 to 1024")
    if not 0.0 <= holdout_fraction < 1.0:
        raise UserError(f"holdout_fraction: {holdout_fraction!r} must be at least 0 and below 1")
    if detector not in DETECTORS:
        known = ", ".join(sorted(DETECTORS))
        raise UserError(f"detector: unknown face detector {detector!r}; choose one of {known}")
    if upscale is not None and not isinstance(upscale, UpscaleParams):
        raise UserError(f"upscale: expected UpscaleParams (e.g. {{max_factor: 4.0}}), got {upscale!r}")
    for key, value in (splits or {}).items():
        if value not in SPLITS:
            raise UserError(f"splits[{key!r}]: {value!r} is not 'train' or 'holdout'")


def _assign_splits(subject_id: str, entries: dict[str, dict], fraction: float) -> None:
    """Given splits stay; the rest: holdout = the k photos whose sha256(id + hash) sorts lowest."""
    rest = [d for d, e in entries.items() if e.get("split_from") != "given"]
    k = 0
    if len(rest) >= 2 and fraction > 0:
        k = min(len(rest) - 1, max(1, round(fraction * len(rest))))
    order = sorted(rest, key=lambda d: hashlib.sha256((subject_id + d).encode()).hexdigest())
    for i, digest in enumerate(order):
        entries[digest]["split"] = "holdout" if i < k else "train"


def _check_upscaled(subject_id: str, entries: dict[str, dict], upscale: UpscaleParams | None) -> None:
    """Photos taken in earlier under a looser upscaling policy than ``upscale`` are an error, not kept silently."""
    worst = max((e.get("upscale") or 0.0 for e in entries.values()), default=0.0)
    if worst and (upscale is None or worst > upscale.max_factor):
        now = "no upscaling" if upscale is None else f"upscale.max_factor {upscale.max_factor:g}"
        raise UserError(f"upscale: subject {subject_id!r} holds photos enlarged up to {worst:.1f}x, but {now} is "
                        "asked for now: allow that factor again, or use a new subject id (or erase this one)")


def intake(sources: list[Path], subject_id: str, resolution: int = 64, holdout_fraction: float = 0.25,
           splits: dict[str, str] | None = None, detector: str = "yunet",
           upscale: UpscaleParams | None = None) -> IntakeReport:
    """Take photos into ``subject_id``'s folder; returns what was accepted and what was rejected, why.

    ``upscale`` (:class:`UpscaleParams`) accepts faces smaller than :func:`min_face_px` with an enlarged crop."""
    start = time.perf_counter()
    _check_args(resolution, holdout_fraction, splits, detector, upscale)
    store = SubjectStore(subject_id)
    record = store.read_record() or {}
    if record and int(record["resolution"]) != resolution:
        raise UserError(f"resolution: subject {subject_id!r} was taken in at {record['resolution']}; "
                        f"use --resolution {record['resolution']}, or a new subject id")
    entries: dict[str, dict] = {e["sha256"]: e for e in record.get("accepted", [])}
    _check_upscaled(subject_id, entries, upscale)
    previous = set(entries)
    sigs = {d: _stored_signature(store.root / e["crop"]) for d, e in entries.items()}
    policy = upscale.model_dump(mode="json") if upscale is not None else None
    report = IntakeReport(subject_id, resolution, upscale=policy)
    seen: dict[str, str] = {}  # hash -> source name, for photos of this run
    for path in _expand(sources):
        name = path.name
        try:
            img, face, crop, factor = examine(_read(path), resolution, detector, upscale)
            png = encode_png(img)
            digest = sha256_bytes(png)
            if digest in seen:
                raise PhotoRejected(f"the same photo as {seen[digest]}: drop one of the copies")
            given = _given_split(splits, path)
            if digest not in entries:
                sig = _signature(crop)
                for other, other_sig in sigs.items():
                    if _distance(other_sig, sig) < DUPLICATE_DISTANCE:
                        was = seen.get(other) or f"a photo taken in earlier (sha256 {other[:12]})"
                        raise PhotoRejected(f"a near-duplicate of {was}: use a different photo, "
                                            "copies add nothing to training and leak into the holdout")
                store.put_photo(png)
                crop_rel = store.put_crop(digest, encode_png(crop))
                entries[digest] = {"sha256": digest, "crop": crop_rel, "split": "train", "split_from": "hash",
                                   "face": _face_record(face)}
                if factor:
                    entries[digest]["upscale"] = factor
                sigs[digest] = sig
            if given:
                entries[digest].update(split=given, split_from="given")
            seen[digest] = name
            crop_rel = entries[digest]["crop"]
            report.accepted.append(Accepted(name, digest, "", crop_rel, new=digest not in previous,
                                            upscale=entries[digest].get("upscale")))
        except PhotoRejected as exc:
            report.rejected.append(Rejected(name, exc.reason))
        except UserError:
            raise  # a setup problem (e.g. a missing detector model), not this photo's fault
        except Exception as exc:  # noqa: BLE001 - one bad photo must never stop the others
            report.rejected.append(Rejected(name, f"the photo could not be processed ({type(exc).__name__}): "
                                                  "re-export it as JPEG or PNG, or use another photo"))
    _assign_splits(subject_id, entries, holdout_fraction)
    for acc in report.accepted:
        acc.split = entries[acc.sha256]["split"]
    store.write_record({
        "id": subject_id, "resolution": resolution, "detector": detector,
        **({"upscale": policy} if policy else {}),
        "accepted": list(entries.values()),
        "rejected": [asdict(r) for r in report.rejected],
    })
    report.train = sum(e["split"] == "train" for e in entries.values())
    report.holdout = len(entries) - report.train
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def _face_record(face: Face) -> dict:
    return {"box": [round(v, 2) for v in face.box], "score": round(face.score, 4),
            "landmarks": np.round(face.landmarks, 2).tolist()}


def _given_split(splits: dict[str, str] | None, path: Path) -> str | None:
    if not splits:
        return None
    for key in (str(path), path.name, str(path.resolve())):
        if key in splits:
            return splits[key]
    return None


def intake_meta(subject_id: str, digests: list[str] | None = None) -> dict:
    """How a subject's photos were taken in, for ``results.json`` ``meta.intake``: the resolution, the upscaling
    policy, and how many of the photos (``digests``, e.g. a run's members and non-members; default all
    accepted) were upscaled and by how much (crop px per source px)."""
    record = SubjectStore(subject_id).read_record() or {}
    entries = {e["sha256"]: e for e in record.get("accepted", [])}
    used = [entries[d] for d in (digests if digests is not None else list(entries)) if d in entries]
    factors = sorted(e["upscale"] for e in used if e.get("upscale"))
    return {"resolution": record.get("resolution"), "detector": record.get("detector"),
            "upscale": record.get("upscale"), "photos": len(used), "upscaled": len(factors),
            "upscale_min": factors[0] if factors else None, "upscale_max": factors[-1] if factors else None}


def upscale_note(meta: dict[str, dict]) -> str | None:
    """A report note when any person's photos were upscaled (``meta`` = subject id -> :func:`intake_meta`)."""
    used = {sid: m for sid, m in meta.items() if m.get("upscaled")}
    if not used:
        return None
    n, total = sum(m["upscaled"] for m in used.values()), sum(m["photos"] for m in meta.values())
    lo, hi = min(m["upscale_min"] for m in used.values()), max(m["upscale_max"] for m in used.values())
    res = sorted({m["resolution"] for m in used.values()})
    caps = sorted({(m.get("upscale") or {}).get("max_factor") for m in used.values()} - {None})
    return (f"{n} of {total} photos had faces smaller than the {'/'.join(map(str, res))} px crops need and were "
            f"upscaled (bicubic, {lo:.1f}-{hi:.1f}x, subject.upscale.max_factor {'/'.join(f'{c:g}' for c in caps)}): "
            "the model trained and was measured on interpolated detail, softer than native photos at this size")
