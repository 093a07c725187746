"""The measurement stage of a run: every metric of one recipe row, as ``results.json`` wants it.

For one (recipe, seed): identity fidelity and concept bleed of its generations (every selected
encoder; the first is the headline), memorisation/extraction against the subject's train photos with
the holdout photos as the control, and membership inference against the personalised model (members:
train photos, non-members: holdout photos of the same person). The untouched base model is measured
the same way as the ``none`` row, so every leakage number has its control beside it in the report.
Definitions, papers and directions live in :mod:`workbench.metrics`; this module only wires them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.lifecycle.sealed import at_rest
from workbench.metrics import identity as identity_mod
from workbench.metrics import memorization as memo_mod
from workbench.metrics import registry

NEAREST_K = 8  # generations shown next to their nearest training photo in the report gallery


@dataclass(frozen=True)
class Embedded:
    """One encoder's embeddings of the subject's photos (``found``: a face was detected)."""

    train: np.ndarray
    train_found: np.ndarray
    holdout: np.ndarray
    holdout_found: np.ndarray


@dataclass
class Reference:
    """The subject's photos as the metrics see them, embedded once per run."""

    train: list[Path]
    holdout: list[Path]
    train_img: list[np.ndarray] = field(default_factory=list)
    holdout_img: list[np.ndarray] = field(default_factory=list)
    emb: dict[str, Embedded] = field(default_factory=dict)  # by encoder name
    base_scores: dict = field(default_factory=dict)  # (prompt, attacks, seed) -> the base model's attack scores

    def mia_reference(self, backbone: str, device: str, prompt: str, attacks: list[str], seed: int) -> dict:
        """The untouched base model's attack scores of members + non-members (difficulty calibration),
        computed once per run and prompt with the same seed as every row's attacks."""
        from workbench.backbones.registry import load_backbone
        from workbench.metrics.membership import attack_scores

        key = (prompt, tuple(attacks), seed)
        if key not in self.base_scores:
            base = load_backbone(backbone, device)
            self.base_scores[key] = attack_scores(base, self.train + self.holdout, prompt, attacks, seed)
        return self.base_scores[key]

    @classmethod
    def load(cls, subject, encoders: list[str]) -> Reference:
        from workbench.metrics.encoders import embed

        ref = cls(list(subject.train), list(subject.holdout))
        ref.train_img = [_rgb(p) for p in ref.train]
        ref.holdout_img = [_rgb(p) for p in ref.holdout]
        for enc in encoders:
            te, tf = embed(ref.train_img, enc, progress=False)
            he, hf = embed(ref.holdout_img, enc, progress=False)
            ref.emb[enc] = Embedded(te, tf, he, hf)
        return ref


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _identity(gen: list[np.ndarray], groups: list[str], ref: Reference, encoders: list[str]) -> tuple[dict, dict]:
    from workbench.metrics.encoders import embed, get_encoder

    flat, by_encoder = {}, {}
    for i, enc in enumerate(encoders):
        ge, gf = embed(gen, enc, progress=False)
        e = ref.emb[enc]
        res = identity_mod.identity_metrics(ge, gf, e.train, e.train_found, e.holdout, e.holdout_found,
                                            get_encoder(enc).info, groups=groups)
        by_encoder[enc] = {k: res[k] for k in identity_mod.MEASURES} | {"threshold": res["threshold"],
                                                                          "threshold_far": res["threshold_far"]}
        bleed = res.get("concept_bleed", {})
        by_encoder[enc] |= {f"bleed_{k}": v for k, v in bleed.items()}
        if i == 0:  # the headline encoder
            flat |= {f"identity.{k}": res[k] for k in identity_mod.MEASURES}
            flat |= {f"bleed.{k}": v for k, v in bleed.items()}
            nob = res["by_group"].get("no_identifier")
            if nob:
                flat["bleed.fdfr"] = nob["fdfr"]
    return flat, by_encoder


def _memorization(gen: list[np.ndarray], files: list[str], ref: Reference) -> tuple[dict, list[dict]]:
    mem = memo_mod.memorization_metrics(gen, ref.train_img, ref.holdout_img)
    flat = {f"memorization.{k}": mem[k] for k in memo_mod.MEASURES if k != "nearest_holdout_l2"}
    per = mem["per_image"]
    order = np.argsort(per["nearest_train_registered_l2"])[:NEAREST_K]
    nearest = [{
        "generated": files[i],
        "train": str(at_rest(ref.train[int(per["nearest_train_registered_index"][i])])),  # the store's path
        "l2": float(per["nearest_train_registered_l2"][i]),
        "raw_l2": float(per["nearest_train_l2"][i]),
        "holdout_l2": float(per["nearest_holdout_l2"][i]),
    } for i in order]
    return flat, nearest


def _membership(pipe, ref: Reference, prompt: str, attacks: list[str], seed: int,
                reference: dict | None) -> tuple[dict, dict, dict]:
    from workbench.metrics.membership import MEASURES, membership_inference

    res = membership_inference(pipe, ref.train, ref.holdout, prompt, attacks=attacks, seed=seed, reference=reference)
    flat, roc, info = {}, {}, {}
    for name, r in res.items():
        for k in MEASURES:
            flat[f"mia.{name}.{k}"] = r[k]
        roc[name] = r["roc"]
        info[name] = {k: r[k] for k in ("queries_per_image", "total_queries", "space", "scores", "calibrated",
                                        "calibrated_scores", "roc_raw")}
    return flat, roc, info


def complete(metrics: dict, why: str) -> dict:
    """Every required metric (:func:`registry.required_keys`), the ones not measured as value null, n 0 and a note."""
    from workbench.metrics.stats import empty

    return {k: metrics.get(k) or empty(why).to_dict() for k in registry.required_keys()} | metrics


def measurement_key(records: list, model_dir: str, spec_metrics: dict, prompt: str) -> str:
    from workbench.content import content_key

    return content_key({"images": sorted(r.sha256 for r in records), "model": model_dir, "metrics": spec_metrics,
                        "prompt": prompt, "version": 2}, length=64)


def measure_row(pipe, records: list, gen_dir: Path, run_dir: Path, ref: Reference, encoders: list[str],
                attacks: list[str], prompt: str, seed: int, mia_reference: dict | None = None) -> dict:
    """All metrics of one recipe row (generations in ``gen_dir``, model ``pipe``); ``mia_reference``: the
    base model's attack scores (:meth:`Reference.mia_reference`) that calibrate the attacks."""
    gen = [_rgb(gen_dir / r.file) for r in records]
    files = [str((gen_dir / r.file).relative_to(run_dir)) for r in records]
    groups = [r.group for r in records]
    identity, by_encoder = _identity(gen, groups, ref, encoders)
    mem, nearest = _memorization(gen, files, ref)
    mia, roc, mia_info = _membership(pipe, ref, prompt, attacks, seed, mia_reference) if attacks else ({}, {}, {})
    metrics = complete(identity | mem | mia, "not measured: not selected in the spec's metrics")
    return {"metrics": metrics, "by_encoder": by_encoder, "roc": roc, "nearest": nearest,
            "mia": mia_info, "mia_prompt": prompt, "n_generations": len(gen)}


def metric_meta(encoders: list[str]) -> dict:
    """``results.json``'s ``meta``: every declared metric's direction, paper and equation, the encoder, δ."""
    from workbench.metrics.encoders import get_encoder

    enc = get_encoder(encoders[0]).info if encoders else None
    return {"metrics": registry.meta(),
            "encoder": {"name": enc.name, "threshold": enc.threshold, "far": enc.far} if enc else None,
            "delta": memo_mod.DELTA_REGISTERED_L2, "delta_provenance": memo_mod.DELTA_PROVENANCE,
            "copy_similarity": memo_mod.COPY_SIMILARITY_UNAVAILABLE}
