"""``workbench audit``: every image-level metric on plain folders, no model needed.

Inputs: a folder of the subject's training photos, one of holdout photos (same person, never trained
on) and one of generated images. Generated images in sub-folders are grouped by the sub-folder's name
(``identifier/`` and ``no_identifier/`` are the prompt groups of METRICS.md; files directly in the
folder form the group ``ungrouped``). Identity's top-level numbers cover the ``identifier`` group when
there is one, else every generation; memorisation always covers every generation.

Framing. Every distance is taken between images in one framing: the face-aligned crop of
:func:`workbench.subjects.faces.align_crop` (the face at the template position, eyes level), which is
also what a model trained by the workbench sees. Pixel distances mean nothing across framings: a
whole-frame copy of a training photo (a vendor's headshot that *is* a training photo) is far, in pixels,
from that photo's aligned crop. So by default (``generated_aligned=False``) the generated images go
through exactly what the reference photos go through: decoded by the intake decoder, the subject's face
detected (YuNet, :func:`~workbench.subjects.faces.detect_faces`, the largest by area x score,
:func:`~workbench.subjects.faces.main_face`) and aligned at ``S`` ("aligned by audit"). A vendor's photos,
whatever their size or aspect, are compared like with like. ``generated_aligned=True`` (CLI
``--generated-aligned``) takes generated images "as given": square images already in the model's framing
(a workbench model's own samples), only resized to ``S``; whole-frame copies are then *not* found.

Pipeline:
1. Every file is decoded with :func:`workbench.subjects.decode.load_photo` (content-sniffed, bombs and
   truncated files refused). A file that fails is skipped with its reason in ``skipped``, never a
   traceback. ``S``, the comparison size: aligned by audit, the median shorter side of the generated
   images, clipped to [:data:`MIN_SIZE`, :data:`MAX_SIZE`]; as given, generated images must be square and
   ``S`` is their most common side.
2. Generated images aligned by audit: each is detected and aligned at ``S``. One without a face is kept:
   identity counts it in FDFR, memorisation skips it, and its per-image record says why
   (``memorization_skipped``). Every per-image record names its ``framing``.
3. Train and holdout photos are detected and aligned at ``S`` the same way, unless ``aligned=True`` says
   they already are square aligned crops (then they are only resized to ``S``). A photo without a face is
   skipped.
4. Identity (:mod:`.identity`), per encoder, on the ``S`` generated images and on the aligned ``S`` crops
   of the reference photos (like is compared with like: the same resolution, the same upscaling before
   detection, :mod:`.encoders`).
5. Memorisation (:mod:`.memorization`) on the same ``S x S`` images (generations with a face only).

The result is a JSON-ready dict: ``identity`` (the first encoder), ``identity_by_encoder`` (all),
``memorization``, ``per_image``, ``skipped`` and ``meta`` (thresholds, δ, sample sizes, directions,
citations). Every metric is ``{"value", "ci_low", "ci_high", "n"}`` (+ ``note``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from workbench.errors import UserError
from workbench.metrics import identity as identity_mod
from workbench.metrics import memorization as mem_mod
from workbench.metrics import registry
from workbench.metrics.encoders import DETECT_MIN_SCORE, UPSCALE_MIN_SIDE, embed, get_encoder
from workbench.metrics.stats import CONFIDENCE, empty
from workbench.subjects.decode import MAX_BYTES, PhotoRejected, load_photo
from workbench.subjects.faces import align_crop, detect_faces, main_face

#: The per-image ``framing`` of generated images: detected and aligned by the audit, or taken as given.
ALIGNED_BY_AUDIT = "aligned by audit"
AS_GIVEN = "as given"
#: Bounds of the comparison size when the audit aligns generated images (delta is calibrated at 64-512 px).
MIN_SIZE, MAX_SIZE = 64, 512

CITATIONS = {
    "fdfr": "Van Le et al., Anti-DreamBooth: Protecting Users from Personalized Text-to-Image Synthesis, "
            "ICCV 2023, sec. 5.1",
    "ism": "Van Le et al., ICCV 2023, sec. 5.1 (identity score matching; here against holdout photos)",
    "verification_rate": "threshold calibrated on LFW pairsDevTrain (Huang et al., UMass TR 07-49, 2007) at "
                         "the stated false-accept rate",
    "pixel_l2": "Carlini et al., Extracting Training Data from Diffusion Models, USENIX Security 2023",
    "tiled_l2": "Carlini et al., USENIX Security 2023 (max over 4x4 tiles)",
    "relative_distance": "Carlini et al., USENIX Security 2023, CIFAR-10 experiments (alpha = 0.5)",
    "extraction_rate": "Carlini et al., USENIX Security 2023, Definition 1 ((l2, delta)-diffusion extraction)",
    "copy_similarity": "Somepalli et al., Diffusion Art or Digital Forgery?, CVPR 2023 (SSCD): unavailable offline",
    "bootstrap": "Efron & Tibshirani, An Introduction to the Bootstrap, 1993 (percentile interval)",
}


@dataclass
class Item:
    folder: str  # train / holdout / generated
    name: str  # path relative to its folder
    image: np.ndarray | None  # RGB uint8, S x S once prepared; None: a generation without a face
    group: str = "ungrouped"
    framing: str = ALIGNED_BY_AUDIT
    no_face: str | None = None  # why memorisation skips it (aligned by audit, no face found)


def _files(folder: Path, label: str) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"--{label} {folder}: no such folder")
    if not folder.is_dir():
        raise UserError(f"--{label} {folder}: not a folder; give a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise UserError(f"--{label} {folder}: the folder is empty; put the {label} images in it")
    return files


def _decode(path: Path) -> Image.Image:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise PhotoRejected(f"the file is larger than {MAX_BYTES // 2**20} MB")
        data = path.read_bytes()
    except OSError as exc:
        raise PhotoRejected(f"the file could not be read ({exc.strerror or exc})") from None
    return load_photo(data)


def _square(arr: np.ndarray, size: int) -> np.ndarray:
    """A square image at ``size`` px: area averaging down, bicubic up (as memorization.as_float)."""
    if arr.shape[:2] == (size, size):
        return arr
    interp = cv2.INTER_AREA if arr.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(arr, (size, size), interpolation=interp)


def _align(img: Image.Image, size: int) -> np.ndarray:
    """The subject's face in ``img`` (the largest by area x score, as photo intake picks it), detected by
    YuNet and aligned at ``size``: the one framing every image is compared in. :class:`PhotoRejected`
    when there is no face or its landmarks are degenerate."""
    face = main_face(detect_faces(np.asarray(img), "yunet", DETECT_MIN_SCORE))
    if face is None:
        raise PhotoRejected(f"no face found (YuNet, confidence >= {DETECT_MIN_SCORE}), so it cannot be aligned")
    try:
        return np.asarray(align_crop(img, face, size))
    except ValueError as exc:  # degenerate landmarks
        raise PhotoRejected(f"the face could not be aligned ({exc})") from None


def _load_generated(folder: Path, skipped: list[dict], generated_aligned: bool) -> tuple[list[Item], int]:
    decoded: list[tuple[str, str, Image.Image]] = []
    for path in _files(folder, "generated"):
        rel = path.relative_to(folder)
        name = rel.as_posix()
        group = rel.parts[0] if len(rel.parts) > 1 else "ungrouped"
        try:
            img = _decode(path)
        except PhotoRejected as exc:
            skipped.append({"folder": "generated", "file": name, "reason": exc.reason})
            continue
        if generated_aligned and img.width != img.height:
            skipped.append({"folder": "generated", "file": name,
                            "reason": f"not square ({img.width}x{img.height}): with --generated-aligned the "
                                      "images must be square, in the model's framing; leave "
                                      "--generated-aligned out to detect and align their faces"})
            continue
        decoded.append((name, group, img))
    if not decoded:
        raise UserError(f"--generated {folder}: no usable image ({len(skipped)} skipped: "
                        f"{skipped[0]['file']}: {skipped[0]['reason']})")
    if generated_aligned:
        size = Counter(img.width for _, _, img in decoded).most_common(1)[0][0]
        return [Item("generated", n, _square(np.asarray(img), size), g, AS_GIVEN) for n, g, img in decoded], size
    size = int(np.clip(round(float(np.median([min(img.size) for _, _, img in decoded]))), MIN_SIZE, MAX_SIZE))
    items = []
    for name, group, img in decoded:
        try:
            items.append(Item("generated", name, _align(img, size), group, ALIGNED_BY_AUDIT))
        except PhotoRejected as exc:  # kept: FDFR counts it, memorisation skips it
            items.append(Item("generated", name, None, group, ALIGNED_BY_AUDIT,
                              no_face=f"{exc.reason}; counted in FDFR, skipped by memorisation"))
    return items, size


def _load_photos(folder: Path, label: str, size: int, aligned: bool, skipped: list[dict]) -> list[Item]:
    items: list[Item] = []
    for path in _files(folder, label):
        name = path.relative_to(folder).as_posix()
        try:
            img = _decode(path)
            if aligned:
                if img.width != img.height:
                    raise PhotoRejected(f"not square ({img.width}x{img.height}): with --aligned the photos "
                                        "must be aligned square crops; leave --aligned out to align them")
                crop = _square(np.asarray(img), size)
            else:
                crop = _align(img, size)
        except PhotoRejected as exc:
            skipped.append({"folder": label, "file": name, "reason": exc.reason})
            continue
        items.append(Item(label, name, crop))
    if not items:
        reasons = [s for s in skipped if s["folder"] == label]
        raise UserError(f"--{label} {folder}: no usable photo ({len(reasons)} skipped, e.g. "
                        f"{reasons[0]['file']}: {reasons[0]['reason']})")
    return items


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def audit(train_dir: Path, holdout_dir: Path, generated_dir: Path, encoders: list[str] | None = None,
          aligned: bool = False, thresholds: dict[str, float] | None = None, n_resamples: int = 2000,
          seed: int = 0, progress: bool = True, generated_aligned: bool = False) -> dict:
    """Run every image-level metric; see the module docstring for the pipeline and the result's shape.

    ``aligned``: the train and holdout photos are already square aligned crops. ``generated_aligned``: the
    generated images are already square, in the model's framing, and are taken as given; by default their
    faces are detected and aligned like the reference photos' (a vendor's headshots, whole-frame copies).
    """
    start = time.perf_counter()
    encoders = list(dict.fromkeys(encoders or ["sface"]))
    infos = {name: get_encoder(name).info for name in encoders}  # unknown names fail before any work
    thresholds = dict(thresholds or {})
    for name in thresholds:
        if name not in infos:
            raise UserError(f"--threshold {name}=...: {name} is not among the encoders ({', '.join(encoders)})")
    skipped: list[dict] = []
    for label, folder in (("train", train_dir), ("holdout", holdout_dir), ("generated", generated_dir)):
        _files(folder, label)  # all three must exist and hold files before anything is decoded
    generated, size = _load_generated(Path(generated_dir), skipped, generated_aligned)
    train = _load_photos(Path(train_dir), "train", size, aligned, skipped)
    holdout = _load_photos(Path(holdout_dir), "holdout", size, aligned, skipped)
    prepared = time.perf_counter()

    faced = [i for i, it in enumerate(generated) if it.image is not None]  # memorisation's generations
    gen_imgs = [generated[i].image for i in faced]
    groups = [it.group for it in generated]
    stages = {"decode_and_align": prepared - start}
    by_encoder: dict[str, dict] = {}
    for name in encoders:
        t0 = time.perf_counter()
        emb, found = embed(gen_imgs, name, progress, desc=f"{name}: generated")
        # A generation the audit found no face in has no embedding: FDFR counts it.
        g_emb = np.zeros((len(generated), emb.shape[1]), dtype=emb.dtype)
        g_found = np.zeros(len(generated), dtype=bool)
        g_emb[faced], g_found[faced] = emb, found
        t_emb, t_found = embed([it.image for it in train], name, progress, desc=f"{name}: train")
        h_emb, h_found = embed([it.image for it in holdout], name, progress, desc=f"{name}: holdout")
        result = identity_mod.identity_metrics(g_emb, g_found, t_emb, t_found, h_emb, h_found, infos[name],
                                               groups=groups, threshold=thresholds.get(name),
                                               n_resamples=n_resamples, seed=seed)
        result["per_image"]["face_found"] = g_found
        by_encoder[name] = result
        stages[f"identity_{name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if gen_imgs:
        memo = mem_mod.memorization_metrics(gen_imgs, [it.image for it in train], [it.image for it in holdout],
                                            size=size, n_resamples=n_resamples, seed=seed)
    else:
        memo = _no_memorization(size, f"no generated image has a face to align ({len(generated)} without)")
    stages["memorization"] = time.perf_counter() - t0
    seconds = time.perf_counter() - start

    per_image = []
    mem_pi = memo.pop("per_image")
    mem_row = {i: k for k, i in enumerate(faced)}  # generation index -> its row in memorisation's arrays
    id_pi = {name: res.pop("per_image") for name, res in by_encoder.items()}
    primary = encoders[0]
    for i, it in enumerate(generated):
        k = mem_row.get(i)
        nearest = int(mem_pi["nearest_train_index"][k]) if k is not None else -1

        def mem(key: str, k=k):
            return _num(mem_pi[key][k]) if k is not None else None

        row = {
            "file": it.name,
            "group": it.group,
            "framing": it.framing,
            "face_found": bool(id_pi[primary]["face_found"][i]),
            "ism_holdout": _num(id_pi[primary]["ism_holdout"][i]),
            "ism_train": _num(id_pi[primary]["ism_train"][i]),
            "verification_score": _num(id_pi[primary]["verification_score"][i]),
            "accepted": bool(id_pi[primary]["accepted"][i]),
            "memorization_skipped": it.no_face,
            "nearest_train": train[nearest].name if nearest >= 0 else None,
            "nearest_train_l2": mem("nearest_train_l2"),
            "nearest_train_registered_l2": mem("nearest_train_registered_l2"),
            "nearest_train_tiled_l2": mem("nearest_train_tiled_l2"),
            "nearest_holdout_l2": mem("nearest_holdout_l2"),
            "gap": mem("gap"),
            "relative_distance": mem("relative_distance"),
        }
        if len(encoders) > 1:
            row["by_encoder"] = {name: {"face_found": bool(p["face_found"][i]),
                                        "ism_holdout": _num(p["ism_holdout"][i]),
                                        "verification_score": _num(p["verification_score"][i]),
                                        "accepted": bool(p["accepted"][i])} for name, p in id_pi.items()}
        per_image.append(row)
    memo["extracted"] = [{"train_file": train[e["train_index"]].name,
                          "generations": [generated[faced[g]].name for g in e["generations"]]}
                         for e in memo["extracted"]]

    n_images = len(generated) + len(train) + len(holdout)
    directions = {key: registry.direction(key) == "higher_is_better" for key in _keys()}
    meta = {
        "encoders": {name: {**infos[name].to_dict(), "threshold_used": by_encoder[name]["threshold"]}
                     for name in encoders},
        "primary_encoder": primary,
        "delta": memo["delta"],
        "n": {"train": len(train), "holdout": len(holdout), "generated": len(generated),
              "generated_by_group": dict(Counter(groups)), "skipped": len(skipped),
              "generated_without_face": len(generated) - len(faced), "generated_memorization": len(faced)},
        "size": size,
        "aligned_input": aligned,
        "generated_framing": AS_GIVEN if generated_aligned else ALIGNED_BY_AUDIT,
        "preprocessing": f"train/holdout {'resized' if aligned else 'detected (YuNet) and aligned'} to {size}x"
                         f"{size}; generated images "
                         + ("taken as given (square, the model's framing), resized" if generated_aligned else
                            "detected (YuNet) and aligned like the reference photos (none without a face "
                            "enters memorisation)")
                         + f" to {size}x{size}; every image with a shorter side below {UPSCALE_MIN_SIDE} px is "
                         "upscaled "
                         f"(bicubic) to {UPSCALE_MIN_SIDE} px for face detection (confidence >= "
                         f"{DETECT_MIN_SCORE}); pixel distances at {size}x{size}, RGB in [0, 1]",
        "higher_is_better": directions,
        "direction_note": "identity directions are for fidelity; for privacy read them the other way, and "
                          "for the no_identifier group (concept bleed) high identity scores are leakage",
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "confidence": CONFIDENCE,
                      "method": "percentile", "unit": "generated images (identity, gap, distances); train "
                                                      "photos (extraction rate)"},
        "citations": CITATIONS,
        "seconds": round(seconds, 2),
        "seconds_by_stage": {k: round(v, 2) for k, v in stages.items()},
        "images_per_second": round(n_images / seconds, 2) if seconds > 0 else None,
    }
    return {
        "identity": by_encoder[primary],
        "identity_by_encoder": by_encoder,
        "memorization": memo,
        "per_image": per_image,
        "skipped": skipped,
        "meta": meta,
    }


def _no_memorization(size: int, reason: str) -> dict:
    """Memorisation's result shape when no generation can be compared (every metric empty, with ``reason``)."""
    memo: dict = {key: empty(reason).to_dict() for key in mem_mod.MEASURES}
    memo["copy_similarity"] = dict(mem_mod.COPY_SIMILARITY_UNAVAILABLE)
    memo["extracted"] = []
    memo["size"] = size
    memo["delta"] = {"registered_l2": mem_mod.DELTA_REGISTERED_L2, "provenance": mem_mod.DELTA_PROVENANCE}
    memo["per_image"] = {"nearest_train_index": np.zeros(0, dtype=int)}
    return memo


def _keys() -> list[str]:
    return [f"identity.{k}" for k in identity_mod.MEASURES] + [f"memorization.{k}" for k in mem_mod.MEASURES]


def _better(key: str) -> str:
    return registry.direction(key).replace("_is_", " is ")


def _fmt(m: dict) -> str:
    if m.get("value") is None:
        return f"n/a ({m.get('note', '')})"
    ci = f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m.get("ci_low") is not None else ""
    return f"{m['value']:.3f}{ci} n={m['n']}"


def summary_table(result: dict) -> str:
    """A short human-readable summary of :func:`audit`'s result."""
    meta = result["meta"]
    lines = [f"audit: {meta['n']['generated']} generated vs {meta['n']['train']} train / "
             f"{meta['n']['holdout']} holdout photos at {meta['size']} px ({meta['seconds']} s)",
             f"generated images {meta['generated_framing']}"
             + (f"; {meta['n']['generated_without_face']} without a face (in FDFR, not in memorisation)"
                if meta["n"]["generated_without_face"] else "")]
    for name, res in result["identity_by_encoder"].items():
        lines.append(f"identity ({name}, {res['scope']}):")
        for key in identity_mod.MEASURES:
            lines.append(f"  {key:<28} {_fmt(res[key])}  ({_better('identity.' + key)})")
        for group, g in res["by_group"].items():
            lines.append(f"  [{group}] ISM holdout {_fmt(g['ism_holdout'])}; verification "
                         f"{_fmt(g['verification_rate'])}")
    lines.append("memorisation (directions for privacy):")
    for key in mem_mod.MEASURES:
        lines.append(f"  {key:<28} {_fmt(result['memorization'][key])}  ({_better('memorization.' + key)})")
    lines.append(f"  {'copy_similarity':<28} unavailable: {result['memorization']['copy_similarity']['reason']}")
    for r in result["per_image"]:
        if r.get("memorization_skipped"):
            lines.append(f"memorisation skipped generated/{r['file']}: {r['memorization_skipped']}")
    for s in result["skipped"]:
        lines.append(f"skipped {s['folder']}/{s['file']}: {s['reason']}")
    return "\n".join(lines)
