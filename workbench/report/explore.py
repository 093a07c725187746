"""Library helpers behind the notebooks (``notebooks/0*.ipynb``): a notebook only calls these.

- :func:`quick_spec`: a spec file with a few fields overridden (fewer steps, another backbone), validated;
- :func:`generation_distances` / :func:`run_distances`: pixel ℓ2 (Carlini et al. 2023,
  :func:`workbench.metrics.memorization.l2_matrix`) of every generation of a run to its nearest training
  crop and its nearest holdout crop, recomputed from the run folder and the subject's store;
- :func:`mia_table`: the membership-inference numbers of results.json as rows;
- :func:`query_budget`: how many model queries each attack costs against one personalised model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from workbench.metrics import registry
from workbench.metrics.membership import MEASURES
from workbench.report.scorecard import format_num
from workbench.results import load_results


def quick_spec(spec_path: str | Path, backbone: str | None = None, steps: int | None = None,
               sampling_steps: int | None = None, images_per_prompt: int | None = None,
               recipes: list[str] | None = None, name: str | None = None, tracking: str | None = None):
    """Load a spec YAML with overrides (None = keep the file's value) and validate it like ``load_spec``.

    ``steps`` sets every recipe's ``params.steps`` (the ``none`` control has none); ``recipes`` keeps only
    the entries with these labels (the ``none`` control must stay: validation says so otherwise)."""
    from workbench.spec import parse_spec

    path = Path(spec_path)
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    if backbone is not None:
        data["backbone"] = str(backbone)
    if recipes is not None:
        data["recipes"] = [e for e in data["recipes"] if e.get("label", e["name"]) in recipes]
    if steps is not None:
        for entry in data["recipes"]:
            if entry["name"] != "none":
                entry["params"] = {**(entry.get("params") or {}), "steps": int(steps)}
    if sampling_steps is not None:
        data.setdefault("sampling", {})["steps"] = int(sampling_steps)
    if images_per_prompt is not None:
        data["images_per_prompt"] = int(images_per_prompt)
    if name is not None:
        data["name"] = name
    if tracking is not None:
        data.setdefault("tracking", {})["wandb"] = tracking
    return parse_spec(data, base_dir=path.parent, source=str(path))


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path, formats=["PNG", "JPEG", "WEBP"]) as im:
        return np.asarray(im.convert("RGB"))


def generation_distances(run_dir: str | Path, label: str, seed: int, subject_id: str) -> dict[str, Any]:
    """For each generation of (label, seed): ℓ2 to the nearest train crop and to the nearest holdout crop.

    Pixel ℓ2 as in Carlini et al. (USENIX Security 2023): sqrt(Σ(aᵢ−bᵢ)²/d), RGB in [0, 1], crops resized
    to the generation size. Returns ``{"train": array, "holdout": array, "group": [...], "files": [...]}``."""
    from workbench.generate import read_records
    from workbench.metrics.memorization import as_float, l2_matrix
    from workbench.subjects.store import load_subject

    folder = Path(run_dir) / "generations" / label / f"seed{seed}"
    records = [r for r in read_records(folder) if (folder / r.file).is_file()]
    if not records:
        raise FileNotFoundError(f"no generations in {folder}")
    subject = load_subject(subject_id)
    gens = [_decode(folder / r.file) for r in records]
    size = gens[0].shape[0]
    g = as_float(gens, size)
    out: dict[str, Any] = {"group": [r.group for r in records], "files": [r.file for r in records]}
    for split, crops in (("train", subject.train), ("holdout", subject.holdout)):
        out[split] = l2_matrix(g, as_float([_decode(p) for p in crops], size)).min(axis=1) if crops else np.array([])
    return out


def run_distances(run_dir: str | Path, results: dict | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`generation_distances` for every ok row of the run: ``{"label seed k": (train, holdout)}``."""
    results = results or load_results(run_dir)
    out = {}
    for row in results["rows"]:
        if row["status"] != "ok":
            continue
        d = generation_distances(run_dir, row["label"], row["seed"], results["run"]["subject_id"])
        out[f"{row['label']} seed {row['seed']}"] = (d["train"], d["holdout"])
    return out


def distance_summary(distances: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """A markdown table: per row, the median distance to the nearest train / holdout photo and their gap."""
    lines = ["| recipe | generations | median ℓ2 to train | median ℓ2 to holdout | median gap (holdout − train) |",
             "|---|---|---|---|---|"]
    for name, (train, hold) in distances.items():
        gap = np.median(hold - train) if len(train) and len(hold) else None
        lines.append(f"| {name} | {len(train)} | {format_num(float(np.median(train)) if len(train) else None)} | "
                     f"{format_num(float(np.median(hold)) if len(hold) else None)} | "
                     f"{format_num(None if gap is None else float(gap), 'signed')} |")
    return "\n".join(lines)


def mia_table(results: dict) -> str:
    """Markdown: AUC, advantage and TPR@1%FPR per attack and row, each ``value [ci] (n members/non-members)``."""
    lines = ["| recipe | seed | attack | AUC | advantage | TPR@1%FPR |", "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        if row["status"] != "ok":
            continue
        for attack in registry.attacks():
            cells = []
            for measure in MEASURES:
                m = row["metrics"].get(f"mia.{attack}.{measure}")
                if not m or m["value"] is None:
                    cells.append("—")
                    continue
                n = "/".join(str(x) for x in m["n"]) if isinstance(m["n"], list) else str(m["n"])
                ci = f" [{format_num(m['ci_low'])}, {format_num(m['ci_high'])}]" if m["ci_low"] is not None else ""
                cells.append(f"{format_num(m['value'])}{ci} ({n})")
            lines.append(f"| {row['label']} | {row['seed']} | {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def query_budget(results: dict, attacks: tuple[str, ...] | None = None) -> list[dict]:
    """Model (UNet) queries each attack costs against one personalised model, for this run's photos.

    Queries per photo as recorded in results.json (a row's optional ``mia[attack].queries_per_image``),
    else the attack's default from the registry (:data:`workbench.metrics.membership.ATTACKS`); one
    attack scores every member and non-member once."""
    from workbench.metrics.membership import ATTACKS

    n_images = results["run"]["n_train"] + results["run"]["n_holdout"]
    out = []
    for name in attacks or registry.attacks():
        recorded = [r["mia"][name]["queries_per_image"] for r in results["rows"]
                    if isinstance(r.get("mia"), dict) and isinstance(r["mia"].get(name), dict)
                    and "queries_per_image" in r["mia"][name]]
        per_image = recorded[0] if recorded else ATTACKS[name].params().queries()
        out.append({"attack": name, "queries_per_image": per_image, "images": n_images,
                    "queries_per_model": per_image * n_images, "source": "this run" if recorded else "defaults",
                    "reference": ATTACKS[name].reference})
    return out


def query_budget_markdown(results: dict) -> str:
    """:func:`query_budget` as a markdown table."""
    lines = ["| attack | queries per photo | photos | queries per model | from | reference |",
             "|---|---|---|---|---|---|"]
    for r in query_budget(results):
        lines.append(f"| {r['attack']} | {r['queries_per_image']} | {r['images']} | {r['queries_per_model']} | "
                     f"{r['source']} | {r['reference']} |")
    return "\n".join(lines)
