"""The shared diffusion toolbox: what intake (Anti-DreamBooth), the recipes (training) and the metrics
(membership inference) all do with a diffusers pipeline, kept out of any one stage.

- images → tensors in [-1, 1] (:func:`load_images`), as training sees them;
- images → VAE latents: the posterior N(mean, std²) of each image and its mirror (:func:`encode_images`,
  training re-samples z₀ from it every step) or the posterior mean (:func:`encode_latents`, the
  deterministic latent the attacks use);
- a prompt → the UNet's conditioning (:func:`conditioning`, a :class:`Conditioning`): one builder per
  pipeline family in :data:`FAMILIES` (SD 1.x/2.x: the CLIP text encoder's last hidden states; SDXL:
  both text encoders' penultimate hidden states concatenated, the pooled embedding of
  ``text_encoder_2`` and the size/crop ``time_ids``), so training, the attacks and anything else that
  calls the UNet condition it the way the pipeline's own ``__call__`` does;
- the pipeline's training noise schedule (:func:`noise_scheduler`) and the denoising objective
  (:func:`denoising_losses`): DDPM's simplified loss (Ho et al. 2020, Algorithm 1) in latent space
  (Rombach et al. 2022), z_t = √ᾱ_t z₀ + √(1-ᾱ_t) ε, L = ‖ε - ε_θ(z_t, t, c)‖² (for v-prediction
  models the target is v = √ᾱ_t ε - √(1-ᾱ_t) z₀).

Everything here is a plain function of a pipeline and tensors; torch is imported inside functions so
that importing the module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from workbench.errors import UserError

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


def default_resolution(pipe) -> int:
    """The image size the pipeline generates: UNet sample size × VAE down-sampling factor."""
    factor = getattr(pipe, "vae_scale_factor", 1) if getattr(pipe, "vae", None) is not None else 1
    return int(pipe.unet.config.sample_size) * int(factor)


# ---------------------------------------------------------------------------------------------------
# Conditioning: what the UNet sees besides z_t and t, built by one registered function per family


@dataclass(frozen=True)
class Conditioning:
    """The UNet's conditioning on one prompt (batch 1): ``unet(z_t, t, **cond.unet_kwargs(B)).sample``.

    ``hidden``: ``encoder_hidden_states`` (1, T, D), the cross-attention context. ``added``: the UNet's
    ``added_cond_kwargs``: for SDXL ``text_embeds`` (1, P), the pooled embedding of ``text_encoder_2``,
    and ``time_ids`` (1, 6) = (original h, w, crop top, left, target h, w); empty for SD 1.x/2.x."""

    hidden: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)

    def unet_kwargs(self, batch: int, dtype=None) -> dict:
        """Keyword arguments of the UNet call for ``batch`` rows (cast to ``dtype`` when given)."""

        def rows(x):
            x = x.expand(batch, *x.shape[1:])
            return x if dtype is None else x.to(dtype)

        kw = {"encoder_hidden_states": rows(self.hidden)}
        return kw | ({"added_cond_kwargs": {k: rows(v) for k, v in self.added.items()}} if self.added else {})

    def detached(self) -> Conditioning:
        """fp32 copies without a graph."""
        return Conditioning(self.hidden.detach().float(), {k: v.detach().float() for k, v in self.added.items()})


@dataclass(frozen=True)
class Family:
    """How one family of diffusers pipelines conditions its UNet on a prompt."""

    name: str  # "sd" (SD 1.x/2.x and tiny-face), "sdxl"
    text_encoders: tuple[tuple[str, str], ...]  # (text encoder, its tokenizer) component names, in order
    encode: Callable[[object, str, int], Conditioning]  # (pipe, prompt, resolution) → conditioning, with graph


FAMILIES: dict[str, Family] = {}  # by diffusers pipeline class name


def register_family(family: Family, *pipeline_classes: str) -> Family:
    for cls in pipeline_classes:
        FAMILIES[cls] = family
    return family


def family(pipe) -> Family:
    """The registered family of ``pipe``'s class (or of a base class)."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    raise UserError(f"{type(pipe).__name__} is not supported: the workbench conditions the UNets of "
                    f"{', '.join(sorted(FAMILIES))}")


def text_encoders(pipe) -> dict[str, tuple]:
    """``{component name: (text encoder, tokenizer)}`` of ``pipe``, in its family's order."""
    return {te: (getattr(pipe, te), getattr(pipe, tok)) for te, tok in family(pipe).text_encoders}


def _ids(tokenizer, prompt: str, device):
    return tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def _encode_sd(pipe, prompt: str, resolution: int) -> Conditioning:
    """The CLIP text encoder's last hidden states, as ``StableDiffusionPipeline.encode_prompt``."""
    return Conditioning(pipe.text_encoder(_ids(pipe.tokenizer, prompt, pipe.text_encoder.device))[0])


def _encode_sdxl(pipe, prompt: str, resolution: int) -> Conditioning:
    """As ``StableDiffusionXLPipeline.encode_prompt`` and ``_get_add_time_ids``: both text encoders'
    penultimate hidden states, concatenated; the pooled (projected) output of ``text_encoder_2``; and
    ``time_ids`` for an uncropped square image: original size = target size = ``resolution``, crop (0, 0)
    (the training images are already resized to ``resolution``, as in diffusers' SDXL examples)."""
    import torch

    hidden = []
    for te, tok in text_encoders(pipe).values():
        out = te(_ids(tok, prompt, te.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
    pooled = out.text_embeds  # text_encoder_2 (CLIPTextModelWithProjection)
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=pooled.dtype,
                            device=pooled.device)
    unet = pipe.unet.config
    if unet.addition_time_embed_dim * 6 + pooled.shape[-1] != unet.projection_class_embeddings_input_dim:
        raise UserError("this SDXL UNet expects other added conditions than size/crop time ids and the pooled "
                        "text embedding (a refiner with an aesthetic score?); only SDXL base models are supported")
    return Conditioning(torch.cat(hidden, dim=-1), {"text_embeds": pooled, "time_ids": time_ids})


register_family(Family("sd", (("text_encoder", "tokenizer"),), _encode_sd), "StableDiffusionPipeline")
register_family(Family("sdxl", (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")), _encode_sdxl),
                "StableDiffusionXLPipeline")


def conditioning(pipe, prompt: str, resolution: int | None = None, grad: bool = False) -> Conditioning:
    """The UNet's conditioning on ``prompt`` for images of ``resolution`` px (default: the pipeline's own).

    ``grad``: keep the graph (recipes that train the text side); else fp32 without gradients."""
    import torch

    encode = family(pipe).encode
    resolution = resolution or default_resolution(pipe)
    if grad:
        return encode(pipe, prompt, resolution)
    with torch.no_grad():
        return encode(pipe, prompt, resolution).detached()


def unconditional(pipe, resolution: int | None = None) -> Conditioning:
    """The ∅ of classifier-free guidance as the pipeline's ``__call__`` forms it: the empty prompt's
    conditioning, or zeros (time ids kept) where the pipeline sets ``force_zeros_for_empty_prompt`` (SDXL)."""
    import torch

    cond = conditioning(pipe, "", resolution)
    if not getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        return cond
    added = {k: v if k == "time_ids" else torch.zeros_like(v) for k, v in cond.added.items()}
    return Conditioning(torch.zeros_like(cond.hidden), added)


def encode_prompt(pipe, prompt: str, grad: bool = False) -> torch.Tensor:
    """``encoder_hidden_states`` (1, T, D) of ``prompt`` alone; enough for SD 1.x/2.x, while an SDXL UNet
    also needs the added conditions: call it with :func:`conditioning`."""
    return conditioning(pipe, prompt, grad=grad).hidden


def noise_scheduler(pipe):
    """The pipeline's own training noise schedule (``DDPMScheduler.from_config``): ᾱ_t, T, prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def denoising_losses(unet, scheduler, z0: torch.Tensor, cond: Conditioning,
                     generator: torch.Generator) -> torch.Tensor:
    """The objective of the module docstring, per sample (B,): fresh ε and t for each clean latent z₀,
    conditioned on ``cond``. Differentiable in z₀ (Anti-DreamBooth's PGD) and in the UNet."""
    import torch

    b, device = len(z0), z0.device
    noise = torch.randn(z0.shape, generator=generator).to(device)  # ε ~ N(0, I)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    zt = scheduler.add_noise(z0, noise, t)  # z_t = √ᾱ_t z₀ + √(1-ᾱ_t) ε
    target = scheduler.get_velocity(z0, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise
    pred = unet(zt, t, **cond.unet_kwargs(b)).sample
    return (pred.float() - target.float()).pow(2).flatten(1).mean(1)
