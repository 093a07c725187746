"""Membership inference against a fine-tuned diffusion model, the model as a white box.

The question: given the personalised model a service would ship, can an attacker tell which photos
of the person it was trained on? Members are the subject's *train* photos, non-members the
*holdout* photos of the same person, so identity is held constant: a model that learned the person
but not the photos gives AUC ≈ 0.5; one that memorised its photos gives AUC → 1.

Attacks (registry :data:`ATTACKS`; each declares its queries per image and its direction). Every
score is **higher = more likely a member** (errors are negated). ε_θ(x, t, c) is the model's noise
prediction (v-prediction models are converted to ε), ᾱ_t the pipeline's own schedule
(``DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod``, the one training used),
c the conditioning on the instance prompt the model was trained with ("a photo of sks person",
"a photo of <sks> person" for textual inversion), no classifier-free guidance, built as training builds
it (:func:`workbench.diffusion.conditioning`; SDXL: both text encoders, the pooled embedding and the
size/crop time ids at the attacked resolution).

- ``loss`` — Matsumoto, Miura & Yanai, "Membership Inference Attacks against Diffusion Models"
  (IEEE SPW 2023): the training loss ‖ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t, c) − ε‖², averaged over a fixed
  grid of t and several ε draws; 1 query per (t, ε). The ε draws are shared by all images (common
  random numbers), so a score does not depend on which other images are scored with it.
- ``pia`` — Kong et al., "An Efficient Membership Inference Attack for the Diffusion Model by
  Proximal Initialization" (ICLR 2024): ε₀ = ε_θ(x₀, 0, c);
  x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε₀; score −‖ε_θ(x_t, t, c) − ε₀‖⁴₄ (ℓ4 norm to the 4th); 2 queries;
  t = 200 of 1000 as in the paper. Reference code: kong13661/PIA (``components.py``, class PIA).
- ``secmi`` — Duan et al., "Are Diffusion Models Vulnerable to Membership Inference Attacks?"
  (ICML 2023), SecMI_stat: deterministic DDIM inversion (η = 0) of x₀ on the grid 0, k, 2k, …,
  t_SEC (t_SEC/k queries), then one DDIM step on and one back, t_SEC → t_SEC+k → t_SEC (2 queries),
  score −‖x̃_{t_SEC} − x_{t_SEC}‖². With t_SEC = 100, k = 10: 12 queries. (The authors' code,
  jinhaoduan/SecMI ``mia_evals/secmia.py``, stops the inversion one step early, at t_SEC − k, for 11
  queries.) The DDIM step from t to s (Song et al. 2021, Eq. 12 with σ = 0):
  x̂₀ = (x_t − √(1−ᾱ_t) ε_θ(x_t, t, c)) / √ᾱ_t;  x_s = √ᾱ_s x̂₀ + √(1−ᾱ_s) ε_θ(x_t, t, c).
  As in both reference implementations, x₀ is taken as the sample at t = 0 (ᾱ_0 = 1 − β_0 ≈ 1).

Space: for latent models the attacks run on the latent the UNet saw in training: the VAE posterior
*mean* of each image (deterministic; training drew a posterior sample) × ``vae.config.scaling_factor``
(minus ``shift_factor`` where the VAE has one), images loaded as in training (RGB, bicubic resize to
``resolution``, [-1, 1], no flip). Pipelines without a VAE are attacked in pixel space. The result
says which (``space``).

**Difficulty calibration** (Watson et al., "On the Importance of Difficulty Calibration in Membership
Inference Attacks", ICLR 2022): each image is scored by s_ft(x) − s_base(x), the same statistic on the
fine-tuned model and on the untouched base model, with the *same* noise draws and timesteps (one
seeded generator per attack). This cancels how hard an image is in itself (pose, lighting, how typical
the photo is for the base model), which is what made an untouched model separate an ordered split.
``auc``, ``advantage`` and ``tpr_at_1pct_fpr`` are of the calibrated scores when a base reference is
given; ``auc_raw`` is always the raw score's AUC. For the untouched base the calibrated score is 0 by
construction (AUC ½), so its *raw* AUC is the check that the split itself is exchangeable.

Metrics per attack (:mod:`workbench.metrics.roc`): ROC AUC, attacker advantage, TPR at FPR ≤ 1%
(ml_privacy_meter's definition), each with a stratified bootstrap 95% CI and n = (n_m, n_n), the ROC
curve, the raw scores, and how coarse each metric is at these sample sizes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.diffusion import Conditioning, conditioning, default_resolution, encode_latents, noise_scheduler
from workbench.errors import UserError
from workbench.metrics import roc, stats
from workbench.metrics.registry import MetricDef, declare

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_ATTACKS = ("loss", "loss_t", "pia", "secmi")
DIRECTION = "higher score = more likely a member (errors are negated)"


# ---------------------------------------------------------------------------------------------------
# The model as the attacks see it: ε_θ(x_t, t, c), ᾱ_t and the images' latents


class Denoiser:
    """ε_θ(x_t, t, c) of a diffusers pipeline under a fixed prompt, batched, counting its queries.

    ``queries`` counts UNet evaluations per image: one call on N images adds 1 (not N)."""

    def __init__(self, pipe, prompt: str | None, batch_size: int = 16, resolution: int | None = None):
        from workbench.device import autocast_dtype

        self.pipe, self.unet, self.batch_size = pipe, pipe.unet, batch_size
        self.device = self.unet.device
        self.amp = autocast_dtype(self.device.type)
        scheduler = noise_scheduler(pipe)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise UserError(f"the pipeline predicts {self.prediction_type!r}; the attacks need epsilon or "
                            "v_prediction")
        self.alphas_cumprod = scheduler.alphas_cumprod.double()  # ᾱ_t, t = 0 … T-1
        self.T = len(self.alphas_cumprod)
        self.queries = 0  # UNet evaluations per image since the last reset
        self.bar = None  # optional progress bar, advanced once per query
        self.cond = self._text(prompt, resolution)

    def _text(self, prompt: str | None, resolution: int | None) -> Conditioning | None:
        conditional = getattr(self.unet.config, "cross_attention_dim", None) is not None
        if not conditional:
            if prompt:
                raise UserError("this pipeline's UNet is unconditional; pass no prompt")
            return None
        if not prompt:
            raise UserError("pass the instance prompt the model was trained with, e.g. 'a photo of sks person'")
        return conditioning(self.pipe, prompt, resolution)

    def alpha(self, t: int) -> float:
        if not 0 <= t < self.T:
            raise UserError(f"timestep {t} is outside the schedule's 0…{self.T - 1}")
        return float(self.alphas_cumprod[t])

    def autocast(self):
        import torch

        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def eps(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """ε_θ(x_t, t, c) for every row of ``x_t`` (float32, on ``x_t``'s device), in batches."""
        import torch

        a = self.alpha(t)
        dtype = torch.float32 if self.amp is not None else self.unet.dtype  # autocast casts; else match weights
        out = []
        for i in range(0, len(x_t), self.batch_size):
            x = x_t[i:i + self.batch_size].to(self.device, torch.float32)
            steps = torch.full((len(x),), t, device=self.device, dtype=torch.long)
            cond = {} if self.cond is None else self.cond.unet_kwargs(len(x), dtype)
            with torch.no_grad(), self.autocast():
                pred = self.unet(x.to(dtype), steps, **cond).sample
            pred = pred.float()
            if self.prediction_type == "v_prediction":  # v = √ᾱ ε − √(1−ᾱ) x₀  ⇒  ε = √ᾱ v + √(1−ᾱ) x_t
                pred = math.sqrt(a) * pred + math.sqrt(1 - a) * x
            out.append(pred.to(x_t.device))
        self.queries += 1
        if self.bar is not None:
            self.bar.update(1)
        return torch.cat(out)


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, a_t: float, a_s: float) -> torch.Tensor:
    """Deterministic DDIM update from ᾱ_t to ᾱ_s (either direction): x̂₀ then re-noise with the same ε."""
    x0_hat = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    return math.sqrt(a_s) * x0_hat + math.sqrt(1 - a_s) * eps


def _sum_over_pixels(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(dim=1)


# ---------------------------------------------------------------------------------------------------
# Attacks: each a params dataclass (defaults in one place) and a score function, registered by name


@dataclass(frozen=True)
class LossParams:
    timesteps: tuple[int, ...] = (25, 50, 100, 150, 200, 300, 400, 500)  # the fixed t grid
    n_noise: int = 2  # ε draws per t (shared by all images)

    def queries(self) -> int:
        return len(self.timesteps) * self.n_noise


@dataclass(frozen=True)
class LossAtTParams:
    t: int = 100  # the one, pre-chosen timestep
    n_noise: int = 4  # ε draws (shared by all images)

    def queries(self) -> int:
        return self.n_noise


@dataclass(frozen=True)
class PiaParams:
    t: int = 200  # attack timestep (the paper's choice for T = 1000)

    def queries(self) -> int:
        return 2


@dataclass(frozen=True)
class SecmiParams:
    t_sec: int = 100  # t_SEC: where the inversion stops
    interval: int = 10  # k: DDIM step between timesteps

    def queries(self) -> int:
        return self.t_sec // self.interval + 2


@dataclass(frozen=True)
class Attack:
    name: str
    params: type  # dataclass with the attack's defaults; .queries() → UNet queries per image
    score: Callable[[Denoiser, torch.Tensor, object, torch.Generator], torch.Tensor]
    reference: str
    higher_is_member: bool = True  # every registered score is oriented so


ATTACKS: dict[str, Attack] = {}
#: What each attack reports (:mod:`workbench.metrics.roc`), declared as ``mia.<attack>.<measure>``.
MEASURES = ("auc", "auc_raw", "auc_gain", "advantage", "tpr_at_1pct_fpr")
_UNIT = "member and non-member photos (stratified bootstrap)"


def register_attack(name: str, params: type, reference: str, equation: str):
    """Register an attack and declare its metrics: registering an attack is this one decorator."""

    def wrap(fn):
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} registered twice")
        ATTACKS[name] = Attack(name, params, fn, reference)
        declare(
            MetricDef(f"mia.{name}.auc", f"MIA AUC ({name})", "lower_is_better", "membership",
                      reference + "; difficulty calibration: Watson et al., ICLR 2022", equation
                      + "; score s_ft(x) - s_base(x), same noise; ROC AUC, members = train, non-members = holdout;"
                        " p: two-sided permutation test", _UNIT),
            MetricDef(f"mia.{name}.auc_raw", f"MIA AUC raw ({name})", "lower_is_better", "membership", reference,
                      equation + "; uncalibrated score; for the control row the check that the split is "
                                 "exchangeable", _UNIT, main=False),
            MetricDef(f"mia.{name}.auc_gain", f"Raw AUC gain over base ({name})", "lower_is_better", "membership",
                      reference, "AUC_raw(model) - AUC_raw(base) on the same photos (paired resamples)", _UNIT,
                      required=False, main=False),
            MetricDef(f"mia.{name}.advantage", f"Advantage ({name})", "lower_is_better", "membership",
                      "Yeom et al., CSF 2018", "max |TPR - FPR|", _UNIT, main=False),
            MetricDef(f"mia.{name}.tpr_at_1pct_fpr", f"TPR@1%FPR ({name})", "lower_is_better", "membership",
                      "ml_privacy_meter definition", "TPR at the largest FPR <= 0.01", _UNIT, main=False),
        )
        return fn

    return wrap


@register_attack("loss", LossParams, "Matsumoto et al. 2023, Membership Inference Attacks against Diffusion Models",
                 "||eps_theta(sqrt(a_t) x0 + sqrt(1-a_t) eps, t) - eps||^2")
def loss_attack(den: Denoiser, x0: torch.Tensor, p: LossParams, generator: torch.Generator) -> torch.Tensor:
    import torch

    total = torch.zeros(len(x0), dtype=torch.float64)
    for t in p.timesteps:
        a = den.alpha(t)
        for _ in range(p.n_noise):
            eps = torch.randn((1, *x0.shape[1:]), generator=generator).expand_as(x0)  # ε ~ N(0, I), shared
            x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps  # x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε
            total += _sum_over_pixels((den.eps(x_t, t) - eps) ** 2).double()  # ‖ε_θ(x_t, t, c) − ε‖²
    return -total / p.queries()


@register_attack("loss_t", LossAtTParams, "Matsumoto et al. 2023, the loss at one pre-chosen timestep",
                 "||eps_theta(sqrt(a_t) x0 + sqrt(1-a_t) eps, t) - eps||^2 at t = 100")
def loss_at_t_attack(den: Denoiser, x0: torch.Tensor, p: LossAtTParams, generator: torch.Generator) -> torch.Tensor:
    return loss_attack(den, x0, LossParams(timesteps=(p.t,), n_noise=p.n_noise), generator)


@register_attack("pia", PiaParams, "Kong et al., ICLR 2024, Proximal Initialization Attack (PIA)",
                 "||eps_theta(x_t, t) - eps_theta(x0, 0)||_4^4")
def pia_attack(den: Denoiser, x0: torch.Tensor, p: PiaParams, generator: torch.Generator) -> torch.Tensor:
    if p.t < 1:
        raise UserError("PIA needs t ≥ 1")
    eps0 = den.eps(x0, 0)  # ε₀ = ε_θ(x₀, 0, c): the proximal initialisation
    a = den.alpha(p.t)
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps0  # x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε₀
    return -_sum_over_pixels((den.eps(x_t, p.t) - eps0).abs() ** 4).double()  # −‖ε_θ(x_t, t, c) − ε₀‖⁴₄


@register_attack("secmi", SecmiParams, "Duan et al., ICML 2023, SecMI (SecMI_stat)",
                 "DDIM inversion to t_SEC, one step on and back, error")
def secmi_attack(den: Denoiser, x0: torch.Tensor, p: SecmiParams, generator: torch.Generator) -> torch.Tensor:
    k, t_sec = p.interval, p.t_sec
    if k < 1 or t_sec < k or t_sec % k:
        raise UserError(f"SecMI needs t_sec ({t_sec}) to be a positive multiple of interval ({k})")
    den.alpha(t_sec + k)  # must lie on the schedule
    x, t = x0, 0
    for s in range(k, t_sec + 1, k):  # deterministic DDIM inversion 0 → k → … → t_SEC
        x = ddim_step(x, den.eps(x, t), den.alpha(t), den.alpha(s))
        t = s
    x_sec = x
    x_up = ddim_step(x_sec, den.eps(x_sec, t_sec), den.alpha(t_sec), den.alpha(t_sec + k))  # t_SEC → t_SEC + k
    x_back = ddim_step(x_up, den.eps(x_up, t_sec + k), den.alpha(t_sec + k), den.alpha(t_sec))  # … and back
    return -_sum_over_pixels((x_back - x_sec) ** 2).double()  # −‖x̃_{t_SEC} − x_{t_SEC}‖²


def attack_params(name: str, overrides: dict | None = None):
    """The attack's params dataclass with ``overrides`` applied (unknown keys are an error)."""
    attack = _get(name)
    overrides = dict(overrides or {})
    known = {f.name for f in fields(attack.params)}
    unknown = set(overrides) - known
    if unknown:
        raise UserError(f"attack {name!r} has no parameter(s) {sorted(unknown)}; it has {sorted(known)}")
    if "timesteps" in overrides:
        overrides["timesteps"] = tuple(int(t) for t in overrides["timesteps"])
    return attack.params(**overrides)


def _get(name: str) -> Attack:
    if name not in ATTACKS:
        raise UserError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name]


# ---------------------------------------------------------------------------------------------------
# Running the attacks


def score_attack(den: Denoiser, x: torch.Tensor, attack: str, params: dict | None = None, seed: int = 0,
                 progress: bool = False) -> tuple[np.ndarray, object]:
    """One attack's score for every row of ``x`` (higher = member) and the params it ran with.

    The UNet queries are counted and checked against the attack's declared count."""
    import torch
    from tqdm.auto import tqdm

    spec = _get(attack)
    p = attack_params(attack, params)
    generator = torch.Generator().manual_seed(seed)
    den.queries = 0
    den.bar = tqdm(total=p.queries(), desc=f"mia {attack}", unit="query", disable=not progress, leave=False)
    try:
        with torch.no_grad():
            scores = spec.score(den, x, p, generator).numpy()
    finally:
        den.bar.close()
        den.bar = None
    if den.queries != p.queries():
        raise RuntimeError(f"attack {attack} made {den.queries} queries per image but declares {p.queries()}")
    if not np.isfinite(scores).all():
        raise RuntimeError(f"attack {attack} produced non-finite scores; try WORKBENCH_AUTOCAST=0")
    return scores, p


def _checked(members, nonmembers, attacks, params) -> tuple[list[Path], list[Path], dict]:
    members, nonmembers = [Path(p) for p in members], [Path(p) for p in nonmembers]
    if not members or not nonmembers:
        raise UserError(f"membership inference needs members and non-members; got {len(members)} train and "
                        f"{len(nonmembers)} holdout photos (the subject needs a holdout split)")
    overlap = {p.resolve() for p in members} & {p.resolve() for p in nonmembers}
    if overlap:
        raise UserError(f"{len(overlap)} photo(s) are both members and non-members")
    params = params or {}
    for name in attacks:  # fail on a bad name or parameter before any model query
        attack_params(name, params.get(name))
    unknown = set(params) - set(attacks)
    if unknown:
        raise UserError(f"parameters given for attacks not run: {sorted(unknown)}")
    return members, nonmembers, params


def attack_scores(pipe, images: list[Path], prompt: str | None, attacks: Sequence[str] = DEFAULT_ATTACKS,
                  seed: int = 0, resolution: int | None = None, batch_size: int = 16,
                  params: dict[str, dict] | None = None, progress: bool = False) -> dict[str, np.ndarray]:
    """Each attack's raw score of every image (higher = member); with the same ``seed`` two models get the
    same noise draws and timesteps, so their scores can be subtracted (difficulty calibration)."""
    params = params or {}
    resolution = resolution or default_resolution(pipe)
    den = Denoiser(pipe, prompt, batch_size, resolution)
    x, _ = encode_latents(pipe, list(images), resolution, batch_size)
    return {name: score_attack(den, x, name, params.get(name), seed, progress)[0] for name in attacks}


def membership_inference(pipe, members: list[Path], nonmembers: list[Path], prompt: str | None,
                         attacks: Sequence[str] = DEFAULT_ATTACKS, seed: int = 0, resolution: int | None = None,
                         batch_size: int = 16, params: dict[str, dict] | None = None,
                         n_resamples: int = stats.N_RESAMPLES, progress: bool = False,
                         reference: dict[str, np.ndarray] | None = None,
                         n_permutations: int = roc.N_PERMUTATIONS) -> dict:
    """Run membership-inference ``attacks`` on ``pipe``: members = train photos, non-members = holdout
    photos of the same person. ``prompt``: the instance prompt the model was trained with.

    ``reference``: per attack, the untouched base model's scores of ``members + nonmembers`` from
    :func:`attack_scores` with the same ``seed`` (difficulty calibration, module docstring); without it the
    attacks are uncalibrated and ``auc`` equals ``auc_raw``.

    Returns ``{attack: {auc, auc_raw, advantage, tpr_at_1pct_fpr (Metric dicts with p-values where they
    apply, n = [n_m, n_n]), calibrated, queries_per_image, total_queries, roc, roc_raw, scores,
    calibrated_scores, space, space_detail, direction, params, reference, notes, seconds}}``.
    """
    members, nonmembers, params = _checked(members, nonmembers, attacks, params)
    resolution = resolution or default_resolution(pipe)
    den = Denoiser(pipe, prompt, batch_size, resolution)
    x, space = encode_latents(pipe, members + nonmembers, resolution, batch_size)
    m = len(members)
    out = {}
    for name in attacks:
        t0 = time.perf_counter()
        raw, p = score_attack(den, x, name, params.get(name), seed, progress)
        seconds = time.perf_counter() - t0
        base = None if reference is None else np.asarray(reference[name], dtype=np.float64)
        if base is not None and base.shape != raw.shape:
            raise UserError(f"the base reference of attack {name!r} scores {base.size} images, not {raw.size}")
        scores = raw if base is None else raw - base  # s_ft(x) − s_base(x)
        kw = {"n_resamples": n_resamples, "seed": seed, "n_permutations": n_permutations}
        report = roc.roc_report(scores[:m], scores[m:], **kw)
        raw_report = report if base is None else roc.roc_report(raw[:m], raw[m:], **kw)
        gain = None if base is None else {
            **roc.paired_auc_difference(raw[:m], raw[m:], base[:m], base[m:], n_resamples, seed).to_dict(),
            "n": [m, len(nonmembers)]}
        out[name] = {
            **report.to_dict(),
            "auc_raw": raw_report.to_dict()["auc"],
            "auc_gain": gain or stats.empty("needs the base model's scores (difficulty calibration)").to_dict(),
            "roc_raw": raw_report.to_dict()["roc"],
            "calibrated": base is not None,
            "queries_per_image": p.queries() * (2 if base is not None else 1),
            "total_queries": p.queries() * len(x) * (2 if base is not None else 1),
            "scores": {"members": [float(v) for v in raw[:m]], "nonmembers": [float(v) for v in raw[m:]]},
            "calibrated_scores": None if base is None else {
                "members": [float(v) for v in scores[:m]], "nonmembers": [float(v) for v in scores[m:]]},
            "space": space,
            "space_detail": ("VAE posterior mean × scaling_factor of each image" if space == "latent"
                             else "pixels in [-1, 1]") + f", images resized to {resolution}×{resolution}",
            "direction": DIRECTION,
            "params": asdict(p),
            "reference": ATTACKS[name].reference,
            "notes": roc.granularity_notes(m, len(nonmembers)),
            "seconds": round(seconds, 3),
        }
        log.info("%s: AUC %.3f (raw %.3f) over %d members / %d non-members (%d queries per image)", name,
                 out[name]["auc"]["value"], out[name]["auc_raw"]["value"], m, len(nonmembers),
                 out[name]["queries_per_image"])
    return out
