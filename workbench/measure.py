"""The measurement stage of a run: every metric of one recipe row, as ``results.json`` wants it.

For one (recipe, seed): identity fidelity and concept bleed of its generations (every selected
encoder; the first is the headline), memorisation/extraction against the subject's train photos with
the holdout photos as the control, and membership inference against the personalised model (members:
train photos, non-members: holdout photos of the same person). The untouched base model is measured
the same way as the ``none`` row, so every leakage number has its control beside it in the report.
Definitions, papers and directions live in :mod:`workbench.metrics`; this module only wires them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.metrics import identity as identity_mod
from workbench.metrics import memorization as memo_mod

NEAREST_K = 8  # generations shown next to their nearest training photo in the report gallery


@dataclass
class Reference:
    """The subject's photos as the metrics see them, embedded once per run."""

    train: list[Path]
    holdout: list[Path]
    train_img: list[np.ndarray] = field(default_factory=list)
    holdout_img: list[np.ndarray] = field(default_factory=list)
    emb: dict = field(default_factory=dict)  # encoder -> (train_emb, train_found, holdout_emb, holdout_found)

    @classmethod
    def load(cls, subject, encoders: list[str]) -> Reference:
        from workbench.metrics.encoders import embed

        ref = cls(list(subject.train), list(subject.holdout))
        ref.train_img = [_rgb(p) for p in ref.train]
        ref.holdout_img = [_rgb(p) for p in ref.holdout]
        for enc in encoders:
            te, tf = embed(ref.train_img, enc, progress=False)
            he, hf = embed(ref.holdout_img, enc, progress=False)
            ref.emb[enc] = (te, tf, he, hf)
        return ref


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _identity(gen: list[np.ndarray], groups: list[str], ref: Reference, encoders: list[str]) -> tuple[dict, dict]:
    from workbench.metrics.encoders import embed, get_encoder

    flat, by_encoder = {}, {}
    for i, enc in enumerate(encoders):
        ge, gf = embed(gen, enc, progress=False)
        te, tf, he, hf = ref.emb[enc]
        res = identity_mod.identity_metrics(ge, gf, te, tf, he, hf, get_encoder(enc).info, groups=groups)
        keys = ("fdfr", "ism_holdout", "ism_train", "ism_train_minus_holdout", "verification_rate")
        by_encoder[enc] = {k: res[k] for k in keys} | {"threshold": res["threshold"],
                                                       "threshold_far": res["threshold_far"]}
        bleed = res.get("concept_bleed", {})
        by_encoder[enc] |= {f"bleed_{k}": v for k, v in bleed.items()}
        if i == 0:  # the headline encoder
            flat |= {f"identity.{k}": res[k] for k in keys}
            flat |= {f"bleed.{k}": v for k, v in bleed.items()}
            nob = res["by_group"].get("no_identifier")
            if nob:
                flat["bleed.fdfr"] = nob["fdfr"]
    return flat, by_encoder


def _memorization(gen: list[np.ndarray], files: list[str], ref: Reference) -> tuple[dict, list[dict]]:
    mem = memo_mod.memorization_metrics(gen, ref.train_img, ref.holdout_img)
    flat = {f"memorization.{k}": mem[k] for k in (
        "extraction_rate", "extraction_rate_unregistered", "gap", "gap_size_matched", "relative_distance",
        "nearest_train_registered_l2", "nearest_train_tiled_l2", "diversity")}
    flat["memorization.min_l2"] = mem["nearest_train_l2"]
    per = mem["per_image"]
    order = np.argsort(per["nearest_train_registered_l2"])[:NEAREST_K]
    nearest = [{
        "generated": files[i],
        "train": str(ref.train[int(per["nearest_train_registered_index"][i])]),
        "l2": float(per["nearest_train_registered_l2"][i]),
        "raw_l2": float(per["nearest_train_l2"][i]),
        "holdout_l2": float(per["nearest_holdout_l2"][i]),
    } for i in order]
    return flat, nearest


def _membership(pipe, ref: Reference, prompt: str, attacks: list[str], seed: int) -> tuple[dict, dict, dict]:
    from workbench.metrics.membership import membership_inference

    res = membership_inference(pipe, ref.train, ref.holdout, prompt, attacks=attacks, seed=seed)
    flat, roc, info = {}, {}, {}
    for name, r in res.items():
        for k in ("auc", "advantage", "tpr_at_1pct_fpr"):
            flat[f"mia.{name}.{k}"] = r[k]
        roc[name] = r["roc"]
        info[name] = {"queries_per_image": r["queries_per_image"], "total_queries": r["total_queries"],
                      "space": r["space"], "scores": r["scores"]}
    return flat, roc, info


def complete(metrics: dict, why: str) -> dict:
    """Every metric the results schema lists, with the ones not measured as value null, n 0 and a note."""
    from workbench.metrics.stats import empty
    from workbench.report.schema import METRIC_KEYS

    return {k: metrics.get(k) or empty(why).to_dict() for k in METRIC_KEYS} | metrics


def measurement_key(records: list, model_dir: str, spec_metrics: dict, prompt: str) -> str:
    payload = {"images": sorted(r.sha256 for r in records), "model": model_dir, "metrics": spec_metrics,
               "prompt": prompt, "version": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def measure_row(pipe, records: list, gen_dir: Path, run_dir: Path, ref: Reference, encoders: list[str],
                attacks: list[str], prompt: str, seed: int) -> dict:
    """All metrics of one recipe row (generations in ``gen_dir``, model ``pipe``)."""
    gen = [_rgb(gen_dir / r.file) for r in records]
    files = [str((gen_dir / r.file).relative_to(run_dir)) for r in records]
    groups = [r.group for r in records]
    identity, by_encoder = _identity(gen, groups, ref, encoders)
    mem, nearest = _memorization(gen, files, ref)
    mia, roc, mia_info = _membership(pipe, ref, prompt, attacks, seed) if attacks else ({}, {}, {})
    metrics = complete(identity | mem | mia, "not measured: not selected in the spec's metrics")
    return {"metrics": metrics, "by_encoder": by_encoder, "roc": roc, "nearest": nearest,
            "mia": mia_info, "mia_prompt": prompt, "n_generations": len(gen)}


def metric_meta(encoders: list[str]) -> dict:
    """Direction, paper and equation of every flat metric key (for the report's methods section)."""
    from workbench.metrics.encoders import get_encoder

    anti = "Van Le et al., Anti-DreamBooth, ICCV 2023, Sec. 5.1"
    carlini = "Carlini et al., Extracting Training Data from Diffusion Models, USENIX Security 2023"
    m = {
        "identity.fdfr": ("lower_is_better", anti, "share of generations with no detected face"),
        "identity.ism_holdout": ("higher_is_better", anti, "cos(e(x), mean e(holdout)), generations with a face"),
        "identity.ism_train": ("higher_is_better", anti, "cos(e(x), mean e(train))"),
        "identity.ism_train_minus_holdout": ("lower_is_better", "METRICS.md (leakage signal)",
                                             "ISM_train - ISM_holdout per generation"),
        "identity.verification_rate": ("higher_is_better", "METRICS.md",
                                       "share of generations accepted at the calibrated threshold"),
        "bleed.ism_holdout": ("lower_is_better", "METRICS.md, Concept bleed", "ISM of prompts without identifier"),
        "bleed.verification_rate": ("lower_is_better", "METRICS.md, Concept bleed",
                                    "verification rate of prompts without identifier"),
        "bleed.fdfr": ("lower_is_better", anti, "FDFR of prompts without identifier"),
        "memorization.extraction_rate": ("lower_is_better", carlini + ", Definition 1",
                                         "share of train photos with a generation within delta (registered l2)"),
        "memorization.extraction_rate_unregistered": ("lower_is_better", carlini, "same with raw pixel l2"),
        "memorization.gap": ("lower_is_better", "METRICS.md", "nearest holdout l2 - nearest train l2"),
        "memorization.gap_size_matched": ("lower_is_better", "METRICS.md", "gap with size-matched train set"),
        "memorization.relative_distance": ("higher_is_better", carlini + ", CIFAR-10 section",
                                           "l2(x, x_nn) / (alpha * mean l2 to n nearest), alpha=0.5"),
        "memorization.min_l2": ("higher_is_better", carlini, "sqrt(sum (a-b)^2 / d) to the nearest train photo"),
        "memorization.nearest_train_registered_l2": ("higher_is_better", carlini, "pixel l2 after ECC registration"),
        "memorization.nearest_train_tiled_l2": ("higher_is_better", carlini, "max over 4x4 tiles of l2"),
        "memorization.diversity": ("higher_is_better", carlini, "mean pairwise l2 between generations"),
    }
    attacks = {
        "loss": "Matsumoto et al. 2023: ||eps_theta(sqrt(a_t) x0 + sqrt(1-a_t) eps, t) - eps||^2",
        "pia": "Kong et al., ICLR 2024 (PIA): ||eps_theta(x_t, t) - eps_theta(x0, 0)||_4^4",
        "secmi": "Duan et al., ICML 2023 (SecMI): DDIM inversion to t_SEC, one step on and back, error",
    }
    for name, paper in attacks.items():
        m[f"mia.{name}.auc"] = ("lower_is_better", paper, "ROC AUC, members = train, non-members = holdout")
        m[f"mia.{name}.advantage"] = ("lower_is_better", "Yeom et al., CSF 2018", "max |TPR - FPR|")
        m[f"mia.{name}.tpr_at_1pct_fpr"] = ("lower_is_better", "ml_privacy_meter definition",
                                            "TPR at the largest FPR <= 0.01")
    out = {k: {"direction": d, "paper": p, "equation": e, "control": "the `none` row (untouched base model)"}
           for k, (d, p, e) in m.items()}
    enc = get_encoder(encoders[0]).info if encoders else None
    return {"metrics": out,
            "encoder": {"name": enc.name, "threshold": enc.threshold, "far": enc.far} if enc else None,
            "delta": memo_mod.DELTA_REGISTERED_L2, "delta_provenance": memo_mod.DELTA_PROVENANCE,
            "copy_similarity": memo_mod.COPY_SIMILARITY_UNAVAILABLE}
