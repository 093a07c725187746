"""``workbench audit``: every image-level metric on plain folders, no model needed.

Inputs: a folder of the subject's training photos, one of holdout photos (same person, never trained
on) and one of generated images. Generated images in sub-folders are grouped by the sub-folder's name
(``identifier/`` and ``no_identifier/`` are the prompt groups of METRICS.md; files directly in the
folder form the group ``ungrouped``). Identity's top-level numbers cover the ``identifier`` group when
there is one, else every generation; memorisation always covers every generation.

Pipeline:
1. Every file is decoded with :func:`workbench.subjects.decode.load_photo` (content-sniffed, bombs and
   truncated files refused). A file that fails is skipped with its reason in ``skipped``, never a
   traceback. Generated images must be square; their most common side ``S`` is the comparison size.
2. Train and holdout photos are detected and aligned with :func:`workbench.subjects.faces.align_crop` at
   ``S`` (the framing the model was trained on), unless ``aligned=True`` says they already are square
   aligned crops (then they are only resized to ``S``). A photo without a face is skipped.
3. Identity (:mod:`.identity`), per encoder, on the generated images and on the aligned ``S`` crops of the
   reference photos (like is compared with like: the same resolution, the same upscaling before
   detection, :mod:`.encoders`).
4. Memorisation (:mod:`.memorization`) on the same ``S x S`` images.

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
from workbench.metrics.encoders import DETECT_MIN_SCORE, UPSCALE_MIN_SIDE, embed, get_encoder
from workbench.metrics.stats import CONFIDENCE
from workbench.subjects.decode import MAX_BYTES, PhotoRejected, load_photo
from workbench.subjects.faces import align_crop, detect_faces

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
    image: np.ndarray  # RGB uint8, S x S once prepared
    group: str = "ungrouped"


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


def _load_generated(folder: Path, skipped: list[dict]) -> tuple[list[Item], int]:
    decoded: list[tuple[str, str, np.ndarray]] = []
    for path in _files(folder, "generated"):
        rel = path.relative_to(folder)
        name = rel.as_posix()
        group = rel.parts[0] if len(rel.parts) > 1 else "ungrouped"
        try:
            arr = np.asarray(_decode(path))
        except PhotoRejected as exc:
            skipped.append({"folder": "generated", "file": name, "reason": exc.reason})
            continue
        if arr.shape[0] != arr.shape[1]:
            skipped.append({"folder": "generated", "file": name,
                            "reason": f"not square ({arr.shape[1]}x{arr.shape[0]}): generated images are "
                                      "compared at one square size"})
            continue
        decoded.append((name, group, arr))
    if not decoded:
        raise UserError(f"--generated {folder}: no usable image ({len(skipped)} skipped: "
                        f"{skipped[0]['file']}: {skipped[0]['reason']})")
    size = Counter(arr.shape[0] for _, _, arr in decoded).most_common(1)[0][0]
    return [Item("generated", n, _square(a, size), g) for n, g, a in decoded], size


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
                faces = detect_faces(np.asarray(img), "yunet", DETECT_MIN_SCORE)
                if not faces:
                    raise PhotoRejected("no face found, so it cannot be aligned")
                face = max(faces, key=lambda f: f.area * f.score)  # the subject: as photo intake does
                crop = np.asarray(align_crop(img, face, size))
        except PhotoRejected as exc:
            skipped.append({"folder": label, "file": name, "reason": exc.reason})
            continue
        except ValueError as exc:  # degenerate landmarks
            skipped.append({"folder": label, "file": name, "reason": f"the face could not be aligned ({exc})"})
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
          seed: int = 0, progress: bool = True) -> dict:
    """Run every image-level metric; see the module docstring for the pipeline and the result's shape."""
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
    generated, size = _load_generated(Path(generated_dir), skipped)
    train = _load_photos(Path(train_dir), "train", size, aligned, skipped)
    holdout = _load_photos(Path(holdout_dir), "holdout", size, aligned, skipped)
    prepared = time.perf_counter()

    gen_imgs = [it.image for it in generated]
    groups = [it.group for it in generated]
    stages = {"decode_and_align": prepared - start}
    by_encoder: dict[str, dict] = {}
    for name in encoders:
        t0 = time.perf_counter()
        g_emb, g_found = embed(gen_imgs, name, progress, desc=f"{name}: generated")
        t_emb, t_found = embed([it.image for it in train], name, progress, desc=f"{name}: train")
        h_emb, h_found = embed([it.image for it in holdout], name, progress, desc=f"{name}: holdout")
        result = identity_mod.identity_metrics(g_emb, g_found, t_emb, t_found, h_emb, h_found, infos[name],
                                               groups=groups, threshold=thresholds.get(name),
                                               n_resamples=n_resamples, seed=seed)
        result["per_image"]["face_found"] = g_found
        by_encoder[name] = result
        stages[f"identity_{name}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    memo = mem_mod.memorization_metrics(gen_imgs, [it.image for it in train], [it.image for it in holdout],
                                        size=size, n_resamples=n_resamples, seed=seed)
    stages["memorization"] = time.perf_counter() - t0
    seconds = time.perf_counter() - start

    per_image = []
    mem_pi = memo.pop("per_image")
    id_pi = {name: res.pop("per_image") for name, res in by_encoder.items()}
    primary = encoders[0]
    for i, it in enumerate(generated):
        nearest = int(mem_pi["nearest_train_index"][i])
        row = {
            "file": it.name,
            "group": it.group,
            "face_found": bool(id_pi[primary]["face_found"][i]),
            "ism_holdout": _num(id_pi[primary]["ism_holdout"][i]),
            "ism_train": _num(id_pi[primary]["ism_train"][i]),
            "verification_score": _num(id_pi[primary]["verification_score"][i]),
            "accepted": bool(id_pi[primary]["accepted"][i]),
            "nearest_train": train[nearest].name if nearest >= 0 else None,
            "nearest_train_l2": _num(mem_pi["nearest_train_l2"][i]),
            "nearest_train_tiled_l2": _num(mem_pi["nearest_train_tiled_l2"][i]),
            "nearest_holdout_l2": _num(mem_pi["nearest_holdout_l2"][i]),
            "gap": _num(mem_pi["gap"][i]),
            "relative_distance": _num(mem_pi["relative_distance"][i]),
        }
        if len(encoders) > 1:
            row["by_encoder"] = {name: {"face_found": bool(p["face_found"][i]),
                                        "ism_holdout": _num(p["ism_holdout"][i]),
                                        "verification_score": _num(p["verification_score"][i]),
                                        "accepted": bool(p["accepted"][i])} for name, p in id_pi.items()}
        per_image.append(row)
    memo["extracted"] = [{"train_file": train[e["train_index"]].name,
                          "generations": [generated[g].name for g in e["generations"]]}
                         for e in memo["extracted"]]

    n_images = len(generated) + len(train) + len(holdout)
    directions = {f"identity.{k}": v for k, v in identity_mod.DIRECTIONS.items()}
    directions.update({f"memorization.{k}": v for k, v in mem_mod.DIRECTIONS.items()})
    meta = {
        "encoders": {name: {**infos[name].to_dict(), "threshold_used": by_encoder[name]["threshold"]}
                     for name in encoders},
        "primary_encoder": primary,
        "delta": memo["delta"],
        "n": {"train": len(train), "holdout": len(holdout), "generated": len(generated),
              "generated_by_group": dict(Counter(groups)), "skipped": len(skipped)},
        "size": size,
        "aligned_input": aligned,
        "preprocessing": f"train/holdout {'resized' if aligned else 'detected (YuNet) and aligned'} to {size}x"
                         f"{size}; every image with a shorter side below {UPSCALE_MIN_SIDE} px is upscaled "
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


def _fmt(m: dict) -> str:
    if m.get("value") is None:
        return f"n/a ({m.get('note', '')})"
    ci = f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m.get("ci_low") is not None else ""
    return f"{m['value']:.3f}{ci} n={m['n']}"


def summary_table(result: dict) -> str:
    """A short human-readable summary of :func:`audit`'s result."""
    meta = result["meta"]
    lines = [f"audit: {meta['n']['generated']} generated vs {meta['n']['train']} train / "
             f"{meta['n']['holdout']} holdout photos at {meta['size']} px ({meta['seconds']} s)"]
    for name, res in result["identity_by_encoder"].items():
        lines.append(f"identity ({name}, {res['scope']}):")
        for key, higher in identity_mod.DIRECTIONS.items():
            lines.append(f"  {key:<28} {_fmt(res[key])}  ({'higher' if higher else 'lower'} is better)")
        for group, g in res["by_group"].items():
            lines.append(f"  [{group}] ISM holdout {_fmt(g['ism_holdout'])}; verification "
                         f"{_fmt(g['verification_rate'])}")
    lines.append("memorisation (directions for privacy):")
    for key, higher in mem_mod.DIRECTIONS.items():
        lines.append(f"  {key:<28} {_fmt(result['memorization'][key])}  ({'higher' if higher else 'lower'} is better)")
    lines.append(f"  {'copy_similarity':<28} unavailable: {result['memorization']['copy_similarity']['reason']}")
    for s in result["skipped"]:
        lines.append(f"skipped {s['folder']}/{s['file']}: {s['reason']}")
    return "\n".join(lines)
