"""TEST DATA: a ``results.json`` that follows workbench/results.py (schema 2), with made-up numbers.

The metric values are synthetic (drawn from fixed distributions, then summarised with the real
workbench.metrics.stats / roc functions so intervals look like real ones); the images are random
noise, not faces. ``fixture_run`` builds a complete run folder from nothing; ``results_for_run``
builds results.json for a real run folder (real generations, the subject's real crops) while the
runner does not yet compute metrics.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from workbench import paths
from workbench import results as results_schema
from workbench.lifecycle import manifest
from workbench.metrics import registry, roc, stats

N_RESAMPLES = 200  # fewer bootstrap draws than a real run: fast tests

# How leaky each recipe is made to look: member-score shift (MIA), memorisation gap, extracted photos, bleed
PROFILES = {
    "none": dict(shift=0.0, gap=0.0, extracted=0, bleed=0.02, ism=0.18, fdfr=0.1),
    "lora": dict(shift=2.5, gap=0.07, extracted=1, bleed=0.30, ism=0.55, fdfr=0.05),
    "textual_inversion": dict(shift=0.4, gap=0.01, extracted=0, bleed=0.05, ism=0.35, fdfr=0.08),
    "dreambooth": dict(shift=1.2, gap=0.03, extracted=0, bleed=0.12, ism=0.5, fdfr=0.05),
}
PAPERS = {
    "identity": ("Van Le et al., Anti-DreamBooth, ICCV 2023", "ISM = mean cos(e(x̂), mean_h e(h))"),
    "memorization": ("Carlini et al., Extracting Training Data from Diffusion Models, USENIX Security 2023",
                     "ℓ2(a,b) = sqrt(Σ(aᵢ−bᵢ)²/d)"),
    "mia": ("Matsumoto et al. 2023; Kong et al., ICLR 2024; Duan et al., ICML 2023",
            "AUC over member/non-member pairs"),
    "bleed": ("METRICS.md, concept bleed", "ISM of generations from prompts without the identifier"),
}


def noise_png(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _share(hits: np.ndarray) -> dict:
    return stats.bootstrap(len(hits), lambda idx: float(hits[idx].mean()), n_resamples=N_RESAMPLES).to_dict()


def _mean(values) -> dict:
    return stats.bootstrap_mean(values, n_resamples=N_RESAMPLES).to_dict()


def row_metrics(profile: dict, n_train: int, n_holdout: int, n_gen: int, rng) -> tuple[dict, dict]:
    m: dict[str, dict] = {}
    found = rng.random(n_gen) >= profile["fdfr"]
    m["identity.fdfr"] = _share((~found).astype(float))
    ism = rng.normal(profile["ism"], 0.08, int(found.sum()))
    m["identity.ism_holdout"] = _mean(ism)
    m["identity.ism_train"] = _mean(ism + profile["gap"])
    m["identity.verification_rate"] = _share((ism > 0.363).astype(float))
    bleed = rng.normal(profile["ism"] * profile["bleed"] * 2, 0.05, n_gen)
    m["bleed.ism_holdout"] = _mean(bleed)
    m["bleed.verification_rate"] = _share((rng.random(n_gen) < profile["bleed"]).astype(float))
    hits = np.zeros(n_train)
    hits[:profile["extracted"]] = 1
    m["memorization.extraction_rate"] = _share(hits)
    m["memorization.gap"] = _mean(rng.normal(profile["gap"], 0.02, n_gen))
    d = rng.normal(0.18 - profile["gap"], 0.03, n_gen)
    m["memorization.min_l2"] = stats.bootstrap(n_gen, lambda idx: float(d[idx].min()),
                                               n_resamples=N_RESAMPLES).to_dict()
    curves = {}
    for k, attack in enumerate(registry.attacks()):
        members = rng.normal(profile["shift"] * (1 - 0.2 * k), 1, n_train)
        rep = roc.roc_report(members, rng.normal(0, 1, n_holdout), n_resamples=N_RESAMPLES).to_dict()
        curves[attack] = rep.pop("roc")
        rep.setdefault("auc_raw", dict(rep["auc"]))  # synthetic scores are uncalibrated: raw AUC = AUC
        for measure, metric in rep.items():
            m[f"mia.{attack}.{measure}"] = metric
    return m, curves


def make_results(run_dir: Path, subject_id: str, train: list[Path], generated: dict[tuple[str, int], list[str]],
                 recipes: dict[str, str], seeds=(0,), n_holdout: int = 5, failed: tuple = (), distances: bool = False,
                 name: str = "fixture", backbone: str = "tiny-face") -> dict:
    """results.json data: ``recipes`` label → recipe; ``generated[(label, seed)]`` paths relative to run_dir."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        for label, recipe in recipes.items():
            if (label, seed) in failed:
                rows.append({"label": label, "recipe": recipe, "seed": seed, "status": "failed",
                             "error": "RuntimeError: fixture failure", "params": {"steps": 2},
                             "train": {"steps": None, "seconds": None, "final_loss": None},
                             "metrics": {}, "roc": {}, "nearest": []})
                continue
            gens = generated[(label, seed)]
            metrics, curves = row_metrics(PROFILES.get(recipe, PROFILES["lora"]), len(train), n_holdout,
                                          max(len(gens), 8), rng)
            nearest = []
            for j, gen in enumerate(gens[:3]):
                t = train[j % len(train)]
                home = paths.home()  # train paths: absolute, or relative to the data root (both are allowed)
                inside = t.resolve().is_relative_to(home)
                ref = str(t.resolve().relative_to(home)) if j % 2 and inside else str(t)
                nearest.append({"generated": gen, "train": ref, "l2": round(0.05 + 0.04 * j + 0.01 * seed, 6),
                                "holdout_l2": round(0.12 + 0.03 * j, 6)})
            row = {"label": label, "recipe": recipe, "seed": seed, "status": "ok", "error": None,
                   "params": {} if recipe == "none" else {"steps": 2, "rank": 4},
                   "train": {"steps": 0 if recipe == "none" else 2, "seconds": 0.5,
                             "final_loss": None if recipe == "none" else 0.123, "photos": "clean",
                             "details": {"steps": {"planned": 0 if recipe == "none" else 2, "cap": None,
                                                   "run": 0 if recipe == "none" else 2}}},
                   "metrics": metrics, "roc": curves, "nearest": nearest}
            if distances:
                row["distances"] = {"train": rng.normal(0.15, 0.03, 12).round(4).tolist(),
                                    "holdout": rng.normal(0.17, 0.03, 12).round(4).tolist()}
            rows.append(row)
    meta_metrics = {}
    for key in registry.required_keys():
        paper, eq = PAPERS[key.split(".")[0]]
        meta_metrics[key] = {"direction": registry.direction(key), "paper": paper, "equation": eq,
                             "control": "the none row of the same seed"}
    return {
        "schema": results_schema.SCHEMA_VERSION,
        "run": {"name": name, "subject_id": subject_id, "backbone": backbone, "device": "cpu", "seeds": list(seeds),
                "n_train": len(train), "n_holdout": n_holdout,
                "created": datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc).isoformat(),
                "versions": {"workbench": "0.1.0", "python": "3.11.7"}, "spec_sha256": "ab" * 32},
        "rows": rows,
        "meta": {"metrics": meta_metrics, "encoder": {"name": "sface", "threshold": 0.363, "far": 0.001},
                 "delta": 0.062, "notes": ["FIXTURE: synthetic test numbers, not a measurement",
                                           "Attacks run in latent space (tiny VAE, 2023 defaults)."]},
    }


def write_results(run_dir: Path, results: dict) -> Path:
    results_schema.validate_results(results)
    path = Path(run_dir) / results_schema.RESULTS_FILE
    manifest.write_bytes(results["run"]["subject_id"], "record", path, (json.dumps(results, indent=1) + "\n").encode())
    return path


def fixture_run(home: Path, subject_id: str = "subject-fixture", recipes: dict | None = None, seeds=(0,),
                **kw) -> tuple[Path, dict]:
    """A complete run folder under ``home/runs``: noise images for train crops and generations + results.json."""
    recipes = recipes or {"none": "none", "lora": "lora", "ti": "textual_inversion"}
    crops = home / "subjects" / subject_id / "crops"
    train = []
    for k in range(15):
        path = crops / f"train{k}.png"
        manifest.write_bytes(subject_id, "crop", path, noise_png(100 + k))
        train.append(path)
    run_dir = home / "runs" / f"fixture-{subject_id}"
    generated = {}
    for seed in seeds:
        for label in recipes:
            rels = []
            for j in range(4):
                rel = f"generations/{label}/seed{seed}/img{j}.png"
                png = noise_png(1000 * seed + 10 * j + len(label))
                manifest.write_bytes(subject_id, "generation", run_dir / rel, png)
                rels.append(rel)
            generated[(label, seed)] = rels
    results = make_results(run_dir, subject_id, train, generated, recipes, seeds, **kw)
    write_results(run_dir, results)
    return run_dir, results


def results_for_run(run_dir: Path, subject_id: str, spec) -> dict:
    """TEST DATA for a real run folder: real generation files and training crops, synthetic metrics."""
    from workbench.generate import read_records
    from workbench.subjects.store import load_subject

    subject = load_subject(subject_id)
    recipes = {e.label: e.name for e in spec.recipes}
    generated = {}
    for seed in spec.seeds:
        for label in recipes:
            folder = Path(run_dir) / "generations" / label / f"seed{seed}"
            generated[(label, seed)] = [str((folder / r.file).relative_to(run_dir)) for r in read_records(folder)]
    return make_results(run_dir, subject_id, subject.train, generated, recipes, tuple(spec.seeds),
                        n_holdout=len(subject.holdout), name=spec.name, backbone="tiny-face")
