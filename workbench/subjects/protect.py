"""Protected photos: Anti-DreamBooth (Van Le et al., ICCV 2023, "Anti-DreamBooth: Protecting users
from personalized text-to-image synthesis"), applied to a subject's training crops after intake.

Each photo x gets a perturbation δ with ‖δ‖∞ ≤ ε (in the model's [-1, 1] pixel scale; the paper's
η = 0.05 is about 6/255) that *raises* the denoising loss a model fine-tuned on the photos would have,
so that fine-tuning on x + δ learns the face badly. Projected gradient ascent (Madry et al. 2018):

    x' ← Π_{‖x'-x‖∞ ≤ ε} clip₋₁¹( x' + α · sign ∇ₓ' L(θ, x') ),   L = E_{t,ε}‖ε - ε_θ(z_t(E(x')), t, c)‖²

with the gradient taken through the VAE encoder E and c the instance prompt. Methods (the paper's
Sec. 4; a registry, :data:`METHODS`):

- ``fsmg`` (Fully-trained Surrogate Model Guidance): fine-tune a surrogate θ* on the *clean* photos,
  then run every PGD round against that fixed θ*.
- ``aspl`` (Alternating Surrogate and Perturbation Learning, the paper's best): per round, copy the
  model, fine-tune the copy on the clean photos, take PGD steps against the copy, then fine-tune the
  model itself on the current *perturbed* photos, so the surrogate follows what a service would train.

The surrogate is the experiment's own backbone (white-box, the paper's main setting). The result is
quantised to 8-bit PNG and projected again in 8-bit levels, so every stored pixel stays within
⌊ε·127.5⌋ levels of the original: the bound holds for the files, not only the float tensors.

What it costs is measured against the originals: PSNR (dB, higher = closer) per photo with a bootstrap
CI, and the largest pixel change. What it buys is measured downstream, by training any recipe on the
protected photos (spec: ``photos: protected``) and comparing its identity fidelity with the same recipe
on clean photos. Holdout photos are never perturbed: they are the reference the fidelity is measured on.

Files: ``<subject>/protected/<key>/`` holds one PNG per training crop (manifest kind ``crop``, so erasure
and retention treat them like crops) and ``protection.json`` (kind ``record``); ``key`` hashes the
backbone's weights, the parameters and the training crops, so a rerun reuses them.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from workbench.records import TrainingRecord, Value, register_record

log = logging.getLogger(__name__)

REPORT = "protection.json"
LEVEL = 1 / 127.5  # one 8-bit level in the model's [-1, 1] pixel scale


def _at_least_one_level(eps: float) -> float:
    if eps < LEVEL:
        raise ValueError(f"epsilon {eps} is below one 8-bit level ({LEVEL:.4f}): stored photos could not change; "
                         "use at least 0.008 (the paper uses 0.05)")
    return eps


class ProtectParams(BaseModel):
    """How the training photos are protected (spec: ``subject.protection``)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["aspl", "fsmg"] = "aspl"  # Anti-DreamBooth variant: aspl (alternating) or fsmg (fixed surrogate)
    epsilon: Annotated[float, Field(le=1), AfterValidator(_at_least_one_level)] = 0.05  # L-inf, [-1, 1] scale (~6/255)
    step_size: Annotated[float, Field(gt=0)] = 0.005  # PGD step alpha, same scale
    rounds: Annotated[int, Field(ge=1)] = 20  # outer rounds (ASPL: surrogate + PGD + model update)
    pgd_steps: Annotated[int, Field(ge=1)] = 6  # PGD steps per round
    surrogate_steps: Annotated[int, Field(ge=1)] = 3  # surrogate fine-tuning steps per round (FSMG: x rounds, once)
    surrogate_lr: Annotated[float, Field(gt=0)] = 1e-4  # surrogate learning rate (the paper at SD 512 px: 5e-7)
    batch_size: Annotated[int, Field(ge=1)] = 4  # photos per surrogate step and per PGD chunk
    seed: int = 0  # seeds the noise and timesteps of every step


@dataclass(frozen=True)
class Protected:
    """The protected training crops (same order as the subject's ``train``) and what they cost."""

    paths: list[Path]
    report: dict


# ---------------------------------------------------------------------------------------------------
# The objective and its two uses: fine-tune the surrogate (descend), perturb the photos (ascend)


class Objective:
    """Denoising loss of a UNet on pixel images under the instance prompt: the engine's objective
    (:func:`workbench.diffusion.denoising_losses`) on z₀ = E(x), differentiable in x."""

    def __init__(self, pipe, prompt: str, seed: int):
        import torch

        from workbench.diffusion import conditioning, noise_scheduler

        self.vae = pipe.vae
        self.generator = torch.Generator().manual_seed(seed)
        self.scheduler = noise_scheduler(pipe)
        self.cond = conditioning(pipe, prompt)

    def __call__(self, unet, x):
        """Mean loss over the images x (B, 3, H, W) in [-1, 1]; differentiable in x and in unet."""
        from workbench.diffusion import denoising_losses

        z0 = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        return denoising_losses(unet, self.scheduler, z0, self.cond, self.generator).mean()


def fine_tune(unet, objective: Objective, x, steps: int, params: ProtectParams) -> None:
    """``steps`` AdamW steps of the whole UNet on random batches of the (fixed) images x."""
    import torch

    unet.requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=params.surrogate_lr, weight_decay=1e-2)
    for _ in range(steps):
        idx = torch.randint(len(x), (min(params.batch_size, len(x)),), generator=objective.generator)
        objective(unet, x[idx].detach()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def pgd(unet, objective: Objective, x_adv, x, params: ProtectParams):
    """``pgd_steps`` of projected sign-gradient *ascent* on the images, in chunks of ``batch_size``."""
    import torch

    unet.requires_grad_(False)
    out = []
    for start in range(0, len(x), params.batch_size):
        adv, orig = x_adv[start:start + params.batch_size].clone(), x[start:start + params.batch_size]
        for _ in range(params.pgd_steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(unet, adv), adv)
            with torch.no_grad():
                adv = adv + params.step_size * grad.sign()
                adv = (orig + (adv - orig).clamp(-params.epsilon, params.epsilon)).clamp(-1, 1)
        out.append(adv.detach())
    return torch.cat(out)


def aspl(pipe, objective: Objective, x, params: ProtectParams):
    model = copy.deepcopy(pipe.unet)  # follows the perturbed photos, as the service's fine-tune would
    x_adv = x.clone()
    for _ in range(params.rounds):
        surrogate = copy.deepcopy(model)
        fine_tune(surrogate, objective, x, params.surrogate_steps, params)
        x_adv = pgd(surrogate, objective, x_adv, x, params)
        fine_tune(model, objective, x_adv, params.surrogate_steps, params)
    return x_adv


def fsmg(pipe, objective: Objective, x, params: ProtectParams):
    surrogate = copy.deepcopy(pipe.unet)
    fine_tune(surrogate, objective, x, params.rounds * params.surrogate_steps, params)
    x_adv = x.clone()
    for _ in range(params.rounds):
        x_adv = pgd(surrogate, objective, x_adv, x, params)
    return x_adv


METHODS: dict[str, Callable] = {"aspl": aspl, "fsmg": fsmg}


# ---------------------------------------------------------------------------------------------------
# 8-bit files within the bound, and what the perturbation costs


def quantise_within(adv, originals_u8, epsilon: float):
    """Float images in [-1, 1] → uint8 arrays (N, H, W, 3) within ⌊ε·127.5⌋ levels of the originals."""
    import numpy as np

    budget = math.floor(epsilon * 127.5 + 1e-9)
    u8 = np.rint((adv.permute(0, 2, 3, 1).cpu().numpy() + 1.0) * 127.5)
    orig = originals_u8.astype(np.int16)
    return np.clip(u8, orig - budget, orig + budget).clip(0, 255).astype(np.uint8)


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (MAX = 255); ∞ for identical images."""
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@register_record
class ProtectionRecord(TrainingRecord):
    """What the Anti-DreamBooth perturbation cost: its bound, how visible it is (PSNR), the base model's loss.
    ``protection.json`` without the file list; a row trained on protected photos carries it."""

    KIND = "protection"
    COLUMN = "training photos"
    ABSENT = "clean"
    ORDER = 0
    method: str
    params: dict
    linf: float
    psnr_db: dict  # a Metric: value, ci_low, ci_high, n

    def describe(self):
        p = self.psnr_db
        return ["protected (", Value(self.method, "/method", "text"), ", ε = ",
                Value(self.params["epsilon"], "/params/epsilon"), ", largest change ", Value(self.linf, "/linf"),
                "); PSNR ", Value(p["value"], "/psnr_db/value", "g3"), " dB [",
                Value(p["ci_low"], "/psnr_db/ci_low", "g3"), ", ", Value(p["ci_high"], "/psnr_db/ci_high", "g3"),
                "], n = ", Value(p["n"], "/psnr_db/n", "int")]

    @classmethod
    def note(cls) -> str:
        return ("rows trained on protected photos are measured against the original (clean) photos: "
                "members, extraction and identity references are the photos as taken")

    @classmethod
    def from_report(cls, report: dict) -> ProtectionRecord:
        return cls.model_validate({k: v for k, v in report.items() if k != "files"})


def cost_report(protected_u8, originals_u8) -> dict:
    import numpy as np

    from workbench.metrics.stats import bootstrap_mean

    values = [psnr(p, o) for p, o in zip(protected_u8, originals_u8, strict=True)]
    finite = [v for v in values if math.isfinite(v)]
    diff = np.abs(protected_u8.astype(np.int16) - originals_u8.astype(np.int16))
    note = "PSNR of each protected photo against its original (dB)"
    if len(finite) < len(values):
        note += f"; {len(values) - len(finite)} photo(s) left unchanged are not in the mean (their PSNR is infinite)"
    return {
        "psnr_db": bootstrap_mean(finite, note=note, empty_note="no photo was changed").to_dict(),
        "unchanged": len(values) - len(finite),
        "psnr_per_photo": [round(v, 3) if math.isfinite(v) else None for v in values],
        "linf_levels": int(diff.max()), "linf": round(int(diff.max()) / 127.5, 6),
        "mean_abs_levels": round(float(diff.mean()), 4),
    }


# ---------------------------------------------------------------------------------------------------
# The stage: protect a subject's training crops once per (backbone, parameters, crops)


def protection_key(base: str, params: ProtectParams, train: list[Path], prompt: str) -> str:
    from workbench.content import base_key, content_key
    from workbench.lifecycle.manifest import sha256_file

    return content_key({"base": base_key(base), "params": params.model_dump(mode="json"),
                        "train": [sha256_file(p) for p in train], "prompt": prompt})


def protect_subject(subject, base: str, params: ProtectParams, device: str = "cpu",
                    prompt: str = "a photo of sks person") -> Protected:
    """Protect ``subject.train`` against ``base`` (reusing an earlier result with the same key)."""
    import numpy as np
    import torch
    from PIL import Image

    from workbench import paths
    from workbench.backbones.registry import load_backbone
    from workbench.diffusion import load_images
    from workbench.generate import png_bytes
    from workbench.lifecycle import manifest

    folder = paths.subject_dir(subject.id) / "protected" / protection_key(base, params, subject.train, prompt)
    outputs = [folder / p.name for p in subject.train]
    if (folder / REPORT).is_file() and all(p.is_file() for p in outputs):
        return Protected(outputs, json.loads((folder / REPORT).read_text(encoding="utf-8")))
    t0 = time.perf_counter()
    torch.manual_seed(params.seed)
    pipe = load_backbone(base, device)
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.requires_grad_(False)
    pipe.unet.train()
    x = load_images(subject.train, subject.resolution).to(device)
    originals = np.rint((x.permute(0, 2, 3, 1).cpu().numpy() + 1.0) * 127.5).astype(np.uint8)
    objective = Objective(pipe, prompt, params.seed)
    adv = METHODS[params.method](pipe, objective, x, params)
    protected = quantise_within(adv, originals, params.epsilon)
    for path, arr in zip(outputs, protected, strict=True):
        manifest.write_bytes(subject.id, "crop", path, png_bytes(Image.fromarray(arr)))
    with torch.no_grad():
        stored = torch.from_numpy(protected).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        objective.generator.manual_seed(params.seed + 1)
        base_clean = objective(pipe.unet, x).item()
        objective.generator.manual_seed(params.seed + 1)
        base_protected = objective(pipe.unet, stored).item()
    report = {
        "method": params.method, "paper": "Van Le et al., ICCV 2023 (Anti-DreamBooth), " + params.method.upper(),
        "params": params.model_dump(mode="json"), "backbone": base, "prompt": prompt, "n": len(outputs),
        "epsilon_levels": math.floor(params.epsilon * 127.5 + 1e-9),
        "base_loss_clean": round(base_clean, 6), "base_loss_protected": round(base_protected, 6),
        "seconds": round(time.perf_counter() - t0, 2),
        "files": [p.name for p in outputs],
    } | cost_report(protected, originals)
    manifest.write_bytes(subject.id, "record", folder / REPORT, (json.dumps(report, indent=1) + "\n").encode())
    log.info("protected %d photos with %s in %.1f s (PSNR %.1f dB)", len(outputs), params.method,
             report["seconds"], report["psnr_db"]["value"] or math.nan)
    return Protected(outputs, report)
