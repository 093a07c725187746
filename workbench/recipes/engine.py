"""The one training loop every recipe runs on: :func:`run` (a job) + :class:`Hooks` (a recipe).

Objective: DDPM's simplified loss (Ho et al. 2020, Algorithm 1) in a latent space (Rombach et al.
2022): for an image latent z₀, noise ε ~ N(0, I), timestep t ~ U{0..T-1},
    z_t = √ᾱ_t z₀ + √(1-ᾱ_t) ε,      L = ‖ε - ε_θ(z_t, t, c)‖²
(v-prediction models use the target v = √ᾱ_t ε - √(1-ᾱ_t) z₀ instead), with the base pipeline's
own noise schedule (``DDPMScheduler.from_config``).

What is shared here, what a recipe supplies (:class:`Hooks`):
- shared: loading images (PIL/numpy, horizontal flips), encoding each image and its mirror once
  with the frozen VAE (the posterior mean/std is cached; z₀ is re-sampled every step), conditioning
  the UNet on the instance prompt as the pipeline does (:func:`workbench.diffusion.conditioning`: SD
  1.x/2.x or SDXL, whose size/crop time ids take ``job.resolution``), cached while the text side is
  frozen, bf16 autocast where the hardware runs it, AdamW,
  gradient clipping, the loss log, checkpoints and resume, and the atomic final artifact;
- recipe: which parameters train (``prepare``), whether the text embeddings depend on them,
  extra loss terms (prior preservation), how gradients are formed when not by plain backprop and
  clipping (DP-SGD, ``Setup.backward``), and how the artifact is saved (``save``).

Leakage-aware options every training recipe takes (:class:`~workbench.recipes.registry.TrainingParams`):
``max_steps_per_photo`` caps the optimiser steps at that many per training photo; with
``early_stopping_patience`` the loop evaluates the denoising loss on the subject's *holdout* photos
every ``eval_every`` steps (fixed noise and timesteps, so evaluations are comparable), stops after
that many evaluations without improvement and keeps the best weights. The holdout photos are also
the membership non-members and the identity reference, so early stopping selects the model on them
(through one scalar per evaluation); the report says so.

A run folder ``out_dir`` holds ``job.json`` (what is being trained), ``loss.jsonl`` (one line per
step), ``checkpoint/step-NNNNNN/`` while training, and ``artifact/`` (with ``DONE.json``) at the
end. Rerunning the same job resumes from the last checkpoint, or returns the finished result.
Every file written is registered in the subject's manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.content import base_key, content_key, param_hash
from workbench.diffusion import (
    Conditioning,
    LatentSet,
    conditioning,
    denoising_losses,
    encode_images,
    noise_scheduler,
    text_encoders,
)
from workbench.errors import Interrupted, UserError
from workbench.lifecycle import manifest
from workbench.recipes.artifacts import ARTIFACT, DONE, FORMAT_VERSION, read_done
from workbench.recipes.early_stopping import early_stopping
from workbench.recipes.registry import RecipeParams
from workbench.records import TrainingRecord, Value, register_record

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
LOSS_LOG = "loss.jsonl"
JOB = "job.json"


@dataclass
class TrainJob:
    """What to personalise, on what, for whom, and where the run lives."""

    base: str  # backbone: "tiny-face", a local diffusers folder or a hub id
    train_images: list[Path]  # the subject's aligned training crops (e.g. Subject.train)
    subject_id: str  # every file written is registered in this subject's manifest
    out_dir: Path | None = None  # the run folder (job.json, loss.jsonl, checkpoint/, artifact/); see in_store
    identifier: str = "sks"  # rare word bound to the subject; TI-style recipes make it a new token "<sks>"
    class_noun: str = "person"  # the subject's class (DreamBooth's class noun)
    instance_prompt: str = "a photo of {identifier} {class_noun}"  # caption of every training image
    class_prompt: str = "a photo of a {class_noun}"  # prompt of prior-preservation class images
    device: str = "auto"  # auto: cuda, then mps, then cpu
    seed: int = 0  # seeds adapter init, batch sampling, noise and timesteps
    resolution: int = 64  # training images are resized to resolution × resolution
    checkpoint_every: int = 50  # steps between checkpoints (0: none)
    compile: bool = False  # torch.compile the UNet (pays off on CUDA for long runs only)
    holdout_images: list[Path] = field(default_factory=list)  # early stopping's validation photos

    def __post_init__(self):
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        self.train_images = [Path(p) for p in self.train_images]
        self.holdout_images = [Path(p) for p in self.holdout_images]
        if not self.train_images:
            raise UserError("the job has no training images; the subject's train split is empty")
        if "{identifier}" not in self.instance_prompt:
            raise UserError(f"instance_prompt {self.instance_prompt!r} must contain {{identifier}}")
        if self.resolution % 8:
            raise UserError(f"resolution {self.resolution} must be a multiple of 8")
        if self.checkpoint_every < 0:
            raise UserError("checkpoint_every must be ≥ 0 (0 turns checkpoints off)")

    def record(self, recipe: str, params: RecipeParams) -> dict:
        """What the trained model is a function of (written as job.json; run-time choices such as the
        device are left out): the recipe and its params, the base model's *weights* (so a backbone
        rebuilt in place is a different job), the photos' content, the prompts, the seed and size."""
        return {
            "recipe": recipe, "params": params.model_dump(mode="json"),
            "base": self.base, "base_weights": base_key(self.base), "subject_id": self.subject_id,
            "train_images": [manifest.sha256_file(p) for p in self.train_images],
            "identifier": self.identifier, "class_noun": self.class_noun,
            "instance_prompt": self.instance_prompt, "class_prompt": self.class_prompt,
            "seed": self.seed, "resolution": self.resolution,
        } | ({"holdout_images": [manifest.sha256_file(p) for p in self.holdout_images]}
             if params.patience() is not None else {})  # the holdout photos select the model

    def key(self, recipe: str, params: RecipeParams) -> str:
        """The job's content key: names its folder and decides whether a finished model is reused."""
        return content_key(self.record(recipe, params))

    def in_store(self, recipe: str, params: RecipeParams) -> TrainJob:
        """This job with ``out_dir`` in the subject's model store, named by recipe and content key."""
        from workbench import paths

        folder = paths.subject_dir(self.subject_id) / "models" / f"{recipe}-{self.key(recipe, params)}"
        return dataclasses.replace(self, out_dir=folder)


@dataclass
class Setup:
    """What a recipe's ``prepare`` hook returns once it has made its parameters trainable."""

    param_groups: list[dict]  # AdamW groups: {"params": [...], "lr": ..., optional "weight_decay"}
    text_trainable: bool = False  # text embeddings depend on trained weights: recompute every step
    extra_loss: Callable[[Step], torch.Tensor] | None = None  # added to the instance loss
    backward: Callable[[Step, LatentSet, str], dict] | None = None  # sets .grad (None: backprop + clipping)
    autocast: bool = True  # False: train in fp32 even where bf16 autocast is available
    details: Callable[[int], TrainingRecord] | None = None  # steps run -> a record for DONE.json["details"]
    close: Callable[[], None] | None = None  # called once training ends, before the artifact is saved
    generators: dict[str, torch.Generator] = field(default_factory=dict)  # more RNGs saved in checkpoints


@dataclass
class Hooks:
    """A recipe, as the loop sees it."""

    recipe: str  # registered recipe name (recorded in DONE.json)
    params: RecipeParams  # the recipe's parameters (recorded in job.json and DONE.json)
    steps: int  # optimiser steps; 0 trains nothing (the `none` control)
    batch_size: int = 1  # images per step
    max_grad_norm: float = 1.0  # global L2 gradient clipping
    token: str | None = None  # word that names the subject in prompts (None: job.identifier)
    prepare: Callable | None = None  # prepare(pipe, job) -> Setup
    save: Callable | None = None  # save(pipe, folder) -> {role: file name}; see artifacts.py


def hooks_for(recipe: str, params, **kw) -> Hooks:
    """:class:`Hooks` for a recipe whose params are :class:`~workbench.recipes.registry.TrainingParams`."""
    return Hooks(recipe=recipe, params=params, steps=params.steps, batch_size=params.batch_size,
                 max_grad_norm=params.max_grad_norm, **kw)


def planned_steps(hooks: Hooks, n_photos: int) -> int:
    """``hooks.steps``, capped at ``max_steps_per_photo`` × training photos when that is set."""
    cap = hooks.params.steps_per_photo_cap()
    if cap is None or hooks.steps == 0:
        return hooks.steps
    return min(hooks.steps, max(1, math.floor(cap * n_photos + 1e-9)))


@register_record
class StepsRecord(TrainingRecord):
    """Optimiser steps: planned by the recipe, the cap ``max_steps_per_photo`` set, and actually run."""

    KIND = "steps"
    COLUMN = "steps run"
    ORDER = 10
    planned: int
    cap: int | None = None
    run: int

    def describe(self):
        parts = [Value(self.run, "/run", "int"), " of ", Value(self.planned, "/planned", "int")]
        return parts + ([" (capped at ", Value(self.cap, "/cap", "int"), ")"] if self.cap is not None else [])


@dataclass(frozen=True)
class TrainResult:
    recipe: str
    artifact_dir: Path  # folder with DONE.json; load with artifacts.load_personalised
    identifier: str  # the word to put in prompts for this artifact ("sks", "<sks>")
    steps: int
    seconds: float  # training time over all sessions (excludes loading and saving)
    final_loss: float | None  # mean instance loss over the last ≤10 steps
    param_hash: str  # sha256 over the artifact's tensors (see param_hash)
    details: dict = field(default_factory=dict)  # steps planned/run, early stopping, DP accounting

    @classmethod
    def from_folder(cls, folder: Path) -> TrainResult:
        d = read_done(folder)
        return cls(d["recipe"], Path(folder), d["identifier"], d["steps"], d["seconds"], d["final_loss"],
                   d["param_hash"], d.get("details", {}))


class Stopped(Interrupted):
    """Raised by :func:`run` at ``stop_after`` or when ``should_stop()`` says so: the run stops as if
    killed there, with a checkpoint of the last step, so rerunning the same job resumes it."""


# ---------------------------------------------------------------------------------------------------
# Data: images → cached VAE posteriors; prompts → (cached) text embeddings


class Step:
    """Computes diffusion losses for the loop and for a recipe's ``extra_loss`` hook."""

    def __init__(self, pipe, batch_size: int, generator: torch.Generator, amp, text_trainable: bool, resolution: int):
        self.pipe, self.batch_size, self.generator, self.amp = pipe, batch_size, generator, amp
        self.device = pipe.unet.device
        self.scheduler = noise_scheduler(pipe)
        self.text_trainable = text_trainable
        self.resolution = resolution  # of the training images (SDXL's size conditioning)
        self._text_cache: dict[str, Conditioning] = {}

    def autocast(self):
        """bf16 autocast; on CPUs also the plain ("math") attention kernel: PyTorch's CPU flash
        attention backward is several times slower in bf16 than in fp32 (measured: 190 ms of a
        250 ms tiny-face step), while the math kernel runs bf16 at full speed."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None))
        if self.amp is not None and self.device.type == "cpu":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        return stack

    def text(self, prompt: str) -> Conditioning:
        """The UNet's conditioning on ``prompt`` (:func:`~workbench.diffusion.conditioning`): cached while
        nothing on the text side trains."""
        if not self.text_trainable and prompt in self._text_cache:
            return self._text_cache[prompt]
        if self.text_trainable:
            with self.autocast():
                return conditioning(self.pipe, prompt, self.resolution, grad=True)
        cond = conditioning(self.pipe, prompt, self.resolution)
        self._text_cache[prompt] = cond
        return cond

    def loss(self, latents: LatentSet, prompt: str) -> torch.Tensor:
        """One Monte-Carlo estimate of the DDPM loss on a random batch of ``latents`` under ``prompt``."""
        idx = torch.randint(len(latents), (self.batch_size,), generator=self.generator)
        return self.losses(latents, prompt, idx).mean()

    def losses(self, latents: LatentSet, prompt: str, idx: torch.Tensor, *, model=None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample DDPM losses (B,) of the rows ``idx`` of ``latents``: fresh z₀, ε and t for each.

        ``model``: the UNet to call (default ``pipe.unet``; DP-SGD passes its per-sample-gradient
        wrapper); ``generator``: the draws' source (default the loop's)."""
        g = generator or self.generator
        z0 = latents.sample(idx.to(latents.mean.device), g)  # (B, C, h, w)
        cond = self.text(prompt)
        with self.autocast():
            return denoising_losses(model or self.pipe.unet, self.scheduler, z0, cond, g)


def plain_backward(setup: Setup, params: list, max_grad_norm: float) -> Callable[[Step, LatentSet, str], dict]:
    """The default gradient: backprop of the batch loss (+ extra loss), then global-norm clipping."""

    def backward(step: Step, instance: LatentSet, prompt: str) -> dict:
        loss = step.loss(instance, prompt)
        extra = setup.extra_loss(step) if setup.extra_loss else None
        (loss if extra is None else loss + extra).backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        return {"loss": loss.item()} | ({} if extra is None else {"extra_loss": extra.item()})

    return backward


# ---------------------------------------------------------------------------------------------------
# The loop


def run(job: TrainJob, hooks: Hooks, *, stop_after: int | None = None,
        should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train ``hooks``'s recipe on ``job``; resume from a checkpoint; write the artifact atomically.

    ``should_stop``: polled after every step; when it returns true the run checkpoints and stops
    (raises :class:`Stopped`): how the app cancels a run mid-training.
    ``stop_after``: stop (raise :class:`Stopped`) once this many steps are done and checkpointed, as
    if the process had been killed there (for tests and pre-emptible machines).
    """
    out = job.out_dir.resolve()
    if (out / ARTIFACT / DONE).is_file():
        _check_job(out, job, hooks)
        log.info("%s is already trained; reusing it", out / ARTIFACT)
        return TrainResult.from_folder(out / ARTIFACT)
    if hooks.params.patience() is not None and not job.holdout_images:
        raise UserError("early_stopping_patience needs holdout photos (the job has none): give the subject a "
                        "holdout split, or remove early_stopping_patience")
    out.mkdir(parents=True, exist_ok=True)
    _check_job(out, job, hooks)
    _clean_temp(out)
    token = hooks.token or job.identifier
    total = planned_steps(hooks, len(job.train_images))
    if total == 0:
        return _finish(job, hooks, None, token, seconds=0.0, steps_run=0, records=[StepsRecord(planned=0, run=0)])

    from workbench.backbones.registry import load_backbone
    from workbench.device import autocast_dtype, resolve_device

    device = resolve_device(job.device)
    amp = autocast_dtype(device)
    torch.manual_seed(job.seed)  # adapter initialisation
    pipe = load_backbone(job.base, device)
    encoders = {name: te for name, (te, _) in text_encoders(pipe).items()}  # SDXL: two
    for module in (pipe.vae, pipe.unet, *encoders.values()):
        module.requires_grad_(False)
        module.eval()
    instance = encode_images(pipe, job.train_images, job.resolution)
    setup = hooks.prepare(pipe, job)
    trainable = dict(_named_trainable(pipe))
    if not trainable:
        raise RuntimeError(f"recipe {hooks.recipe} made no parameter trainable")
    pipe.unet.train(any(n.startswith("unet.") for n in trainable))
    for name, te in encoders.items():
        te.train(any(n.startswith(f"{name}.") for n in trainable))
    amp = amp if setup.autocast else None
    restore = _cast_frozen(pipe.unet, amp)
    if job.compile:
        pipe.unet.compile()
    # fused AdamW: one kernel for all parameters (4x faster than the default on a full tiny UNet)
    optimizer = torch.optim.AdamW(setup.param_groups, weight_decay=1e-2,
                                  fused=torch.device(device).type in ("cpu", "cuda"))
    generator = torch.Generator().manual_seed(job.seed)
    step = Step(pipe, hooks.batch_size, generator, amp, setup.text_trainable, job.resolution)
    prompt = job.instance_prompt.format(identifier=token, class_noun=job.class_noun)
    params = list(trainable.values())
    backward = setup.backward or plain_backward(setup, params, hooks.max_grad_norm)
    stopper = early_stopping(hooks.params, pipe, job.holdout_images, job.resolution, prompt)
    generators = {"loop": generator} | setup.generators
    stateful = {"optimizer": optimizer} | ({"early_stopping": stopper} if stopper else {})
    start, seconds = _resume(out, trainable, stateful, generators, device)
    loss_log = out / LOSS_LOG
    _truncate_log(loss_log, job.subject_id, start)
    if not loss_log.exists():  # registered before the first line, so a killed run leaves nothing unlisted
        loss_log.touch()
        manifest.register(job.subject_id, "record", loss_log)
    bar = tqdm(range(start, total), initial=start, total=total, desc=hooks.recipe, unit="step", mininterval=1.0)
    done = start
    for i in bar:
        if stopper is not None and stopper.stopped:
            break  # resumed after the stopping evaluation
        t0 = time.perf_counter()
        row = {"step": i + 1} | backward(step, instance, prompt)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = i + 1
        if stopper is not None and stopper.due(done, total):
            row["holdout_loss"] = stopper.evaluate(step, done, trainable)
        row["seconds"] = round(time.perf_counter() - t0, 5)
        seconds += row["seconds"]
        with open(loss_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if row.get("loss") is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        if stopper is not None and stopper.stopped:
            break
        cancelled = should_stop is not None and should_stop()
        if (cancelled or job.checkpoint_every and done % job.checkpoint_every == 0) and done < total:
            _save_checkpoint(out, job.subject_id, trainable, stateful, generators, done, seconds)
        if (cancelled or (stop_after is not None and done >= stop_after)) and done < total:
            bar.close()
            manifest.register(job.subject_id, "record", loss_log)
            raise Stopped(f"stopped after step {done} of {total}")
    bar.close()
    records = [StepsRecord(planned=hooks.steps, cap=total if total < hooks.steps else None, run=done)]
    if stopper is not None:
        stopper.restore_best(trainable)
        records.append(stopper.record(done, total))
    if setup.details is not None:
        records.append(setup.details(done))
    if setup.close is not None:
        setup.close()
    restore()
    for module in (pipe.unet, *encoders.values()):
        module.eval()
    return _finish(job, hooks, pipe, token, seconds, steps_run=done, records=records)


def _named_trainable(pipe):
    modules = {"unet": pipe.unet} | {name: te for name, (te, _) in text_encoders(pipe).items()}
    for prefix, module in modules.items():
        for name, p in module.named_parameters():
            if p.requires_grad:
                yield f"{prefix}.{name}", p


def _cast_frozen(unet, amp) -> Callable[[], None]:
    """Under autocast, keep the UNet's frozen weights in the autocast dtype (as the diffusers
    examples do with ``weight_dtype``): no per-step casts, half the memory. Trained weights stay
    fp32. Returns a function that puts the original fp32 tensors back (before anything is saved)."""
    if amp is None:
        return lambda: None
    originals = {}
    for name, p in unet.named_parameters():
        if not p.requires_grad and p.dtype == torch.float32:
            originals[name] = p.data if p.device.type == "cpu" else p.data.to("cpu")
            p.data = p.data.to(amp)

    def restore():
        for name, p in unet.named_parameters():
            if name in originals:
                p.data = originals[name].to(p.device)

    return restore


def _check_job(out: Path, job: TrainJob, hooks: Hooks) -> None:
    record = job.record(hooks.recipe, hooks.params) | {"steps": hooks.steps}
    path = out / JOB
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != record:
            diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
            raise UserError(
                f"{out} holds a run of a different job (differs in: {', '.join(diff)}); "
                "choose another output folder, or delete this one to start over"
            )
        return
    if (out / ARTIFACT).exists():
        raise UserError(f"{out} holds an artifact but no {JOB}; choose another output folder")
    manifest.write_bytes(job.subject_id, "record", path, json.dumps(record, indent=1).encode())


def _clean_temp(out: Path) -> None:
    """Remove half-written folders a killed run left behind (never registered, never results)."""
    for tmp in list(out.glob(".artifact-*")) + list((out / CHECKPOINT).glob(".tmp-*")):
        shutil.rmtree(tmp, ignore_errors=True)
    if (out / ARTIFACT).exists() and not (out / ARTIFACT / DONE).exists():
        shutil.rmtree(out / ARTIFACT)


def _truncate_log(path: Path, subject_id: str, start: int) -> None:
    """Keep the loss log's lines up to the resumed step, so every step appears once."""
    rows = _read_log(path)
    kept = [r for r in rows if r["step"] <= start]
    if not path.exists() or len(kept) != len(rows):
        manifest.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        manifest.register(subject_id, "record", path)


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a kill
    return rows


# ---------------------------------------------------------------------------------------------------
# Checkpoints: checkpoint/step-NNNNNN/ {trainable.safetensors, optimizer.pt, state.pt}, each folder
# written under a temporary name and renamed into place, so the newest one is always complete.


def _save_checkpoint(out, subject_id, trainable, stateful, generators, step, seconds) -> None:
    """``stateful``: objects with ``state_dict()`` (the optimiser, early stopping), each saved as <name>.pt."""
    import io

    from safetensors.torch import save_file

    root = out / CHECKPOINT
    root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in trainable.items()}
    save_file(tensors, tmp / "trainable.safetensors")
    for name, obj in stateful.items():
        buf = io.BytesIO()
        torch.save(obj.state_dict(), buf)
        (tmp / f"{name}.pt").write_bytes(buf.getvalue())
    state = {"step": step, "seconds": seconds, "rng_torch": torch.get_rng_state()}
    state |= {f"rng_{name}": g.get_state() for name, g in generators.items()}
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, tmp / "state.pt")
    final = root / f"step-{step:06d}"
    os.replace(tmp, final)
    for f in sorted(final.iterdir()):
        manifest.register(subject_id, "optimizer_state" if f.name == "optimizer.pt" else "checkpoint", f)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old)


def _resume(out, trainable, stateful, generators, device) -> tuple[int, float]:
    """Load the newest checkpoint, if any, into the weights, ``stateful`` and ``generators``:
    → (steps done, training seconds so far)."""
    from safetensors.torch import load_file

    folders = sorted((out / CHECKPOINT).glob("step-*"))
    if not folders:
        return 0, 0.0
    folder = folders[-1]
    saved = load_file(folder / "trainable.safetensors", device=str(device))
    if set(saved) != set(trainable) or not all((folder / f"{name}.pt").is_file() for name in stateful):
        raise UserError(f"checkpoint {folder} does not match this recipe's parameters; delete it to restart")
    with torch.no_grad():
        for name, p in trainable.items():
            p.copy_(saved[name])
    for name, obj in stateful.items():
        obj.load_state_dict(torch.load(folder / f"{name}.pt", map_location=device if name == "optimizer" else "cpu",
                                       weights_only=True))
    state = torch.load(folder / "state.pt", weights_only=True)
    for name, g in generators.items():
        g.set_state(state[f"rng_{name}"])
    torch.set_rng_state(state["rng_torch"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    log.info("resuming %s from step %d", out, state["step"])
    return int(state["step"]), float(state["seconds"])


# ---------------------------------------------------------------------------------------------------
# The artifact


def _finish(job: TrainJob, hooks: Hooks, pipe, token: str, seconds: float, steps_run: int,
            records: list[TrainingRecord]) -> TrainResult:
    from workbench.backbones.registry import resolve_backbone

    out = job.out_dir.resolve()
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".artifact-"))
    try:
        files = hooks.save(pipe, tmp) if hooks.save else {}
        losses = [r["loss"] for r in _read_log(out / LOSS_LOG) if r.get("loss") is not None]
        source = resolve_backbone(job.base)
        done = {
            "format": FORMAT_VERSION,
            "recipe": hooks.recipe,
            "params": hooks.params.model_dump(mode="json"),
            "steps": steps_run,
            "seconds": round(seconds, 3),
            "final_loss": float(np.mean(losses[-10:])) if losses else None,
            "base": job.base,
            "base_source": source,
            "base_sha256": base_key(job.base),
            "identifier": token,
            "class_noun": job.class_noun,
            "instance_prompt": job.instance_prompt.format(identifier=token, class_noun=job.class_noun),
            "subject_id": job.subject_id,
            "seed": job.seed,
            "resolution": job.resolution,
            "files": files,
            "param_hash": param_hash(tmp),
            "details": {r.KIND: r.model_dump(mode="json") for r in records},
            "created": time.time(),
        }
        (tmp / DONE).write_text(json.dumps(done, indent=1), encoding="utf-8")
        os.replace(tmp, out / ARTIFACT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = out / ARTIFACT
    for f in sorted(p for p in final.rglob("*") if p.is_file()):
        manifest.register(job.subject_id, "record" if f.name == DONE else "weights", f)
    if (out / LOSS_LOG).exists():
        manifest.register(job.subject_id, "record", out / LOSS_LOG)
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    log.info("%s: %d steps in %.1f s → %s", hooks.recipe, steps_run, seconds, final)
    return TrainResult.from_folder(final)
