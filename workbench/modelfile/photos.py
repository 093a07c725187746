"""Photos inside a model file: decoded safely, faces found, and matched against the person's selfies.

Each embedded image is decoded by the intake's decoder (:func:`workbench.subjects.decode.load_photo`:
JPEG/PNG/WEBP by content, bomb and truncation checks) and its faces detected the way the identity encoders
see them (:func:`workbench.metrics.encoders.upscale`, YuNet, score >= 0.6). With selfies, two independent
tests decide what the photo is:

- **identity**: cosine similarity of the encoder's embeddings (:func:`workbench.metrics.encoders.embed`)
  to the nearest selfie, at or above the encoder's calibrated "same person" threshold (FAR ~1e-3 on LFW);
- **copy**: registered pixel ℓ2 (:func:`workbench.metrics.memorization.registered_l2_matrix`, RGB in [0, 1])
  between the photo's aligned face crop and each selfie's, both aligned onto the intake's template
  (:func:`workbench.subjects.faces.align_crop`) at the photo's own face resolution, within the extraction
  δ (:data:`workbench.metrics.memorization.DELTA_REGISTERED_L2`): re-encodes, rescales and the intake's
  aligned crops of one photo stay below it; other photos of the same person stay above.

"Your training photos are inside this file" needs both: the same person *and* a copy of one of their
photos (a training crop, the original, or a re-encode). Identity alone is a photo of the person that is not
among the selfies given; a face matching neither is someone else's photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.errors import UserError
from workbench.subjects.faces import TEMPLATE, Face

MIN_CROP, MAX_CROP = 32, 256  # aligned crops are compared at the photo's face resolution, within these


@dataclass
class Selfie:
    name: str  # the file's base name, for the user's eyes only
    rgb: np.ndarray
    face: Face | None  # in the upscaled image's pixels
    big: np.ndarray  # the image the encoders and the detector see (shorter side >= 256)
    embedding: np.ndarray | None


@dataclass
class Selfies:
    encoder: str
    threshold: float
    delta: float
    photos: list[Selfie]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)


@dataclass
class PhotoResult:
    width: int
    height: int
    faces: int
    identity: float | None = None  # best cosine similarity to a selfie
    identity_selfie: str | None = None
    same_person: bool = False
    registered_l2: float | None = None  # to the nearest selfie, in pixels of the aligned crops
    copy_of: str | None = None  # the selfie it copies (registered ℓ2 <= δ), if any
    compared_at: int | None = None  # side of the aligned crops compared

    @property
    def training_photo(self) -> bool:
        return self.same_person and self.copy_of is not None


def _face(rgb: np.ndarray) -> tuple[np.ndarray, Face | None, int]:
    from workbench.metrics.encoders import DETECT_MIN_SCORE, upscale
    from workbench.subjects.faces import detect_faces, main_face

    big = upscale(rgb)
    faces = detect_faces(big, "yunet", DETECT_MIN_SCORE)
    return big, main_face(faces), len(faces)


def load_selfies(folder: str | Path, encoder: str = "sface") -> Selfies:
    """The person's photos in ``folder`` (decoded safely; those without a face are listed as rejected)."""
    from workbench.metrics.encoders import embed, get_encoder
    from workbench.metrics.memorization import DELTA_REGISTERED_L2
    from workbench.subjects.decode import MAX_BYTES, PhotoRejected, load_photo

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--selfies {folder}: not a folder; pass a folder of the person's photos")
    info = get_encoder(encoder).info
    if info.threshold is None:
        raise UserError(f"encoder {encoder} has no calibrated threshold ({info.calibration}); use --encoder sface")
    out = Selfies(encoder, info.threshold, DELTA_REGISTERED_L2, [])
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            if path.stat().st_size > MAX_BYTES:
                raise PhotoRejected("larger than the intake's limit")
            rgb = np.asarray(load_photo(path.read_bytes()))
        except PhotoRejected as exc:
            out.rejected.append((path.name, exc.reason))
            continue
        big, face, _ = _face(rgb)
        if face is None:
            out.rejected.append((path.name, "no face found"))
            continue
        emb, ok = embed([rgb], encoder, progress=False)
        out.photos.append(Selfie(path.name, rgb, face, big, emb[0] if ok[0] else None))
    if not out.photos:
        raise UserError(f"--selfies {folder}: no photo with a face was found there "
                        f"({len(out.rejected)} rejected); pass a folder of the person's JPEG/PNG photos")
    return out


def crop_side(face: Face, upscaled_by: float) -> int:
    """The aligned-crop side at which ``face`` (found in an image upscaled by ``upscaled_by``) is 1:1."""
    eyes = float(np.hypot(*(face.landmarks[1] - face.landmarks[0]))) / upscaled_by
    side = eyes / float(TEMPLATE[1, 0] - TEMPLATE[0, 0])
    return int(min(MAX_CROP, max(MIN_CROP, round(side))))


def analyse_photo(rgb: np.ndarray, selfies: Selfies | None) -> PhotoResult:
    """Faces in ``rgb`` and, with ``selfies``, its identity and copy tests (module docstring)."""
    from workbench.metrics.encoders import embed
    from workbench.metrics.memorization import as_float, registered_l2_matrix
    from workbench.subjects.faces import align_crop

    big, face, n = _face(rgb)
    result = PhotoResult(int(rgb.shape[1]), int(rgb.shape[0]), n)
    if face is None or selfies is None:
        return result
    emb, ok = embed([rgb], selfies.encoder, progress=False)
    known = [s for s in selfies.photos if s.embedding is not None]
    if ok[0] and known:
        sims = np.array([float(s.embedding @ emb[0]) for s in known])
        best = int(sims.argmax())
        result.identity, result.identity_selfie = round(float(sims[best]), 4), known[best].name
        result.same_person = bool(sims[best] >= selfies.threshold)
    side = crop_side(face, big.shape[0] / rgb.shape[0])
    mine = np.asarray(align_crop(Image.fromarray(big), face, side))
    theirs = [np.asarray(align_crop(Image.fromarray(s.big), s.face, side)) for s in selfies.photos]
    dist = registered_l2_matrix(as_float([mine], side), as_float(theirs, side))[0]
    nearest = int(dist.argmin())
    result.registered_l2, result.compared_at = round(float(dist[nearest]), 4), side
    if dist[nearest] <= selfies.delta:
        result.copy_of = selfies.photos[nearest].name
    return result
