"""The run folder is the source of truth; Weights & Biases is a mirror of it, offline and private by default.

:func:`mirror_to_wandb` reads a finished run folder (``results.json``, ``spec.json``) and writes one W&B
run: the config (the resolved spec without paths or names), the metrics of every (recipe, seed) row as
flat keys (``lora/seed0/mia.loss.auc`` and its ``/ci_low``, ``/ci_high``, ``/n``, ``/delta_vs_none``),
a W&B Table of the scorecard and the figures as native W&B charts (tables of numbers).

Privacy (docs/PRIVACY.md, Tracking):

- ``tracking.wandb``: ``off`` → nothing; ``offline`` (default) → a local offline run that only
  ``wandb sync`` uploads; ``online`` → the user's own account. ``WANDB_MODE=disabled`` also turns it off.
- No code, git state, machine info, system metrics, ``requirements.txt`` or console capture
  (:func:`privacy_settings`); pseudonymous ids only (the subject id, never a name); no file paths in the
  config; no image file at all unless ``tracking.log_images`` is true (then the closest generations and
  the report figures are logged as ``wandb.Image``; training photos never are).
- Everything W&B writes stays under ``$WORKBENCH_HOME/wandb``: each of ``WANDB_DIR``, ``WANDB_CACHE_DIR``,
  ``WANDB_DATA_DIR``, ``WANDB_CONFIG_DIR``, ``WANDB_ARTIFACT_DIR`` that is unset is pointed there while the
  mirror runs (:func:`wandb_env`), so nothing lands in the home folder. Every file the mirror creates or
  changes there (the offline run folder, the staged table artifacts, wandb-core's log) is registered in
  the subject's manifest (kind ``wandb``), so retention and erasure delete it.

One local detail W&B cannot be told to omit: each logged Table is staged as an artifact file under
``$WANDB_DATA_DIR/artifacts/staging`` and the offline log (``run-*.wandb``) records that local path, which
``wandb sync`` reads the file from. The path is not part of what W&B stores (artifact manifests omit
``local_path``); the tests decode the offline log (``tests/wandb_helpers.py``) and check that no other path
is recorded.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench import paths
from workbench.lifecycle import manifest
from workbench.metrics import registry
from workbench.report.plots import frontier_y_key
from workbench.report.scorecard import main_columns, mia_columns, scorecard
from workbench.results import load_run

log = logging.getLogger(__name__)

WANDB_ENV_DIRS = {  # variable → sub-folder of $WORKBENCH_HOME/wandb used when the variable is unset
    "WANDB_DIR": "",
    "WANDB_CACHE_DIR": "cache",
    "WANDB_DATA_DIR": "data",
    "WANDB_CONFIG_DIR": "config",
    "WANDB_ARTIFACT_DIR": "artifacts",
}
POINTER_FILE = "wandb.json"  # written into the run folder: which W&B run mirrors it
# wandb.Settings that keep a run private; fields the installed wandb lacks are skipped (see privacy_settings)
PRIVATE_SETTINGS: dict[str, Any] = {
    "save_code": False,  # never upload the notebook/script source
    "disable_code": True,  # ... nor record the code
    "disable_git": True,  # no git remote, commit or diff
    "x_disable_machine_info": True,  # no host name, CPU/GPU inventory
    "x_disable_meta": True,  # no wandb-metadata.json (program path, args, user name, host)
    "x_disable_stats": True,  # no system-metrics sampling (it also probes cloud metadata endpoints)
    "x_save_requirements": False,  # no pip freeze
    "console": "off",  # no stdout/stderr capture (it can hold paths and names)
    "silent": True,  # no console chatter from wandb itself
    "program": "workbench",  # what W&B records as the program, instead of a script path
    "host": "workbench",  # what W&B records as the host name (default: this machine's name)
}
REQUIRED_SETTINGS = ("save_code", "disable_git", "console")


# --- Environment and settings ----------------------------------------------------------------------

def wandb_dirs() -> dict[str, Path]:
    """Each ``WANDB_*_DIR``'s folder: its variable's value, or a folder under ``$WORKBENCH_HOME/wandb`` when unset.

    ``WANDB_DIR``'s default is the lifecycle's W&B store (:func:`workbench.lifecycle.stores.stores`)."""
    root = paths.home() / "wandb"
    return {var: Path(os.environ.get(var) or (root / sub if sub else root)).expanduser().resolve()
            for var, sub in WANDB_ENV_DIRS.items()}


@contextmanager
def wandb_env():
    """Set the unset ``WANDB_*_DIR`` variables (:func:`wandb_dirs`) for the duration of the block, then restore
    them, so one mirror never leaves another data root's folders in the environment."""
    dirs = wandb_dirs()
    saved = {var: os.environ.get(var) for var in dirs}
    try:
        for var, folder in dirs.items():
            folder.mkdir(parents=True, exist_ok=True)
            os.environ[var] = str(folder)
        yield dirs
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def privacy_settings(**extra: Any):
    """``wandb.Settings`` with :data:`PRIVATE_SETTINGS` (those this wandb version knows) and ``extra``."""
    import wandb

    known = wandb.Settings.model_fields
    missing = [k for k in REQUIRED_SETTINGS if k not in known]
    if missing:
        raise RuntimeError(f"this wandb version ({wandb.__version__}) lacks settings {missing}; the workbench cannot "
                           "keep a W&B run private with it. Install wandb>=0.31 or set tracking.wandb: off")
    skipped = [k for k in PRIVATE_SETTINGS if k not in known]
    if skipped:
        log.warning("wandb %s has no settings %s; W&B may record that information", wandb.__version__, skipped)
    return wandb.Settings(**{k: v for k, v in {**PRIVATE_SETTINGS, **extra}.items() if k in known})


# --- What is mirrored ------------------------------------------------------------------------------

_PATHLIKE = re.compile(r"(^[~/.]|^[A-Za-z]:\\|/.+/|\\)")


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _scrub(value: Any, names: list[str]) -> Any:
    """Drop path-like strings and strings mentioning a person's name, at any depth."""
    if isinstance(value, dict):
        return {k: _scrub(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, names) for v in value]
    if isinstance(value, str):
        if _PATHLIKE.search(value):
            return "<path removed>"
        if any(n and n in _normal(value) for n in names):
            return "<name removed>"
    return value


def person_names(spec: dict | None) -> list[str]:
    """Normalised names that must never reach W&B (the demo person of the spec)."""
    demo = (spec or {}).get("subject", {}).get("demo")
    return [_normal(demo)] if demo else []


def safe_backbone(backbone: str) -> str:
    """Registry names and hub ids as they are; a local folder as a hash of its path (paths may hold names)."""
    import hashlib

    from workbench.backbones.registry import BACKBONES, HUB_ID

    if backbone in BACKBONES or HUB_ID.match(backbone) and not Path(backbone).exists():
        return backbone
    return "local-folder-" + hashlib.sha256(backbone.encode()).hexdigest()[:12]


def safe_config(results: dict, spec: dict | None) -> dict:
    """The resolved spec without photos, demo name or paths, plus the run's sample sizes and versions."""
    run = results["run"]
    cfg: dict[str, Any] = {}
    if spec:
        cfg = {k: v for k, v in spec.items() if k not in ("subject", "backbone")}
        subject = spec.get("subject", {})
        cfg["subject"] = {k: subject[k] for k in ("id", "holdout_fraction", "resolution") if k in subject}
        cfg["subject"]["source"] = "demo" if subject.get("demo") else "photos"
    cfg.update({
        "backbone": safe_backbone(run["backbone"]), "subject_id": run["subject_id"], "device": run["device"],
        "seeds": run["seeds"], "n_train": run["n_train"], "n_holdout": run["n_holdout"],
        "versions": run["versions"], "spec_sha256": run["spec_sha256"], "results_schema": results["schema"],
        "recipe_params": {r["label"]: r["params"] for r in results["rows"]},
    })
    return _scrub(cfg, person_names(spec))


def flat_metrics(results: dict) -> dict[str, Any]:
    """``{label}/seed{k}/{metric}`` = value, with ``/ci_low``, ``/ci_high``, ``/n`` and ``/delta_vs_none``."""
    card = scorecard(results)
    out: dict[str, Any] = {}
    for row in card.rows:
        prefix = f"{row.label}/seed{row.seed}"
        r = results["rows"][row.index]
        out[f"{prefix}/status"] = r["status"]
        out[f"{prefix}/risk_grade"] = row.grade.level
        for k, v in (r["train"] or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):  # steps, seconds, loss; records stay in the run
                out[f"{prefix}/train.{k}"] = v
        for key, m in r["metrics"].items():
            if m["value"] is None:
                continue
            out[f"{prefix}/{key}"] = m["value"]
            for f in ("ci_low", "ci_high"):
                if m[f] is not None:
                    out[f"{prefix}/{key}/{f}"] = m[f]
            if isinstance(m["n"], list):
                out[f"{prefix}/{key}/n_members"], out[f"{prefix}/{key}/n_nonmembers"] = m["n"]
            else:
                out[f"{prefix}/{key}/n"] = m["n"]
            cell = row.cells.get(key)
            if cell is not None and cell.delta is not None:
                out[f"{prefix}/{key}/delta_vs_none"] = cell.delta.value
    return out


def scorecard_table(results: dict):
    """The scorecard as a ``wandb.Table``: one row per (recipe, seed), value/CI/n/Δ columns per metric."""
    import wandb

    card = scorecard(results)
    keys = list(dict.fromkeys(main_columns() + mia_columns())) + [c.key for c in card.other_columns]
    columns = ["recipe", "label", "seed", "status", "risk_grade"]
    for key in keys:
        columns += [key, f"{key} ci_low", f"{key} ci_high", f"{key} n"]
        if registry.is_leakage(key):
            columns.append(f"{key} delta_vs_none")
    data = []
    for row in card.rows:
        line: list[Any] = [row.recipe, row.label, row.seed, row.status, row.grade.level]
        for key in keys:
            cell = row.cells[key]
            line += [cell.value.value if cell.value else None, cell.ci_low.value if cell.ci_low else None,
                     cell.ci_high.value if cell.ci_high else None, "/".join(n.text for n in cell.n) or None]
            if registry.is_leakage(key):
                line.append(cell.delta.value if cell.delta else None)
        data.append(line)
    return wandb.Table(columns=columns, data=data)


def charts(results: dict) -> dict[str, Any]:
    """The report figures as native W&B charts (vega specs over tables of numbers, no image files)."""
    import wandb

    out: dict[str, Any] = {}
    rows = [r for r in results["rows"] if r["status"] == "ok"]
    for attack in registry.attacks():
        curves = [(f"{r['label']}/seed{r['seed']}", r["roc"][attack]) for r in rows if attack in r["roc"]]
        if curves:
            out[f"charts/roc_{attack}"] = wandb.plot.line_series(
                xs=[c["fpr"] for _, c in curves], ys=[c["tpr"] for _, c in curves], keys=[n for n, _ in curves],
                title=f"MIA ROC ({attack}); diagonal = chance", xname="false-positive rate")
    y_key = frontier_y_key(results) or "identity.ism_holdout"
    for x_key in ("mia.loss.auc", "memorization.extraction_rate"):
        pts = [[f"{r['label']}/seed{r['seed']}", r["metrics"][x_key]["value"], r["metrics"][y_key]["value"]]
               for r in rows if r["metrics"].get(x_key, {}).get("value") is not None
               and r["metrics"].get(y_key, {}).get("value") is not None]
        if pts:
            table = wandb.Table(columns=["recipe", x_key, y_key], data=pts)
            out[f"charts/frontier_{x_key}"] = wandb.plot.scatter(
                table, x_key, y_key, title=f"{y_key} vs {x_key} (CIs in the scorecard table)")
    return out


def images(results: dict, run_dir: Path) -> dict[str, Any]:
    """Only with ``tracking.log_images``: the closest generations and the report figures."""
    import wandb
    from PIL import Image

    from workbench.report.html import PLOTS_DIR, resolve_image

    out: dict[str, Any] = {}
    for r in results["rows"]:
        pics = []
        for item in r["nearest"] if r["status"] == "ok" else []:
            path = resolve_image("generated", item["generated"], run_dir)
            if path is not None:
                with Image.open(path, formats=["PNG", "JPEG", "WEBP"]) as im:
                    caption = f"l2 to nearest training photo {item['l2']:.3f}"
                    pics.append(wandb.Image(im.convert("RGB"), caption=caption))
        if pics:
            out[f"generations/{r['label']}/seed{r['seed']}"] = pics
    for png in sorted((Path(run_dir) / PLOTS_DIR).glob("*.png")):
        with Image.open(png, formats=["PNG"]) as im:
            out[f"figures/{png.stem}"] = wandb.Image(im.convert("RGB"))
    return out


# --- The mirror ------------------------------------------------------------------------------------

def _snapshot(folders: list[Path]) -> dict[Path, tuple[int, int]]:
    out = {}
    for folder in dict.fromkeys(folders):
        if folder.is_dir():
            for p in folder.rglob("*"):
                if p.is_file() and not p.is_symlink():
                    st = p.stat()
                    out[p] = (st.st_size, st.st_mtime_ns)
    return out


def _register(subject_id: str, path: Path) -> None:
    try:
        manifest.register_external(subject_id, "wandb", path)
    except ValueError:  # outside every store (a WANDB_*_DIR set elsewhere): recorded by absolute path
        log.warning("%s lies outside the workbench stores; registered by path, but erasure scans will not "
                    "look there", path)
        manifest.register(subject_id, "wandb", path)


def mirror_to_wandb(run_dir: str | Path, tracking) -> str | None:
    """Mirror a run folder to W&B; ``tracking``: the spec's TrackingSpec (or the Spec itself).

    Returns the offline run folder (offline) or the run URL (online); None when tracking is off."""
    tracking = getattr(tracking, "tracking", tracking)
    if tracking is None or tracking.wandb == "off":
        return None
    if os.environ.get("WANDB_MODE", "").lower() == "disabled":
        log.info("WANDB_MODE=disabled: not mirroring %s", run_dir)
        return None
    run_dir = Path(run_dir)
    results, spec = load_run(run_dir)
    sid = results["run"]["subject_id"]
    names = person_names(spec)
    run_name = _scrub(f"{results['run']['name']}-{sid}", names)
    run_name = run_name if run_name.startswith(results["run"]["name"]) else f"run-{sid}"

    import wandb

    with wandb_env() as dirs:
        before = _snapshot(list(dirs.values()))
        run = wandb.init(project=tracking.project, name=run_name, group=_scrub(results["run"]["name"], names),
                         job_type="workbench-run", config=safe_config(results, spec), dir=str(dirs["WANDB_DIR"]),
                         mode="online" if tracking.wandb == "online" else "offline", settings=privacy_settings(),
                         reinit="create_new")
        try:
            run.log({**flat_metrics(results), "scorecard": scorecard_table(results), **charts(results)})
            if tracking.log_images:
                run.log(images(results, run_dir))
            run_folder = Path(run.dir).parent
            run_id, url = run.id, (run.url if tracking.wandb == "online" else None)
        finally:
            run.finish()
        owners = results["run"].get("subjects") or [sid]  # a cohort's mirror holds every person's numbers
        for owner in owners:
            _register(owner, run_folder)
        for path, sig in _snapshot(list(dirs.values())).items():
            if before.get(path) != sig and not path.is_relative_to(run_folder):
                for owner in owners:
                    _register(owner, path)
    pointer = {"mode": tracking.wandb, "project": tracking.project, "run_id": run_id, "run_name": run_name,
               "offline_run": str(run_folder) if url is None else None, "url": url}
    manifest.write_bytes(results["run"].get("subjects") or sid, "wandb", run_dir / POINTER_FILE,
                         (json.dumps(pointer, indent=1) + "\n").encode())
    log.info("W&B %s run %s: %s", tracking.wandb, run_id, url or run_folder)
    return url or str(run_folder)


def mirror_status(run_dir: str | Path) -> dict:
    """Where a run's W&B mirror is: ``{"mode": off|offline|online|missing, "url", "offline_run", "project"}``.

    ``off``: the spec turned tracking off; ``missing``: tracking was on but no mirror was written
    (``WANDB_MODE=disabled``, or the mirror failed: the run folder is complete either way)."""
    results, spec = load_run(run_dir)
    wanted = ((spec or {}).get("tracking") or {}).get("wandb", "offline")
    pointer = Path(run_dir) / POINTER_FILE
    if wanted == "off":
        return {"mode": "off", "url": None, "offline_run": None, "project": None}
    if not pointer.is_file():
        return {"mode": "missing", "url": None, "offline_run": None, "project": None}
    data = json.loads(pointer.read_text(encoding="utf-8"))
    return {"mode": data.get("mode"), "url": data.get("url"), "offline_run": data.get("offline_run"),
            "project": data.get("project")}
