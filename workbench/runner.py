"""``workbench run SPEC.yaml``: intake → recipes → generation → metrics → report, one run folder per spec.

Stages are plain functions over plain data, each cached by content so a rerun (or a crashed run)
resumes where it stopped: intake is idempotent (photos stored by hash), each recipe's model lives in
the subject's store under a key hashing (backbone, recipe, params, training photos, seed, prompts)
and the engine resumes from its last checkpoint, generation skips images already written with the
same settings. One failing recipe is recorded with its error and the others go on.

Run folder::

    spec.json                 the resolved spec (every default filled in)
    run.json                  status per recipe and seed, timings, software versions
    results.json              per recipe row: every metric as {value, ci_low, ci_high, n}, ROC curves,
                              the closest generations; the run's metadata (workbench/report/schema.py)
    report.html               the self-contained privacy-risk report
    generations/<label>/seed<k>/   images + records.jsonl (recipe, prompt, group, seed, steps, sha256)
                              + metrics.json (that row's measurements, cached by content)
    errors.log                tracebacks of failed recipes (the user sees one line each)
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from workbench import paths
from workbench.errors import Interrupted
from workbench.lifecycle import manifest
from workbench.lifecycle.policy import set_retention
from workbench.spec import RecipeEntry, Spec, load_spec

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    run_dir: Path
    subject_id: str
    status: dict[str, dict] = field(default_factory=dict)  # "<label>/seed<k>" -> {"ok", ...}

    @property
    def ok(self) -> bool:
        return all(s.get("ok") for s in self.status.values())


def default_run_dir(spec: Spec) -> Path:
    digest = hashlib.sha256(json.dumps(spec.resolved(), sort_keys=True).encode()).hexdigest()[:10]
    return paths.runs_root() / f"{spec.name}-{spec.subject.id}-{digest}"


def backbone_resolution(spec: Spec) -> int:
    if spec.subject.resolution:
        return spec.subject.resolution
    from workbench.backbones.registry import resolve_backbone

    source = Path(resolve_backbone(spec.backbone))
    cfg = source / "unet" / "config.json"
    vae_cfg = source / "vae" / "config.json"
    if cfg.exists() and vae_cfg.exists():
        unet = json.loads(cfg.read_text())
        vae = json.loads(vae_cfg.read_text())
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    return 512  # hub ids of the SD 1.x family


def prepare_subject(spec: Spec, resolution: int):
    """Intake of the spec's subject (idempotent); returns the loaded Subject."""
    from workbench.errors import UserError
    from workbench.subjects.demo import demo_photos
    from workbench.subjects.intake import intake
    from workbench.subjects.store import load_subject

    sid = spec.subject.id
    if spec.subject.demo:
        photos = demo_photos(spec.subject.demo)
        sources = [p for p, _ in photos]
        splits = {p.name: split for p, split in photos}
    else:
        sources, splits = [Path(p) for p in spec.subject.photos], None
    report = intake(sources, sid, resolution=resolution, holdout_fraction=spec.subject.holdout_fraction,
                    splits=splits)
    subject = load_subject(sid)
    if not subject.train:
        raise UserError(f"subject {sid}: no training photos were accepted ({report.to_json()})")
    return subject, report


def protect_photos(spec: Spec, subject, device: str):
    """The subject's protected training photos (made once, then reused), for ``photos: protected`` entries."""
    from workbench.subjects.protect import protect_subject

    prompt = INSTANCE_PROMPT.format(identifier=spec.prompts.identifier, class_noun=spec.prompts.class_noun)
    return protect_subject(subject, spec.backbone, spec.subject.protection, device, prompt)


def model_key(spec: Spec, entry: RecipeEntry, subject, seed: int, train_images: list[Path]) -> str:
    from workbench.lifecycle.manifest import sha256_file
    from workbench.recipes.engine import early_stopping_patience

    params = entry.typed_params()
    ident = {
        "backbone": spec.backbone, "recipe": entry.name, "params": params.model_dump(mode="json"),
        "train": sorted(sha256_file(p) for p in train_images), "seed": seed,
        "identifier": spec.prompts.identifier, "class_noun": spec.prompts.class_noun,
        "resolution": subject.resolution,
    }
    if early_stopping_patience(params) is not None:  # the holdout photos select the model
        ident["holdout"] = sorted(sha256_file(p) for p in subject.holdout)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def train_recipe(spec: Spec, entry: RecipeEntry, subject, seed: int, device: str, protected=None,
                 should_stop=None):
    """Train (or reuse, or resume) one recipe for one seed; the model lives in the subject's store."""
    from workbench.recipes.engine import TrainJob
    from workbench.recipes.registry import get_recipe

    train_images = protected.paths if entry.photos == "protected" else subject.train
    key = model_key(spec, entry, subject, seed, train_images)
    job = TrainJob(
        base=spec.backbone, train_images=train_images, holdout_images=subject.holdout, subject_id=subject.id,
        out_dir=paths.subject_dir(subject.id) / "models" / f"{entry.name}-{key}",
        identifier=spec.prompts.identifier, class_noun=spec.prompts.class_noun, device=device,
        seed=seed, resolution=subject.resolution,
    )
    loop = {} if should_stop is None else {"should_stop": should_stop}
    return get_recipe(entry.name).train(job, entry.typed_params(), **loop)


def train_record(entry: RecipeEntry, result, protected) -> dict:
    """A row's ``train`` entry: steps run, time, loss, the photos it saw, and what the recipe recorded
    (step cap, early stopping, DP accounting)."""
    record = {"steps": result.steps, "seconds": round(result.seconds, 2), "final_loss": result.final_loss,
              "photos": entry.photos, "details": result.details}
    if entry.photos == "protected":
        record["protection"] = {k: v for k, v in protected.report.items() if k != "files"}
    return record


def generate_for(spec: Spec, entry: RecipeEntry, pipe, result, subject, seed: int, out: Path):
    """Sample the prompt suite from the personalised model, with the recipe's own identifier."""
    from workbench.generate import generate

    prompts = [
        (item.template.format(identifier=result.identifier, class_noun=spec.prompts.class_noun),
         item.group, item.index)
        for item in spec.prompt_suite()
    ]
    return generate(pipe, prompts, [seed], spec.images_per_prompt, spec.sampling.steps,
                    spec.sampling.guidance_scale, spec.sampling.batch_size, out, subject.id, entry.label)


def measure_for(spec: Spec, pipe, result, records, gen_dir: Path, run_dir: Path, ref, seed: int, subject_id: str):
    """Every metric of one row, cached in ``gen_dir/metrics.json`` by the content it was computed from."""
    from workbench.measure import measure_row, measurement_key

    prompt = INSTANCE_PROMPT.format(identifier=result.identifier, class_noun=spec.prompts.class_noun)
    key = measurement_key(records, str(result.artifact_dir), spec.metrics.model_dump(mode="json"), prompt)
    cache = gen_dir / "metrics.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["row"]
    row = measure_row(pipe, records, gen_dir, run_dir, ref, spec.metrics.encoders, spec.metrics.mia_attacks,
                      prompt, seed)
    _write_json(subject_id, cache, {"key": key, "row": row})
    return row


INSTANCE_PROMPT = "a photo of {identifier} {class_noun}"  # the engine's training caption (TrainJob default)


def _write_json(subject_id: str, path: Path, data: dict) -> None:
    text = json.dumps(data, indent=1, sort_keys=True, default=_jsonable) + "\n"
    manifest.write_bytes(subject_id, "record", path, text.encode())


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def run_experiment(spec: Spec, out: Path | None = None, progress=None, should_stop=None) -> RunOutcome:
    """Run every recipe × seed of ``spec``; ``progress(stage, fraction)`` is called between stages.

    ``should_stop()`` is polled after every training step: when true, training checkpoints and the run
    stops with :class:`~workbench.errors.Interrupted` (as does any Interrupted raised by ``progress``);
    nothing is written as a result, and an identical rerun resumes where it stopped."""
    import torch

    from workbench.device import resolve_device
    from workbench.measure import Reference, complete
    from workbench.recipes.artifacts import load_personalised

    progress = progress or (lambda stage, frac: None)
    run_dir = Path(out) if out else default_run_dir(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(spec.device)
    progress("intake", 0.0)
    set_retention(spec.subject.id, spec.retention)  # every artifact's deadline follows the spec
    subject, report = prepare_subject(spec, backbone_resolution(spec))
    outcome = RunOutcome(run_dir, subject.id)
    _write_json(subject.id, run_dir / "spec.json", spec.resolved())
    protected = None
    if any(entry.photos == "protected" for entry in spec.recipes):
        progress("protecting photos", 0.01)
        protected = protect_photos(spec, subject, device)
    progress("embedding the subject's photos", 0.02)
    ref = Reference.load(subject, spec.metrics.encoders)
    jobs = [(entry, seed) for seed in spec.seeds for entry in spec.recipes]
    started = time.time()
    rows = []
    for i, (entry, seed) in enumerate(jobs):
        name = f"{entry.label}/seed{seed}"
        progress(f"{name}: training", (i + 0.05) / len(jobs))
        t0 = time.time()
        row = {"label": entry.label, "recipe": entry.name, "seed": seed, "params": entry.params}
        try:
            result = train_recipe(spec, entry, subject, seed, device, protected, should_stop)
            pipe = load_personalised(spec.backbone, result.artifact_dir, device)
            progress(f"{name}: generating", (i + 0.4) / len(jobs))
            gen_dir = run_dir / "generations" / entry.label / f"seed{seed}"
            records = generate_for(spec, entry, pipe, result, subject, seed, gen_dir)
            progress(f"{name}: measuring", (i + 0.7) / len(jobs))
            measured = measure_for(spec, pipe, result, records, gen_dir, run_dir, ref, seed, subject.id)
            del pipe
            outcome.status[name] = {
                "ok": True, "recipe": entry.name, "seed": seed, "model": str(result.artifact_dir),
                "identifier": result.identifier, "train_steps": result.steps,
                "train_seconds": round(result.seconds, 2), "final_loss": result.final_loss,
                "images": len(records), "seconds": round(time.time() - t0, 2),
            }
            row |= {"status": "ok", "error": None, "train": train_record(entry, result, protected)} | measured
        except Interrupted:
            raise  # a cancel stops the whole run; it is not this recipe's failure
        except Exception as exc:  # noqa: BLE001 - one failed recipe never stops the others
            log.error("%s failed: %s", name, exc)
            with open(run_dir / "errors.log", "a", encoding="utf-8") as fh:
                fh.write(f"== {name}\n{traceback.format_exc()}\n")
            manifest.register(subject.id, "record", run_dir / "errors.log")
            error = f"{type(exc).__name__}: {exc}"
            outcome.status[name] = {"ok": False, "recipe": entry.name, "seed": seed, "error": error}
            row |= {"status": "failed", "error": error, "train": None, "roc": {}, "nearest": [],
                    "metrics": complete({}, "not measured: the recipe failed")}
        rows.append(row)
        _write_json(subject.id, run_dir / "run.json", _run_record(spec, outcome, report, started, device, torch))
    progress("report", 0.97)
    _write_json(subject.id, run_dir / "results.json", _results(spec, subject, rows, device, torch))
    publish(run_dir, spec)
    progress("done", 1.0)
    return outcome


def publish(run_dir: Path, spec: Spec) -> None:
    """The report (always) and the W&B mirror (as the spec's tracking says)."""
    from workbench.report.html import write_report
    from workbench.tracking import mirror_to_wandb

    write_report(run_dir)
    try:  # the run folder is the source of truth: a tracking failure must not fail a finished run
        mirror_to_wandb(run_dir, spec.tracking)
    except Exception as exc:  # noqa: BLE001
        log.error("W&B mirror failed (the run folder is complete): %s", exc)


def _results(spec: Spec, subject, rows: list[dict], device: str, torch) -> dict:
    from datetime import datetime, timezone

    from workbench import __version__
    from workbench.measure import metric_meta

    rows = sorted(rows, key=lambda r: (r["recipe"] != "none", r["seed"]))  # the control first
    spec_json = json.dumps(spec.resolved(), sort_keys=True).encode()
    return {
        "schema": 1,
        "run": {"name": spec.name, "subject_id": subject.id, "backbone": spec.backbone, "device": device,
                "seeds": list(spec.seeds), "n_train": len(subject.train), "n_holdout": len(subject.holdout),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "versions": {"workbench": __version__, "torch": torch.__version__,
                             "python": platform.python_version()},
                "spec_sha256": hashlib.sha256(spec_json).hexdigest()},
        "rows": rows,
        "meta": metric_meta(spec.metrics.encoders) | {"notes": [
            "members = the subject's train photos, non-members = holdout photos of the same person",
            "membership inference on latent models attacks the VAE latents (posterior mean x scaling factor)",
            "every metric: value with a 95% percentile-bootstrap interval and its sample size n",
        ] + _training_notes(spec)},
    }


def _training_notes(spec: Spec) -> list[str]:
    """What the report must say about how the models were trained, when it bears on the numbers."""
    from workbench.recipes.engine import early_stopping_patience

    notes = []
    typed = [entry.typed_params() for entry in spec.recipes]
    if any(early_stopping_patience(p) is not None for p in typed):
        notes.append("early stopping selects the model on the holdout photos' denoising loss; the same photos are "
                     "the non-members and the identity reference, so those rows are selected on them")
    if any(entry.photos == "protected" for entry in spec.recipes):
        notes.append("rows trained on protected photos are measured against the original (clean) photos: "
                     "members, extraction and identity references are the photos as taken")
    if any(entry.name == "dp_lora" for entry in spec.recipes):
        notes.append("record-level differential privacy (dp_lora) bounds what the model reveals about any one "
                     "training photo; it does not hide the identity that all the photos share")
    return notes


def _run_record(spec, outcome, report, started, device, torch) -> dict:
    from workbench import __version__

    return {
        "name": spec.name, "subject_id": outcome.subject_id, "status": outcome.status,
        "intake": {"accepted": len(report.accepted), "rejected": len(report.rejected)},
        "seconds": round(time.time() - started, 2), "device": device,
        "versions": {"workbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _cmd_run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = load_spec(args.spec)  # fails before any work, naming the field
    outcome = run_experiment(spec, args.out)
    print(json.dumps({"run_dir": str(outcome.run_dir), "status": outcome.status}, indent=1))
    return 0 if outcome.ok else 1


def add_commands(sub) -> None:
    p = sub.add_parser("run", help="run an experiment spec: intake, recipes, generation, metrics, report")
    p.add_argument("spec", help="experiment YAML, e.g. experiments/quickstart.yaml")
    p.add_argument("--out", type=Path, default=None, help="run folder (default under $WORKBENCH_HOME/runs)")
    p.set_defaults(func=_cmd_run)
