"""``dp_lora``: LoRA trained with DP-SGD (Abadi et al., CCS 2016, "Deep Learning with Differential
Privacy", Algorithm 1), on the shared engine.

One step, with N training photos and sampling rate q = batch_size / N:
1. Poisson sampling: each photo joins the batch independently with probability q (the sampling the
   accountant assumes; the batch size varies and may be 0). A chosen photo is used as itself or its
   mirror image, at random, with fresh posterior, noise and timestep draws.
2. Per-sample gradients gᵢ of each photo's own denoising loss with respect to the LoRA weights, in one
   batched backward pass (Opacus ``GradSampleModule`` hooks on peft's ``lora_A``/``lora_B`` layers).
3. Clipping: gᵢ ← gᵢ · min(1, C / ‖gᵢ‖₂), the norm taken over all LoRA weights together (C = max_grad_norm).
4. Noise: g = (Σᵢ gᵢ + N(0, σ²C²I)) / (qN) (dividing by the *expected* batch size, as Opacus does).
5. AdamW on g (post-processing: it does not touch the photos again).

Accounting: Rényi DP of the sampled Gaussian mechanism (Mironov 2017; Mironov, Talwar & Zhang 2019)
composed over the steps actually run, converted to (ε, δ) by Opacus' ``RDPAccountant``. Either a
``target_epsilon`` (σ is found by Opacus' ``get_noise_multiplier`` for the planned steps) or a
``noise_multiplier`` σ is given; the accountant's ε for the steps run is written to DONE.json and
reported with the results.

What this protects, stated plainly (the report repeats it): the unit of privacy is **one training
photo**. An attacker holding the model learns little about whether any single photo was used (the
membership-inference numbers should sit near the control). It does **not** protect the identity:
the face common to all photos is learned from all of them, and record-level DP never hides what
every record shares. With ε large enough to learn a likeness, the model still makes the person.

What the guarantee covers: the trained weights (and so the model file and everything sampled from it).
It does not cover the training log (``loss.jsonl``: per-step loss, batch size, how many photos were
clipped) or ``final_loss``, which are computed from the photos without noise; they stay in the
subject's store and are erased with the model. Choosing C or the learning rate by looking at runs on
the same photos is also outside the accounting.

The sampling and noise come from a generator seeded from the operating system's randomness (its state
is kept only in checkpoints, which go once the model is final): anyone holding the job's seed could
otherwise regenerate the noise and subtract it. ``seeded_noise: true`` seeds it from the job seed
instead, for reproducible tests, and voids the guarantee against whoever knows the seed.

Trains in fp32 (per-sample norms are what the guarantee rests on). No text-encoder LoRA, no prior
preservation and no ``torch.compile`` here: every trained weight must pass through Opacus' per-sample
hooks, and the loop checks that it did.
"""

from __future__ import annotations

import math
import secrets
import warnings
from typing import Annotated

from pydantic import Field, model_validator

from workbench.errors import UserError
from workbench.recipes import lora
from workbench.recipes.registry import register_recipe
from workbench.records import TrainingRecord, Value, register_record

ACCOUNTANT = "rdp"
# RDP orders α: Opacus' defaults (1.1 … 63) extended to 1024, so that strong privacy (large σ, few
# steps) finds its optimal order inside the range instead of at its edge (a looser ε).
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + list(range(64, 1025, 16))


class Params(lora.Params):
    steps: Annotated[int, Field(ge=1)] = 200  # optimiser steps (the accountant composes over the steps run)
    lr: Annotated[float, Field(gt=0)] = 1e-3  # AdamW learning rate
    batch_size: Annotated[int, Field(ge=1)] = 4  # expected photos per step: sampling rate q = batch_size / N
    max_grad_norm: Annotated[float, Field(gt=0)] = 0.005  # C, per-photo clipping bound (tiny-face norms ~0.005)
    target_epsilon: Annotated[float | None, Field(gt=0)] = None  # epsilon to reach at delta (default 8) ...
    noise_multiplier: Annotated[float | None, Field(ge=0)] = None  # ... or sigma given directly (not both)
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5  # delta of (epsilon, delta)-DP; must be below 1/N
    seeded_noise: bool = False  # true: noise from the job seed (reproducible; no guarantee against the seed)

    @model_validator(mode="after")
    def _dp_choices(self) -> Params:
        if self.target_epsilon is not None and self.noise_multiplier is not None:
            raise ValueError("give exactly one of target_epsilon (e.g. 8) or noise_multiplier (e.g. 1.0), not both")
        if self.target_epsilon is None and self.noise_multiplier is None:
            self.target_epsilon = 8.0
        if self.train_text_encoder:
            raise ValueError("train_text_encoder: dp_lora clips per-photo gradients of the UNet LoRA only; "
                             "set it to false")
        if self.prior_preservation:
            raise ValueError("prior_preservation: not available with dp_lora; set it to false")
        return self


def sample_rate(params: Params, n_photos: int) -> float:
    return min(1.0, params.batch_size / n_photos)


def noise_for(params: Params, q: float, steps: int) -> float:
    """σ: the given noise multiplier, or the smallest σ whose ε after ``steps`` is ≤ the target."""
    if params.noise_multiplier is not None:
        return params.noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    try:
        return get_noise_multiplier(target_epsilon=params.target_epsilon, target_delta=params.delta,
                                    sample_rate=q, steps=steps, accountant=ACCOUNTANT, epsilon_tolerance=0.01,
                                    alphas=ALPHAS)
    except ValueError:
        raise UserError(f"target_epsilon {params.target_epsilon} at delta {params.delta} is out of reach over "
                        f"{steps} steps at sampling rate {q:.3f}; raise target_epsilon or lower steps") from None


def epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """The accountant's ε after ``steps`` steps of the sampled Gaussian mechanism (∞ without noise)."""
    if steps == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(sigma, q, steps)]
    return float(accountant.get_epsilon(delta=delta, alphas=ALPHAS))


def clip_and_noise(params: list, clip: float, sigma: float, expected_batch: float, generator) -> list[float]:
    """Steps 3-4: from each parameter's per-sample gradients ``grad_sample`` (B, ...) set ``.grad`` to
    (Σᵢ clipped gᵢ + N(0, σ²C²I)) / expected_batch. Returns the per-sample norms before clipping."""
    import torch

    samples = [getattr(p, "grad_sample", None) for p in params]
    if all(g is None for g in samples):  # an empty Poisson batch: the step is noise only
        norms, summed = torch.zeros(0), [torch.zeros_like(p) for p in params]
    else:
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in samples]).sum(0).sqrt()  # (B,)
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        summed = [torch.einsum("b,b...->...", factor.to(g), g) for g in samples]
    for p, total in zip(params, summed, strict=True):
        noise = torch.randn(p.shape, generator=generator).to(p.device) * (sigma * clip)
        p.grad = (total + noise) / expected_batch
        p.grad_sample = None
    return norms.tolist()


def _finite(eps: float) -> float | None:
    """ε rounded for the record; None where there is no guarantee (σ = 0: ε is infinite)."""
    return None if math.isinf(eps) else round(eps, 4)


def check_per_sample(params: list, names: list[str], batch: int) -> None:
    """Every trained weight got a per-sample gradient for each photo in the batch: else no DP claim holds."""
    for name, p in zip(names, params, strict=True):
        g = getattr(p, "grad_sample", None)
        if g is None or g.shape[0] != batch:
            raise RuntimeError(f"Opacus computed no per-sample gradient for {name} (got "
                               f"{None if g is None else tuple(g.shape)} for a batch of {batch}); dp_lora cannot "
                               "train it privately: use the default target_modules and no torch.compile")


@register_record
class PrivacyRecord(TrainingRecord):
    """DP-SGD's accounting for the steps actually run, and what the guarantee does and does not cover."""

    KIND = "privacy"
    COLUMN = "differential privacy (per photo)"
    ABSENT = "not private"
    ORDER = 40
    mechanism: str = "DP-SGD (Abadi et al. 2016): Poisson sampling, per-photo clipping, Gaussian noise"
    unit: str = "one training photo"
    accountant: str = "Rényi DP, Opacus RDPAccountant"
    epsilon: float | None  # None: no noise, no guarantee (ε infinite)
    delta: float
    target_epsilon: float | None = None
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    n_photos: int
    protects: str = "whether any single photo was in the training set (membership of one photo)"
    does_not_protect: str = "the identity: the face shared by all photos is learned from all of them"
    covers: str = "the trained weights; not the training log (per-step losses, clip counts) kept beside them"
    noise_seed: str

    def describe(self):
        eps = (["ε = ", Value(self.epsilon, "/epsilon"), " at δ = ", Value(self.delta, "/delta", "g3")]
               if self.epsilon is not None else ["no guarantee (no noise: ε is infinite)"])
        return eps + [" (σ = ", Value(self.noise_multiplier, "/noise_multiplier"), ", q = ",
                      Value(self.sample_rate, "/sample_rate"), ", C = ",
                      Value(self.max_grad_norm, "/max_grad_norm", "g3"), ")"]

    def statement(self):
        return ["What the differential privacy here protects (unit: ", Value(self.unit, "/unit", "text"), "): ",
                Value(self.protects, "/protects", "text"), ". What it does not: ",
                Value(self.does_not_protect, "/does_not_protect", "text"), ". It covers ",
                Value(self.covers, "/covers", "text"), ". ε is the accountant's (",
                Value(self.accountant, "/accountant", "text"), ") for the steps actually run; lower is more private. "
                "Read it beside the same row's identity fidelity and membership-inference numbers."]

    @classmethod
    def note(cls) -> str:
        return ("record-level differential privacy (dp_lora) bounds what the model reveals about any one "
                "training photo; it does not hide the identity that all the photos share")


def hooks(params: Params):
    import torch

    from workbench.recipes import engine

    def prepare(pipe, job):
        from opacus import GradSampleModule

        from workbench.diffusion import text_encoders

        if job.compile:
            raise UserError("dp_lora does not run under torch.compile (Opacus' per-sample hooks); set compile off")
        trained = lora.add_lora(pipe.unet, params, params.target_modules)
        names = [n for n, p in pipe.unet.named_parameters() if "lora_" in n]
        modules = [pipe.unet, pipe.vae] + [te for te, _ in text_encoders(pipe).values()]
        everything = [p for m in modules for p in m.parameters() if p.requires_grad]
        if {id(p) for p in everything} != {id(p) for p in trained}:
            raise RuntimeError("dp_lora: some trainable weight is not a LoRA weight under per-sample clipping")
        n = len(job.train_images)
        q = sample_rate(params, n)
        sigma = noise_for(params, q, engine.planned_steps(hooks_, n))
        model = GradSampleModule(pipe.unet, batch_first=True, loss_reduction="sum", strict=False)
        rng = torch.Generator().manual_seed(job.seed if params.seeded_noise else secrets.randbits(63))

        def backward(step, instance, prompt):
            chosen = torch.nonzero(torch.rand(n, generator=rng) < q).flatten()  # Poisson sampling
            flips = torch.randint(2, (len(chosen),), generator=rng)
            row = {"batch": len(chosen), "loss": None}
            if len(chosen):
                losses = step.losses(instance, prompt, chosen + n * flips, model=model)
                with warnings.catch_warnings():  # inputs never need grad here; Opacus' hooks still fire
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    losses.sum().backward()
                check_per_sample(trained, names, len(chosen))
                row["loss"] = losses.mean().item()
            norms = clip_and_noise(trained, params.max_grad_norm, sigma, q * n, rng)
            row["clipped"] = sum(v > params.max_grad_norm for v in norms)  # how often C binds (not private)
            return row

        def details(steps_run):
            return PrivacyRecord(
                epsilon=_finite(epsilon(sigma, q, steps_run, params.delta)), delta=params.delta,
                target_epsilon=params.target_epsilon, noise_multiplier=round(sigma, 6), sample_rate=round(q, 6),
                steps=steps_run, max_grad_norm=params.max_grad_norm, n_photos=n,
                noise_seed="the job seed (reproducible, no guarantee against whoever knows it)"
                if params.seeded_noise else "operating-system randomness, not recorded")

        return engine.Setup(param_groups=[{"params": trained, "lr": params.lr}], backward=backward,
                            autocast=False, details=details, close=model.remove_hooks, generators={"dp": rng})

    hooks_ = engine.hooks_for("dp_lora", params, prepare=prepare,
                              save=lambda pipe, folder: lora.save_lora(pipe, folder, False))
    return hooks_


@register_recipe("dp_lora", Params, "LoRA trained with DP-SGD (per-photo clipping + Gaussian noise); reports epsilon")
def train(job, params: Params, **loop):
    from workbench.recipes import engine

    n = len(job.train_images)
    if params.delta >= 1 / n:  # checked before any model loads
        raise UserError(f"delta {params.delta} must be below 1/N = 1/{n} (N training photos); lower it")
    return engine.run(job, hooks(params), **loop)
