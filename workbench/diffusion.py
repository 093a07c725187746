"""The shared diffusion toolbox: what intake (Anti-DreamBooth), the recipes (training) and the metrics
(membership inference) all do with a diffusers pipeline, kept out of any one stage.

- images → tensors in [-1, 1] (:func:`load_images`), as training sees them;
- images → VAE latents: the posterior N(mean, std²) of each image and its mirror (:func:`encode_images`,
  training re-samples z₀ from it every step) or the posterior mean (:func:`encode_latents`, the
  deterministic latent the attacks use);
- a prompt → the text encoder's hidden states (:func:`encode_prompt`);
- the pipeline's training noise schedule (:func:`noise_scheduler`) and the denoising objective
  (:func:`denoising_losses`): DDPM's simplified loss (Ho et al. 2020, Algorithm 1) in latent space
  (Rombach et al. 2022), z_t = √ᾱ_t z₀ + √(1-ᾱ_t) ε, L = ‖ε - ε_θ(z_t, t, c)‖² (for v-prediction
  models the target is v = √ᾱ_t ε - √(1-ᾱ_t) z₀).

Everything here is a plain function of a pipeline and tensors; torch is imported inside functions so
that importing the module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


def load_images(paths: Sequence[Path], resolution: int) -> torch.Tensor:
    """RGB images → float tensor (N, 3, H, W) in [-1, 1], bicubic-resized to ``resolution``."""
    import torch

    arrays = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (resolution, resolution):
                im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
            arrays.append(np.asarray(im, dtype=np.float32))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, H, W) in [0, 255]
    return x / 127.5 - 1.0


@dataclass
class LatentSet:
    """VAE posteriors N(mean, std²) of N images followed by their mirror images (rows N..2N-1)."""

    mean: torch.Tensor  # (2N, C, h, w)
    std: torch.Tensor  # (2N, C, h, w)
    scaling: float  # vae.config.scaling_factor

    def __len__(self) -> int:
        return self.mean.shape[0]

    def sample(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """z₀ = scaling · (mean + std · e), e ~ N(0, I): a fresh posterior sample per step."""
        import torch

        mean, std = self.mean[idx], self.std[idx]
        e = torch.randn(mean.shape, generator=generator).to(mean.device)
        return (mean + std * e) * self.scaling


def encode_images(pipe, paths: Sequence[Path], resolution: int, chunk: int = 16) -> LatentSet:
    """Encode images and their horizontal flips once with the (frozen) VAE, in fp32."""
    import torch

    vae = pipe.vae
    x = load_images(list(paths), resolution)
    x = torch.cat([x, x.flip(-1)])  # horizontal-flip augmentation, precomputed
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            dist = vae.encode(x[i:i + chunk].to(vae.device, vae.dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    return LatentSet(torch.cat(means), torch.cat(stds), float(vae.config.scaling_factor))


def encode_latents(pipe, paths: Sequence[Path], resolution: int, batch_size: int = 16) -> tuple[torch.Tensor, str]:
    """Images → the tensors the UNet saw in training, and the space's name ("latent" or "pixel").

    Latent: VAE posterior *mean* × scaling_factor (after subtracting shift_factor where the VAE has
    one), deterministic; a pipeline without a VAE works in pixel space."""
    import torch

    x = load_images(list(paths), resolution)  # (N, 3, H, W) in [-1, 1], as in training
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return x, "pixel"
    means = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            means.append(vae.encode(x[i:i + batch_size].to(vae.device, vae.dtype)).latent_dist.mean.float().cpu())
    z = torch.cat(means)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * float(vae.config.scaling_factor), "latent"


def encode_prompt(pipe, prompt: str, grad: bool = False) -> torch.Tensor:
    """Text-encoder hidden states (1, T, D) of ``prompt``, padded to the tokenizer's maximum length.

    ``grad``: keep the graph (recipes that train the text side); else fp32 without gradients."""
    import torch

    tok = pipe.tokenizer
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids.to(pipe.text_encoder.device)
    if grad:
        return pipe.text_encoder(ids)[0]
    with torch.no_grad():
        return pipe.text_encoder(ids)[0].float()


def noise_scheduler(pipe):
    """The pipeline's own training noise schedule (``DDPMScheduler.from_config``): ᾱ_t, T, prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def denoising_losses(unet, scheduler, z0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The objective of the module docstring, per sample (B,): fresh ε and t for each clean latent z₀;
    ``cond`` (1, T, D) text embeddings. Differentiable in z₀ (Anti-DreamBooth's PGD) and in the UNet."""
    import torch

    b, device = len(z0), z0.device
    noise = torch.randn(z0.shape, generator=generator).to(device)  # ε ~ N(0, I)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    zt = scheduler.add_noise(z0, noise, t)  # z_t = √ᾱ_t z₀ + √(1-ᾱ_t) ε
    target = scheduler.get_velocity(z0, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    pred = unet(zt, t, cond.expand(b, -1, -1)).sample
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)
