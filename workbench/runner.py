"""``workbench run SPEC.yaml``: intake → recipes → generation, one run folder per spec.

Stages are plain functions over plain data, each cached by content so a rerun (or a crashed run)
resumes where it stopped: intake is idempotent (photos stored by hash), each recipe's model lives in
the subject's store under a key hashing (backbone, recipe, params, training photos, seed, prompts)
and the engine resumes from its last checkpoint, generation skips images already written with the
same settings. One failing recipe is recorded with its error and the others go on.

Run folder::

    spec.json                 the resolved spec (every default filled in)
    run.json                  status per recipe and seed, timings, software versions
    generations/<label>/seed<k>/   images + records.jsonl (recipe, prompt, group, seed, steps, sha256)
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


def model_key(spec: Spec, entry: RecipeEntry, subject, seed: int) -> str:
    from workbench.lifecycle.manifest import sha256_file

    ident = {
        "backbone": spec.backbone, "recipe": entry.name, "params": entry.typed_params().model_dump(mode="json"),
        "train": sorted(sha256_file(p) for p in subject.train), "seed": seed,
        "identifier": spec.prompts.identifier, "class_noun": spec.prompts.class_noun,
        "resolution": subject.resolution,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def train_recipe(spec: Spec, entry: RecipeEntry, subject, seed: int, device: str):
    """Train (or reuse, or resume) one recipe for one seed; the model lives in the subject's store."""
    from workbench.recipes.engine import TrainJob
    from workbench.recipes.registry import get_recipe

    key = model_key(spec, entry, subject, seed)
    job = TrainJob(
        base=spec.backbone, train_images=subject.train, subject_id=subject.id,
        out_dir=paths.subject_dir(subject.id) / "models" / f"{entry.name}-{key}",
        identifier=spec.prompts.identifier, class_noun=spec.prompts.class_noun, device=device,
        seed=seed, resolution=subject.resolution,
    )
    return get_recipe(entry.name).train(job, entry.typed_params())


def generate_for(spec: Spec, entry: RecipeEntry, result, subject, seed: int, device: str, out: Path):
    """Sample the prompt suite from the personalised model, with the recipe's own identifier."""
    from workbench.generate import generate
    from workbench.recipes.artifacts import load_personalised

    pipe = load_personalised(spec.backbone, result.artifact_dir, device)
    prompts = [
        (item.template.format(identifier=result.identifier, class_noun=spec.prompts.class_noun),
         item.group, item.index)
        for item in spec.prompt_suite()
    ]
    return generate(pipe, prompts, [seed], spec.images_per_prompt, spec.sampling.steps,
                    spec.sampling.guidance_scale, spec.sampling.batch_size, out, subject.id, entry.label)


def _write_json(subject_id: str, path: Path, data: dict) -> None:
    manifest.write_bytes(subject_id, "record", path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def run_experiment(spec: Spec, out: Path | None = None, progress=None) -> RunOutcome:
    """Run every recipe × seed of ``spec``; ``progress(stage, fraction)`` is called between stages."""
    import torch

    from workbench.device import resolve_device

    progress = progress or (lambda stage, frac: None)
    run_dir = Path(out) if out else default_run_dir(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(spec.device)
    progress("intake", 0.0)
    set_retention(spec.subject.id, spec.retention)  # every artifact's deadline follows the spec
    subject, report = prepare_subject(spec, backbone_resolution(spec))
    outcome = RunOutcome(run_dir, subject.id)
    _write_json(subject.id, run_dir / "spec.json", spec.resolved())
    jobs = [(entry, seed) for seed in spec.seeds for entry in spec.recipes]
    started = time.time()
    for i, (entry, seed) in enumerate(jobs):
        name = f"{entry.label}/seed{seed}"
        progress(f"{name}: training", (i + 0.1) / len(jobs))
        t0 = time.time()
        try:
            result = train_recipe(spec, entry, subject, seed, device)
            progress(f"{name}: generating", (i + 0.6) / len(jobs))
            records = generate_for(spec, entry, result, subject, seed, device,
                                   run_dir / "generations" / entry.label / f"seed{seed}")
            outcome.status[name] = {
                "ok": True, "recipe": entry.name, "seed": seed, "model": str(result.artifact_dir),
                "identifier": result.identifier, "train_steps": result.steps,
                "train_seconds": round(result.seconds, 2), "final_loss": result.final_loss,
                "images": len(records), "seconds": round(time.time() - t0, 2),
            }
        except Exception as exc:  # noqa: BLE001 - one failed recipe never stops the others
            log.error("%s failed: %s", name, exc)
            with open(run_dir / "errors.log", "a", encoding="utf-8") as fh:
                fh.write(f"== {name}\n{traceback.format_exc()}\n")
            outcome.status[name] = {"ok": False, "recipe": entry.name, "seed": seed,
                                    "error": f"{type(exc).__name__}: {exc}"}
        _write_json(subject.id, run_dir / "run.json", _run_record(spec, outcome, report, started, device, torch))
    if (run_dir / "errors.log").exists():
        manifest.register(subject.id, "record", run_dir / "errors.log")
    progress("done", 1.0)
    return outcome


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
    p = sub.add_parser("run", help="run an experiment spec: intake, recipes, generation")
    p.add_argument("spec", help="experiment YAML, e.g. experiments/quickstart.yaml")
    p.add_argument("--out", type=Path, default=None, help="run folder (default under $WORKBENCH_HOME/runs)")
    p.set_defaults(func=_cmd_run)
