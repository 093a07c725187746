"""Memorisation and extraction: how close generated images come to the subject's training photos.

All distances are in pixel space between images of one common size: the generation size ``S``. The
subject's photos enter as aligned ``S x S`` crops (:func:`workbench.subjects.faces.align_crop`, the same
framing the model was trained on), so a model that reproduces a training crop reproduces it pixel for
pixel; images of another size are resized to ``S`` (area averaging down, bicubic up) before comparing.
Pixels are RGB scaled to [0, 1].

Definitions (Carlini et al., "Extracting Training Data from Diffusion Models", USENIX Security 2023):

- **Pixel ℓ2** (the paper's ℓ2 for (ℓ2, δ)-extraction): ``ℓ2(a, b) = sqrt(Σ_i (a_i - b_i)² / d)``,
  ``d`` = number of values (S·S·3). 0 = identical; lower = closer to a copy.
- **Tiled ℓ2** (the paper's Stable Diffusion experiments): split both images into a 4x4 grid of
  non-overlapping tiles (16 tiles of 128² at 512²), take the *maximum* tile ℓ2: a copy must match
  everywhere, not only on average.
- **Relative distance** (the paper's CIFAR-10 experiments): ``ℓ(x̂, x; S_x̂) = ℓ2(x̂, x) / (α · mean_{y ∈ S_x̂} ℓ2(x̂, y))``
  where ``x`` is the nearest training image to the generation ``x̂`` and ``S_x̂`` the set of the ``n``
  nearest training images (``x`` included), ``α = 0.5``. The paper uses ``n = 50`` of 50,000 images; a
  subject has ~15 training photos, so here ``n = min(N_NEAREST, #train) = 5`` by default. The ratio is
  at most ``1/α = 2`` (the nearest is never farther than the mean); near 0 means the generation is far
  closer to one training photo than to the others (a copy), near 2 means no photo stands out. It is
  robust to "all faces look alike" at low resolution, where absolute ℓ2 is small for everything.
- **Memorisation gap** (METRICS.md): per generation, similarity to the nearest *train* photo minus
  similarity to the nearest *holdout* photo, with similarity = ``-ℓ2`` (pixel ℓ2), i.e.
  ``gap = min_h ℓ2(x̂, h) - min_t ℓ2(x̂, t)``, averaged over generations. ~0 for a model that learned the
  person but not the photos; large and positive for a model that copies (lower is better for
  privacy). With more train photos than holdout photos the nearest train photo is a minimum over more
  candidates, so the gap is biased slightly positive even for novel images; ``gap_size_matched`` removes
  that bias by replacing ``min_t`` with its expectation over a random subset of the train photos of the
  holdout set's size (exact, see :func:`expected_min_of_subset`).
- **Registered ℓ2** (for extraction): pixel ℓ2 after registering the generation onto the training
  crop with the affine warp that maximises their enhanced correlation coefficient (ECC; Evangelidis &
  Psarakis, IEEE TPAMI 2008), estimated on grey copies at <= :data:`REGISTER_SIDE` px and applied at
  ``S``, measured over the central region (a margin of :data:`REGISTER_MARGIN` of the side is left out,
  where the warp brings in replicated border pixels). Warps that scale by more than 25% or shift by
  more than 20% of the side are refused (identity instead). Why: a copy a few pixels out of register
  (the training crop rescaled by 5-10% and re-cropped) has a *raw* ℓ2 of 0.09-0.24 at 64 px, as far as
  a different photo of the same person (0.08-0.30), so raw ℓ2 cannot tell them apart; after
  registration copies stay <= 0.05 and different photos >= 0.08 (``experiments/calibrate_delta.py``).
- **Orientation**: training sees every photo and its horizontal mirror, so every distance to a train or
  holdout photo is the smaller of the distances to the photo and to its mirror image
  (:func:`either_orientation`): a mirrored copy is a copy.
- **Extraction rate** ((ℓ2, δ)-diffusion extraction, Carlini et al. Definition 1, counted over a
  subject's photos): share of *training photos* with at least one generation within ``δ`` in
  registered ℓ2 (:data:`DELTA_REGISTERED_L2`). The resampled unit is the training photo (the set of
  generations is fixed). ``extraction_rate_unregistered`` applies the same δ to raw pixel ℓ2, Carlini's
  literal criterion: a lower bound that misses copies out of register.
- **Copy similarity** (Somepalli et al., "Diffusion Art or Digital Forgery?", CVPR 2023, SSCD
  descriptors): *not available offline* (no SSCD model can be downloaded here); reported as such and not
  replaced by another descriptor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from workbench.metrics.registry import MetricDef, declare
from workbench.metrics.stats import Metric, bootstrap, bootstrap_mean, empty, share_note

#: δ of (ℓ2, δ)-extraction, in registered pixel ℓ2 (RGB in [0, 1]). Calibrated on 2026-11-26 by
#:   nice -n 15 .venv/bin/python experiments/calibrate_delta.py --people 30 --photos 10 --sizes 64 128 256 512
#: on 300 LFW photos of 30 people (../shared/data/lfw/people, the demo people left out), aligned crops:
#:   copies (JPEG q75; rescaled by 0.90/0.95/1.05/1.10 and re-cropped, then JPEG q75), 1,500 per size:
#:     max 0.047 at 64 px (median 0.022), 0.028 at 128, 0.013 at 256, 0.009 at 512;
#:   nearest *other* photo of the same person, 300 per size: min 0.081 at 64 px (1st percentile 0.096,
#:     median 0.178), 0.085 at 128, 0.086 at 256 and 512.
#: δ = geometric mean of 0.047 and 0.081 = 0.062: a factor 1.3 of margin on each side at 64 px, the
#: tightest size (at 256 px the copies stay 4.7x below it). Raw pixel ℓ2 overlaps: copies up to 0.25,
#: other photos from 0.079.
DELTA_REGISTERED_L2 = 0.062
DELTA_PROVENANCE = ("experiments/calibrate_delta.py (2026-11-26): 300 LFW photos, 30 people; copies (JPEG q75, "
                    "+-5-10% rescale re-cropped) <= 0.047, nearest different photo of the same person >= 0.081 "
                    "(registered pixel l2, 64-512 px); delta = their geometric mean")
REGISTER_SIDE = 128  # registration is estimated on grey copies at most this large
REGISTER_MARGIN = 0.125  # share of the side left out on each edge when comparing registered images
MAX_REGISTER_SCALE = 1.25  # refuse warps that scale by more than this (or less than its inverse)
MAX_REGISTER_SHIFT = 0.2  # ... or shift by more than this share of the side

ALPHA = 0.5  # Carlini et al.'s α in the relative distance
N_NEAREST = 5  # n of the relative distance (the paper's 50 is more than a subject's photos)
TILE_GRID = 4  # 4x4 tiles, as Carlini et al. (16 tiles of 128² at 512²)

COPY_SIMILARITY_UNAVAILABLE = {
    "available": False,
    "reason": "copy similarity needs an image copy-detection model (SSCD, Pizzi et al. CVPR 2022, as used by "
              "Somepalli et al. CVPR 2023); none is available offline on this machine, and no other "
              "descriptor is substituted. Pixel and tiled l2 are reported instead.",
}

CARLINI = "Carlini et al., Extracting Training Data from Diffusion Models, USENIX Security 2023"
_GEN = "generations (subject's photos fixed)"
_TRAIN = "train photos (generations fixed)"
declare(
    MetricDef("memorization.extraction_rate", "Extraction rate", "lower_is_better", "memorization",
              CARLINI + ", Definition 1", "share of train photos with a generation within delta (registered l2)",
              _TRAIN),
    MetricDef("memorization.gap", "Memorisation gap", "lower_is_better", "memorization", "METRICS.md",
              "nearest holdout l2 - nearest train l2", _GEN),
    MetricDef("memorization.min_l2", "Min ℓ2 to train", "higher_is_better", "memorization", CARLINI,
              "sqrt(sum (a-b)^2 / d) to the nearest train photo", _GEN),
    MetricDef("memorization.extraction_rate_unregistered", "Extraction rate (raw ℓ2)", "lower_is_better",
              "memorization", CARLINI, "same with raw pixel l2", _TRAIN, required=False, main=False),
    MetricDef("memorization.gap_size_matched", "Memorisation gap (size-matched)", "lower_is_better",
              "memorization", "METRICS.md", "gap with size-matched train set", _GEN, required=False, main=False),
    MetricDef("memorization.relative_distance", "Relative distance", "higher_is_better", "memorization",
              CARLINI + ", CIFAR-10 section", "l2(x, x_nn) / (alpha * mean l2 to n nearest), alpha=0.5", _GEN,
              required=False, main=False),
    MetricDef("memorization.nearest_train_registered_l2", "Registered ℓ2 to train", "higher_is_better",
              "memorization", CARLINI, "pixel l2 after ECC registration", _GEN, required=False, main=False),
    MetricDef("memorization.nearest_train_tiled_l2", "Tiled ℓ2 to train", "higher_is_better", "memorization",
              CARLINI, "max over 4x4 tiles of l2", _GEN, required=False, main=False),
    MetricDef("memorization.nearest_holdout_l2", "Min ℓ2 to holdout", "higher_is_better", "memorization",
              CARLINI, "sqrt(sum (a-b)^2 / d) to the nearest holdout photo (the control)", _GEN,
              required=False, main=False),
    MetricDef("memorization.diversity", "Diversity", "higher_is_better", "memorization", CARLINI,
              "mean pairwise l2 between generations", "pairs of generations", required=False, main=False),
)
#: The metrics :func:`memorization_metrics` returns, by their name within the group.
MEASURES = ("extraction_rate", "extraction_rate_unregistered", "gap", "gap_size_matched", "min_l2",
            "nearest_train_tiled_l2", "nearest_train_registered_l2", "nearest_holdout_l2", "relative_distance",
            "diversity")


def as_float(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """RGB uint8 images -> ``(N, size, size, 3)`` float32 in [0, 1], resized alike when needed."""
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"image {i}: expected RGB uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
        if arr.shape[:2] != (size, size):
            interp = cv2.INTER_AREA if min(arr.shape[:2]) > size else cv2.INTER_CUBIC
            arr = cv2.resize(arr, (size, size), interpolation=interp)
        out[i] = arr.astype(np.float32) / 255.0
    return out


def l2_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``D[i, j] = sqrt(mean((a_i - b_j)²))`` for float image stacks of equal shape (Carlini et al.)."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"images must have one common shape, got {a.shape[1:]} and {b.shape[1:]}")
    x = a.reshape(len(a), -1).astype(np.float64)
    y = b.reshape(len(b), -1).astype(np.float64)
    d = x.shape[1]
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.clip(sq, 0.0, None) / d)


def tiled_l2_matrix(a: np.ndarray, b: np.ndarray, grid: int = TILE_GRID) -> np.ndarray:
    """Maximum over a ``grid x grid`` split of the per-tile ℓ2 (Carlini et al.'s tiled ℓ2)."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"images must have one common shape, got {a.shape[1:]} and {b.shape[1:]}")
    h, w = a.shape[1:3]
    rows = np.linspace(0, h, grid + 1).round().astype(int)
    cols = np.linspace(0, w, grid + 1).round().astype(int)
    out = np.zeros((len(a), len(b)))
    for r0, r1 in zip(rows[:-1], rows[1:], strict=True):
        for c0, c1 in zip(cols[:-1], cols[1:], strict=True):
            out = np.maximum(out, l2_matrix(a[:, r0:r1, c0:c1], b[:, r0:r1, c0:c1]))
    return out


def _grey(images: np.ndarray, side: int) -> list[np.ndarray]:
    out = []
    for img in images:
        g = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2GRAY)
        if g.shape[0] != side:
            g = cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA)
        out.append(g)
    return out


def register(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """The 2x3 affine warp (ECC) taking ``fixed``'s pixel grid into ``moving`` (grey float32, same size).

    Apply it with ``cv2.warpAffine(moving, warp, size, flags=... | cv2.WARP_INVERSE_MAP)``. Identity when
    ECC does not converge or the warp is implausible (see the module docstring).
    """
    identity = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    try:
        _, warp = cv2.findTransformECC(fixed, moving, identity.copy(), cv2.MOTION_AFFINE, criteria, None, 5)
    except cv2.error:
        return identity
    if not np.isfinite(warp).all():
        return identity
    scales = np.linalg.svd(warp[:, :2], compute_uv=False)
    if scales.max() > MAX_REGISTER_SCALE or scales.min() < 1 / MAX_REGISTER_SCALE:
        return identity
    if np.abs(warp[:, 2]).max() > MAX_REGISTER_SHIFT * fixed.shape[0]:
        return identity
    return warp


def registered_l2_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``D[i, j]``: pixel ℓ2 between ``a_i`` registered onto ``b_j`` and ``b_j``, central region only."""
    return registered_matrices(a, b)[0]


def registered_matrices(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(registered ℓ2, registered pixel correlation) from the same warp of ``a_i`` onto ``b_j``.

    The correlation is the cosine of the mean-centred RGB pixel vectors of the central region (1 = the
    same image up to brightness and contrast)."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"images must have one common shape, got {a.shape[1:]} and {b.shape[1:]}")
    size = a.shape[1]
    side = min(size, REGISTER_SIDE)
    ga, gb = _grey(a, side), _grey(b, side)
    m = int(round(size * REGISTER_MARGIN))
    inner = (slice(m, size - m), slice(m, size - m))
    l2, corr = np.empty((len(a), len(b))), np.empty((len(a), len(b)))
    for j in range(len(b)):
        ref = b[j][inner].astype(np.float64)
        centred = (ref - ref.mean()).ravel()
        for i in range(len(a)):
            warp = register(ga[i], gb[j])
            warp[:, 2] *= size / side  # the same warp in full-size pixels
            moved = cv2.warpAffine(np.ascontiguousarray(a[i]), warp, (size, size),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
            moved = moved[inner].astype(np.float64)
            l2[i, j] = np.sqrt(np.mean((moved - ref) ** 2))
            v = (moved - moved.mean()).ravel()
            norm = np.linalg.norm(v) * np.linalg.norm(centred)
            corr[i, j] = v @ centred / norm if norm > 0 else 0.0
    return l2, corr


def mirrored(images: np.ndarray) -> np.ndarray:
    """Each image of an ``(N, S, S, 3)`` stack flipped left to right."""
    return np.ascontiguousarray(images[:, :, ::-1])


def either_orientation(distance, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``distance(a, b)`` with each ``b_j`` taken as it is or as its mirror image, whichever is nearer. The
    recipes train on every photo and its mirror (:func:`workbench.diffusion.encode_images`), so a mirrored
    copy is a copy; holdout photos are compared the same way, so the control is treated alike."""
    return np.minimum(distance(a, b), distance(a, mirrored(b)))


def relative_distance(d_train: np.ndarray, n: int = N_NEAREST, alpha: float = ALPHA) -> np.ndarray:
    """Per generation: ``ℓ2 to nearest / (α · mean ℓ2 to its n nearest)`` (Carlini et al., CIFAR-10)."""
    if d_train.shape[1] == 0:
        return np.full(len(d_train), np.nan)
    k = max(1, min(n, d_train.shape[1]))
    nearest = np.sort(d_train, axis=1)[:, :k]
    denom = alpha * nearest.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, nearest[:, 0] / denom, 0.0)


def expected_min_of_subset(distances: np.ndarray, k: int) -> float:
    """E[min of a uniformly random k-subset of ``distances``] (exact).

    Sorted ascending ``d_(1) <= ... <= d_(T)``: ``P(min = d_(i)) = C(T-i, k-1) / C(T, k)``.
    """
    d = np.sort(np.asarray(distances, dtype=np.float64))
    t = len(d)
    if t == 0:
        return float("nan")
    k = max(1, min(k, t))
    total = math.comb(t, k)
    weights = np.array([math.comb(t - i, k - 1) for i in range(1, t + 1)], dtype=np.float64) / total
    return float(weights @ d)


def _pairwise_mean(dist: np.ndarray):
    """Statistic for :func:`bootstrap`: mean distance over pairs of distinct resampled items."""

    def stat(idx: np.ndarray) -> float:
        sub = dist[np.ix_(idx, idx)]
        off = idx[:, None] != idx[None, :]
        return float(sub[off].mean()) if off.any() else 0.0

    return stat


def memorization_metrics(generated: Sequence[np.ndarray], train: Sequence[np.ndarray],
                         holdout: Sequence[np.ndarray], size: int | None = None,
                         delta: float = DELTA_REGISTERED_L2, n_nearest: int = N_NEAREST,
                         n_resamples: int = 2000, seed: int = 0) -> dict:
    """Every image-level memorisation metric (module docstring) of ``generated`` vs the subject's photos.

    ``size`` defaults to the first generated image's side. Returns metrics as dicts
    (:meth:`Metric.to_dict`) plus ``per_image`` arrays and ``extracted`` (which train photo was
    extracted by which generation).
    """
    if not len(generated):
        raise ValueError("no generated images")
    size = size or int(np.asarray(generated[0]).shape[0])
    gen = as_float(generated, size)
    tr = as_float(train, size)
    ho = as_float(holdout, size)
    kw = {"n_resamples": n_resamples, "seed": seed}
    g, t, h = len(gen), len(tr), len(ho)
    nan = np.full(g, np.nan)

    d_train = either_orientation(l2_matrix, gen, tr) if t else np.zeros((g, 0))
    d_train_tiled = either_orientation(tiled_l2_matrix, gen, tr) if t else np.zeros((g, 0))
    d_train_reg = either_orientation(registered_l2_matrix, gen, tr) if t else np.zeros((g, 0))
    d_hold = either_orientation(l2_matrix, gen, ho) if h else np.zeros((g, 0))
    near_t = d_train.min(axis=1) if t else nan
    near_h = d_hold.min(axis=1) if h else nan
    gap = near_h - near_t
    matched = np.array([expected_min_of_subset(row, h) for row in d_train]) if t and h else nan
    rel = relative_distance(d_train, n_nearest)

    out: dict[str, Metric] = {}
    if t:
        within = d_train_reg <= delta  # (G, T): generation i is within δ of train photo j
        note = share_note(t, "train photos") + "; resampled unit: train photos (generations fixed)"
        out["extraction_rate"] = bootstrap_mean(within.any(axis=0).astype(float), note=note, **kw)
        out["extraction_rate_unregistered"] = bootstrap_mean(
            (d_train <= delta).any(axis=0).astype(float), note=note + "; raw pixel l2 (lower bound)", **kw)
        out["min_l2"] = bootstrap_mean(near_t, **kw)
        out["nearest_train_tiled_l2"] = bootstrap_mean(d_train_tiled.min(axis=1), **kw)
        out["nearest_train_registered_l2"] = bootstrap_mean(d_train_reg.min(axis=1), **kw)
        out["relative_distance"] = bootstrap_mean(
            rel, note=f"alpha={ALPHA}, n={max(1, min(n_nearest, t))} nearest train photos", **kw)
    else:
        within = np.zeros((g, 0), dtype=bool)
        for key in ("extraction_rate", "extraction_rate_unregistered", "min_l2",
                    "nearest_train_tiled_l2", "nearest_train_registered_l2", "relative_distance"):
            out[key] = empty("no train photos")
    if t and h:
        out["gap"] = bootstrap_mean(gap, note="similarity = -pixel l2: gap = nearest holdout l2 - nearest "
                                              f"train l2, nearest of {t} train vs {h} holdout photos", **kw)
        out["gap_size_matched"] = bootstrap_mean(
            near_h - matched, note=f"nearest train l2 = its expectation over random {h}-photo subsets of the "
                                   f"{t} train photos (as many candidates as holdout)", **kw)
    else:
        out["gap"] = out["gap_size_matched"] = empty("needs train and holdout photos")
    out["nearest_holdout_l2"] = bootstrap_mean(near_h, **kw) if h else empty("no holdout photos")
    if g >= 2:
        out["diversity"] = bootstrap(g, _pairwise_mean(l2_matrix(gen, gen)),
                                     note="mean pixel l2 between distinct generations (pair FDFR with it: "
                                          "one face repeated scores FDFR 0)", **kw)
    else:
        out["diversity"] = empty("needs at least 2 generations")

    metrics: dict = {k: v.to_dict() for k, v in out.items()}
    metrics["copy_similarity"] = dict(COPY_SIMILARITY_UNAVAILABLE)
    metrics["extracted"] = [{"train_index": int(j), "generations": [int(i) for i in np.flatnonzero(within[:, j])]}
                            for j in np.flatnonzero(within.any(axis=0))]
    metrics["size"] = size
    metrics["delta"] = {"registered_l2": delta, "provenance": DELTA_PROVENANCE}
    metrics["per_image"] = {
        "nearest_train_index": d_train.argmin(axis=1) if t else np.full(g, -1),
        "nearest_train_l2": near_t,
        "nearest_train_tiled_l2": d_train_tiled.min(axis=1) if t else nan,
        "nearest_train_registered_index": d_train_reg.argmin(axis=1) if t else np.full(g, -1),
        "nearest_train_registered_l2": d_train_reg.min(axis=1) if t else nan,
        "nearest_holdout_l2": near_h,
        "gap": gap,
        "relative_distance": rel,
    }
    return metrics
