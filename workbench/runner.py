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
                              the closest generations; the run's metadata (workbench/results.py)
    report.html               the self-contained privacy-risk report
    generations/<label>/seed<k>/   images + records.jsonl (recipe, prompt, group, seed, steps, sha256)
                              + metrics.json (that row's measurements, cached by content)
    errors.log                tracebacks of failed recipes (the user sees one line each)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench import paths, records
from workbench.backbones.registry import backbone_resolution
from workbench.errors import Interrupted
from workbench.lifecycle import manifest, sealed
from workbench.lifecycle.erasure import erasure_requested, working_on
from workbench.lifecycle.policy import set_retention
from workbench.spec import RecipeEntry, Spec

try:
    import fcntl  # POSIX: serialise writers in concurrent processes
except ImportError:  # pragma: no cover
    fcntl = None

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
    return paths.runs_root() / f"{spec.name}-{spec.run_subject_id}-{digest}"


def prepare_subject(spec: Spec, resolution: int, sub=None):
    """Intake of a subject of the spec (``sub``; default the spec's one subject), idempotent, then the random
    member/non-member split of every accepted photo (:func:`workbench.subjects.split.draw_split`)
    → (Subject, intake report, Split)."""
    from workbench.errors import UserError
    from workbench.subjects.demo import subject_sources
    from workbench.subjects.intake import intake
    from workbench.subjects.split import draw_split
    from workbench.subjects.store import Subject, SubjectStore

    sub = sub or spec.subject
    sources, splits = subject_sources(sub.demo, sub.photos)
    report = intake(sources, sub.id, resolution=resolution, splits=splits, upscale=sub.upscale)
    store = SubjectStore(sub.id)
    crops = {e["sha256"]: (store.root / e["crop"]).resolve() for e in (store.read_record() or {}).get("accepted", [])}
    if len(crops) < 2:
        reasons = Counter(r.reason for r in report.rejected)
        why = "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common(3)) or "no photos found"
        raise UserError(f"subject {sub.id}: {len(crops)} photo(s) accepted at {resolution} px, at least 2 are needed "
                        f"(members and non-members). Rejected: {why}")
    split = draw_split(list(crops), sub.members, sub.split_seed, sub.max_non_members, sub.holdout_fraction)
    subject = Subject(sub.id, resolution, [crops[d] for d in split.members], [crops[d] for d in split.non_members])
    return subject, report, split


def protect_photos(spec: Spec, subject, device: str, protection=None):
    """The subject's protected training photos (made once, then reused), for ``photos: protected`` entries."""
    from workbench.subjects.protect import protect_subject

    prompt = INSTANCE_PROMPT.format(identifier=spec.prompts.identifier, class_noun=spec.prompts.class_noun)
    return protect_subject(subject, spec.backbone, protection or spec.subject.protection, device, prompt)


def train_job(spec: Spec, entry: RecipeEntry, subject, seed: int, device: str, protected=None, **job_args):
    """The row's training job, its folder in the subject's model store named by the job's content key."""
    from workbench.recipes.engine import TrainJob

    train_images = protected.paths if entry.photos == "protected" else subject.train
    return TrainJob(
        base=spec.backbone, train_images=train_images, holdout_images=subject.holdout, subject_id=subject.id,
        identifier=spec.prompts.identifier, class_noun=spec.prompts.class_noun, device=device,
        seed=seed, resolution=subject.resolution, **job_args,
    ).in_store(entry.name, entry.typed_params())


def train_recipe(spec: Spec, entry: RecipeEntry, subject, seed: int, device: str, protected=None,
                 should_stop=None, **job_args):
    """Train (or reuse, or resume) one recipe for one seed; the model lives in the subject's store.

    Two processes training the same content key (two Ray tasks of rows that differ only in their label)
    take turns on a lock next to the model folder: the second one reuses the first one's model."""
    from workbench.recipes.registry import get_recipe

    job = train_job(spec, entry, subject, seed, device, protected, **job_args)
    loop = {} if should_stop is None else {"should_stop": should_stop}
    with _file_lock(paths.erasure_journal_dir() / "locks" / f"{subject.id}.{job.out_dir.name}.lock"):
        sealed.pull(job.out_dir)  # an encrypted subject: what another process trained there is decrypted first
        try:
            return get_recipe(entry.name).train(job, entry.typed_params(), **loop)
        finally:
            sealed.flush(job.out_dir)  # ... and what this one trained is sealed before the lock is released


@contextmanager
def _file_lock(path: Path):
    """An exclusive ``flock`` on ``path`` for the block (across processes; released if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def train_record(entry: RecipeEntry, result, protected) -> dict:
    """A row's ``train`` entry: steps run, time, loss, the photos it saw, and the typed records
    (:mod:`workbench.records`) of what the recipe and the defences did, keyed by kind."""
    from workbench.subjects.protect import ProtectionRecord

    details = dict(result.details)
    if entry.photos == "protected":
        details |= records.dump(ProtectionRecord.from_report(protected.report))
    return {"steps": result.steps, "seconds": round(result.seconds, 2), "final_loss": result.final_loss,
            "photos": entry.photos, "details": details}


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


def measure_for(spec: Spec, pipe, result, records, gen_dir: Path, run_dir: Path, ref, seed: int, subject_id: str,
                device: str = "cpu"):
    """Every metric of one row, cached in ``gen_dir/metrics.json`` by the content it was computed from.

    The attacks are calibrated against the untouched base scored under the plain instance prompt (the
    ``none`` row's own prompt, so its calibrated scores are exactly 0)."""
    from workbench.measure import measure_row, measurement_key

    prompt = INSTANCE_PROMPT.format(identifier=result.identifier, class_noun=spec.prompts.class_noun)
    key = measurement_key(records, str(sealed.at_rest(result.artifact_dir)), spec.metrics.model_dump(mode="json"),
                          prompt)
    cache = gen_dir / "metrics.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["row"]
    attacks = spec.metrics.mia_attacks
    base_prompt = INSTANCE_PROMPT.format(identifier=spec.prompts.identifier, class_noun=spec.prompts.class_noun)
    reference = ref.mia_reference(spec.backbone, device, base_prompt, attacks, seed) if attacks else None
    row = measure_row(pipe, records, gen_dir, run_dir, ref, spec.metrics.encoders, attacks, prompt, seed, reference)
    if "finextract" in spec.metrics.extraction_attacks:  # extraction from the model file itself (slow)
        from workbench.metrics.finextract import measure_extraction

        flat, detail = measure_extraction(result.artifact_dir, ref.train, ref.holdout, gen_dir, spec.backbone,
                                          spec.metrics.finextract, device, spec.metrics.encoders[0], subject_id,
                                          run_dir)
        row["metrics"] |= flat
        row["extraction"] = {"finextract": detail}
    _write_json(subject_id, cache, {"key": key, "row": row})
    return row


INSTANCE_PROMPT = "a photo of {identifier} {class_noun}"  # the engine's training caption (TrainJob default)


def _write_json(owners: str | list[str], path: Path, data: dict) -> None:
    """Write a run file and register it for erasure with every person whose data it holds."""
    text = json.dumps(data, indent=1, sort_keys=True, default=_jsonable) + "\n"
    manifest.write_bytes(owners, "record", path, text.encode())


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


@dataclass
class Person:
    """One person of the run, prepared once: photos taken in and split, protected copies, references."""

    subject: object  # workbench.subjects.store.Subject (train = members, holdout = non-members)
    report: object  # the intake report
    split: object  # workbench.subjects.split.Split
    protected: object | None
    ref: object  # workbench.measure.Reference


def prepare_person(spec: Spec, sub, device: str, progress) -> Person:
    from workbench.measure import Reference

    with working_on(sub.id, must_exist=False, decrypt=False):  # an erasure of the person waits (or refuses this)
        progress(f"{sub.id}: intake", None)
        set_retention(sub.id, spec.retention)  # every artifact's deadline follows the spec (and its encryption)
    with working_on(sub.id, must_exist=False):  # encrypted: opened as a working copy (lifecycle/sealed.py)
        subject, report, split = prepare_subject(spec, backbone_resolution(spec.backbone, sub.resolution), sub)
        protected = None
        if any(entry.photos == "protected" for entry in spec.recipes):
            progress(f"{sub.id}: protecting photos", None)
            protected = protect_photos(spec, subject, device, sub.protection)
        progress(f"{sub.id}: embedding the photos", None)
        ref = Reference.load(subject, spec.metrics.encoders)
    return Person(subject, report, split, protected, ref)


def load_person(spec: Spec, sub, split, device: str) -> Person:
    """The person as :func:`prepare_person` made them, read back without writing anything (a Ray task of
    one of their rows): the accepted crops of the intake record, ``split`` (the prepared person's, so the
    same members and non-members in the same order), the protected photos already made, the references."""
    from workbench.measure import Reference
    from workbench.subjects.store import Subject, SubjectStore

    with working_on(sub.id):
        store = SubjectStore(sub.id)
        crops = {e["sha256"]: (store.root / e["crop"]).resolve()
                 for e in (store.read_record() or {}).get("accepted", [])}
        resolution = backbone_resolution(spec.backbone, sub.resolution)
        subject = Subject(sub.id, resolution, [crops[d] for d in split.members], [crops[d] for d in split.non_members])
        protected = None
        if any(entry.photos == "protected" for entry in spec.recipes):
            protected = protect_photos(spec, subject, device, sub.protection)  # made by prepare_person: reused
        ref = Reference.load(subject, spec.metrics.encoders)
    return Person(subject, None, split, protected, ref)


def row_name(spec: Spec, subject_id: str, entry: RecipeEntry, seed: int) -> str:
    return (f"{subject_id}/" if spec.cohort is not None else "") + f"{entry.label}/seed{seed}"


def row_dir(spec: Spec, run_dir: Path, subject_id: str, entry: RecipeEntry, seed: int) -> Path:
    return run_dir / "generations" / (subject_id if spec.cohort is not None else "") / entry.label / f"seed{seed}"


def write_owned(owners: list[str], path: Path, data: dict, prepared=()) -> None:
    """A run file of the driver, written only while none of its people is being erased, and none of the
    ``prepared`` ones (taken in earlier in this run) has been erased since: :class:`ErasureInProgress`."""
    later = [o for o in owners if o not in prepared]
    with working_on(later, must_exist=False, decrypt=False), working_on(list(prepared), decrypt=False):
        _write_json(owners, path, data)


def failed_row(row: dict, error: str) -> dict:
    """A row that produced no model: its error, no measurements."""
    from workbench.measure import complete

    return row | {"status": "failed", "error": error, "train": None, "roc": {}, "nearest": [],
                  "metrics": complete({}, "not measured: the recipe failed")}


def run_experiment(spec: Spec, out: Path | None = None, progress=None, should_stop=None,
                   executor: str | None = None, address: str | None = None) -> RunOutcome:
    """Run every person × recipe × seed of ``spec``; ``progress(stage, fraction)`` is called between stages.

    ``should_stop()`` is polled after every training step: when true, training checkpoints and the run
    stops with :class:`~workbench.errors.Interrupted` (as does any Interrupted raised by ``progress``);
    nothing is written as a result, and an identical rerun resumes where it stopped. A cohort runs one
    person after the other (one model per person per recipe) and adds the pooled statistics.

    ``executor`` / ``address`` override the spec's ``execution``: ``local`` runs here, in order
    (:func:`run_local`); ``ray`` runs each row as a Ray task (:mod:`workbench.executors`). Both give the
    same results.json."""
    from workbench.executors import get_executor

    run = get_executor(executor or spec.execution.executor)
    return run(spec, out, progress, should_stop, address=address or spec.execution.address)


def run_local(spec: Spec, out: Path | None = None, progress=None, should_stop=None) -> RunOutcome:
    """The local executor: every row in this process, one after the other."""
    import torch

    from workbench.device import resolve_device

    report_progress = progress or (lambda stage, frac: None)
    run_dir = Path(out) if out else default_run_dir(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(spec.device)
    people = spec.subjects()
    owners = [sub.id for sub in people]  # every file of the run folder belongs to each person in it
    jobs = [(k, entry, seed) for k in range(len(people)) for seed in spec.seeds for entry in spec.recipes]
    outcome = RunOutcome(run_dir, spec.run_subject_id)
    started, rows, splits, person, current = time.time(), [], {}, None, None
    for i, (k, entry, seed) in enumerate(jobs):
        def stage(text, frac, i=i):
            report_progress(text, (i + (frac or 0.0)) / len(jobs))

        if current != k:
            person, current = prepare_person(spec, people[k], device, stage), k
            if not splits:
                write_owned(owners, run_dir / "spec.json", spec.resolved(), [person.subject.id])
            splits[person.subject.id] = person.split
            write_owned(owners, run_dir / "split.json", {sid: sp.record() for sid, sp in splits.items()}, splits)
        name = row_name(spec, person.subject.id, entry, seed)
        gen_dir = row_dir(spec, run_dir, person.subject.id, entry, seed)
        row = run_row(spec, entry, seed, person, device, run_dir, gen_dir, name, outcome, owners, should_stop, stage)
        rows.append(row)
        write_owned(owners, run_dir / "run.json", _run_record(spec, outcome, started, device, torch), splits)
    report_progress("report", 0.97)
    write_owned(owners, run_dir / "results.json", _results(spec, splits, rows, device, torch), splits)
    with working_on(owners):
        publish(run_dir, spec)
    report_progress("done", 1.0)
    return outcome


def run_row(spec: Spec, entry: RecipeEntry, seed: int, person: Person, device: str, run_dir: Path, gen_dir: Path,
            name: str, outcome: RunOutcome, owners: list[str], should_stop, stage, **job_args) -> dict:
    """One (person, recipe, seed) row: train (or reuse), generate, measure; a failure is recorded, not raised.

    The row holds its person's work lock (:func:`~workbench.lifecycle.erasure.working_on`): an erasure of
    the person asks it to stop (training stops at its next step: :class:`Interrupted`) and waits for it."""
    with working_on(person.subject.id):
        def stop():
            return (should_stop is not None and should_stop()) or erasure_requested(person.subject.id)

        return _run_row(spec, entry, seed, person, device, run_dir, gen_dir, name, outcome, owners, stop, stage,
                        **job_args)


def _run_row(spec: Spec, entry: RecipeEntry, seed: int, person: Person, device: str, run_dir: Path, gen_dir: Path,
             name: str, outcome: RunOutcome, owners: list[str], should_stop, stage, **job_args) -> dict:
    from workbench.recipes.artifacts import load_personalised

    subject = person.subject
    t0 = time.time()
    row = {"label": entry.label, "recipe": entry.name, "seed": seed, "subject": subject.id, "params": entry.params}
    try:
        stage(f"{name}: training", 0.05)
        result = train_recipe(spec, entry, subject, seed, device, person.protected, should_stop, **job_args)
        pipe = load_personalised(spec.backbone, result.artifact_dir, device)
        stage(f"{name}: generating", 0.4)
        records = generate_for(spec, entry, pipe, result, subject, seed, gen_dir)
        stage(f"{name}: measuring", 0.7)
        measured = measure_for(spec, pipe, result, records, gen_dir, run_dir, person.ref, seed, subject.id, device)
        del pipe
        outcome.status[name] = {
            "ok": True, "recipe": entry.name, "seed": seed, "subject": subject.id,
            "model": str(sealed.at_rest(result.artifact_dir)),
            "identifier": result.identifier, "train_steps": result.steps,
            "train_seconds": round(result.seconds, 2), "final_loss": result.final_loss,
            "images": len(records), "seconds": round(time.time() - t0, 2),
        }
        return row | {"status": "ok", "error": None, "train": train_record(entry, result, person.protected)} | measured
    except Interrupted:
        raise  # a cancel stops the whole run; it is not this recipe's failure
    except Exception as exc:  # noqa: BLE001 - one failed recipe never stops the others
        log.error("%s failed: %s", name, exc)
        with open(run_dir / "errors.log", "a", encoding="utf-8") as fh:
            if fcntl:  # whole entries, when several Ray tasks fail at once
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            fh.write(f"== {name}\n{traceback.format_exc()}\n")
        for owner in owners:
            manifest.register(owner, "record", run_dir / "errors.log")
        error = f"{type(exc).__name__}: {exc}"
        outcome.status[name] = {"ok": False, "recipe": entry.name, "seed": seed, "subject": subject.id, "error": error}
        return failed_row(row, error)


def publish(run_dir: Path, spec: Spec) -> None:
    """The report (always) and the W&B mirror (as the spec's tracking says)."""
    from workbench.report.html import write_report
    from workbench.tracking import mirror_to_wandb

    write_report(run_dir)
    try:  # the run folder is the source of truth: a tracking failure must not fail a finished run
        mirror_to_wandb(run_dir, spec.tracking)
    except Exception as exc:  # noqa: BLE001
        log.error("W&B mirror failed (the run folder is complete): %s", exc)


def _results(spec: Spec, splits: dict, rows: list[dict], device: str, torch) -> dict:
    from datetime import datetime, timezone

    from workbench import __version__
    from workbench.measure import metric_meta
    from workbench.results import SCHEMA_VERSION

    order = list(splits)
    rows = sorted(rows, key=lambda r: (order.index(r["subject"]), r["recipe"] != "none", r["seed"]))  # controls first
    spec_json = json.dumps(spec.resolved(), sort_keys=True).encode()
    first = next(iter(splits.values()))
    run = {"name": spec.name, "subject_id": spec.run_subject_id, "backbone": spec.backbone, "device": device,
           "seeds": list(spec.seeds), "n_train": sum(len(sp.members) for sp in splits.values()),
           "n_holdout": sum(len(sp.non_members) for sp in splits.values()),
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "versions": {"workbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
           "spec_sha256": hashlib.sha256(spec_json).hexdigest()}
    split_meta = first.meta()
    if spec.cohort is not None:
        run["subjects"] = order
        split_meta = split_meta | {"per_subject": {sid: sp.meta() for sid, sp in splits.items()}}
    out = {
        "schema": SCHEMA_VERSION,
        "run": run,
        "rows": rows,
        "meta": metric_meta(spec.metrics.encoders) | {"split": split_meta, "notes": [
            f"members = {split_meta['members']} photos per person drawn at random (seed {split_meta['seed']}) from "
            "every accepted photo of the person, non-members = the others (split.json lists their hashes)",
            "membership attacks are difficulty-calibrated (Watson et al. 2022): each photo's score on the model "
            "minus its score on the untouched base model with the same noise draws; auc_raw is uncalibrated",
            "membership inference on latent models attacks the VAE latents (posterior mean x scaling factor)",
            "every metric: value with a 95% percentile-bootstrap interval and its sample size n",
        ] + _training_notes(rows)},
    }
    _intake_meta(out["meta"], splits)
    if spec.cohort is not None:
        from workbench.metrics import registry
        from workbench.metrics.pooled import pool_rows

        out["pooled"] = pool_rows(rows, order, list(spec.metrics.mia_attacks), list(registry.required_keys()))
        out["meta"]["notes"].append(
            f"cohort of {len(order)} people: one model per person per recipe; 'pooled' pools the calibrated "
            "membership scores over people (two-level bootstrap, within-person permutations) and averages "
            "the other metrics over people")
    return out


def _intake_meta(meta: dict, splits: dict) -> None:
    """``meta.intake``: per person, the resolution and upscaling policy of the intake and how many of the run's
    photos were upscaled (:func:`workbench.subjects.intake.intake_meta`), with a note when any were."""
    from workbench.subjects.intake import intake_meta, upscale_note

    with working_on(list(splits)):  # reads each person's subject.json (a working copy when encrypted)
        meta["intake"] = {sid: intake_meta(sid, list(sp.members) + list(sp.non_members)) for sid, sp in splits.items()}
    note = upscale_note(meta["intake"])
    if note:
        meta["notes"].append(note)


def _training_notes(rows: list[dict]) -> list[str]:
    """The caveats of every kind of training record the rows carry (early stopping, protection, DP)."""
    kinds = {kind for r in rows if r.get("train") for kind in (r["train"].get("details") or {})}
    notes = [cls.note() for cls in records.record_types() if cls.KIND in kinds]
    return [n for n in notes if n]


def _run_record(spec, outcome, started, device, torch, **more) -> dict:
    from workbench import __version__

    return {
        "name": spec.name, "subject_id": outcome.subject_id, "status": outcome.status,
        "seconds": round(time.time() - started, 2), "device": device,
        "versions": {"workbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
    } | more
