"""Full-size architectures without weights: SD 1.5 and SDXL pipelines with random (seeded) weights.

``workbench backbones build-random sd15|sdxl --out DIR [--tiny]`` writes a diffusers pipeline folder with
the real architecture, so training-speed, memory and sampling benchmarks at real scale run on a GPU
machine that cannot download. Nothing it generates means anything: the weights are noise.

The configs are written here by hand from the published ``config.json`` files:
- SD 1.5 (``runwayml/stable-diffusion-v1-5``): UNet 320/640/1280/1280, cross-attention 768, 8 heads;
  CLIP ViT-L/14 text encoder (12 layers, width 768, quick-GELU); VAE 128/256/512/512, f = 8, scaling 0.18215.
  Parameters: UNet 859,520,964; text encoder 123,060,480; VAE 83,653,863.
- SDXL 1.0 (``stabilityai/stable-diffusion-xl-base-1.0``; Podell et al. 2023): UNet 320/640/1280 with
  1/2/10 transformer layers, cross-attention 2048 (768 + 1280), ``addition_embed_type="text_time"``
  (size/crop conditioning, 6 x 256 + 1280 = 2816 inputs); CLIP ViT-L/14 + OpenCLIP ViT-bigG/14 text
  encoder with projection (32 layers, width 1280, GELU); the same VAE with scaling 0.13025.
  Parameters: UNet 2,567,463,684; text encoder 2 694,659,840.
``--tiny`` keeps every block type, count and wiring and shrinks the widths, so tests run on a CPU.

The tokenizer is the offline byte-level BPE of :func:`workbench.backbones.tiny_face.build_tokenizer_files`
(77 tokens, as CLIP): the real CLIP vocabulary cannot be downloaded here; the embedding table keeps CLIP's
49,408 rows at full size.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import UserError

CLIP_VOCAB = 49408
MAX_TOKENS = 77
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def _vae(tiny: bool, scaling: float, size: int) -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=size, scaling_factor=scaling,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(16, 16, 32, 32) if tiny else (128, 256, 512, 512),
                layers_per_block=1 if tiny else 2, norm_num_groups=8 if tiny else 32)


def _clip(tiny: bool, width: int, layers: int, heads: int, act: str, projection: int) -> dict:
    if tiny:
        width, layers, heads, projection = 32, 2, 2, 32
    return dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads,
                max_position_embeddings=MAX_TOKENS, projection_dim=projection, hidden_act=act)


def sd15_configs(tiny: bool) -> dict:
    unet = dict(sample_size=16 if tiny else 64, in_channels=4, out_channels=4, layers_per_block=1 if tiny else 2,
                block_out_channels=(32, 32, 64, 64) if tiny else (320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                cross_attention_dim=32 if tiny else 768, attention_head_dim=8, norm_num_groups=8 if tiny else 32,
                act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1)
    return {"unet": unet, "vae": _vae(tiny, 0.18215, 128 if tiny else 512),
            "text_encoder": _clip(tiny, 768, 12, 12, "quick_gelu", 768)}


def sdxl_configs(tiny: bool) -> dict:
    te1, te2 = _clip(tiny, 768, 12, 12, "quick_gelu", 768), _clip(tiny, 1280, 32, 20, "gelu", 1280)
    time_dim = 8 if tiny else 256
    unet = dict(sample_size=16 if tiny else 128, in_channels=4, out_channels=4, layers_per_block=1 if tiny else 2,
                block_out_channels=(32, 64, 64) if tiny else (320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 2) if tiny else (1, 2, 10),
                attention_head_dim=(2, 4, 4) if tiny else (5, 10, 20), use_linear_projection=True,
                cross_attention_dim=te1["hidden_size"] + te2["hidden_size"], norm_num_groups=8 if tiny else 32,
                addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                projection_class_embeddings_input_dim=6 * time_dim + te2["projection_dim"],
                act_fn="silu", flip_sin_to_cos=True, freq_shift=0)
    return {"unet": unet, "vae": _vae(tiny, 0.13025, 128 if tiny else 1024) | {"force_upcast": True},
            "text_encoder": te1, "text_encoder_2": te2}


def _tokenizer():
    from transformers import CLIPTokenizer

    from workbench.backbones.tiny_face import build_tokenizer_files

    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer_files(Path(tmp))
        cfg = Path(tmp) / "tokenizer_config.json"
        cfg.write_text(json.dumps(json.loads(cfg.read_text()) | {"model_max_length": MAX_TOKENS}))
        return CLIPTokenizer.from_pretrained(tmp)


def _text_model(cfg: dict, tokenizer, tiny: bool, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(vocab_size=len(tokenizer) if tiny else CLIP_VOCAB, eos_token_id=eos, pad_token_id=eos,
                            bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"), **cfg)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _build_sd15(tiny: bool):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    cfg, tok = sd15_configs(tiny), _tokenizer()
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**cfg["vae"]), text_encoder=_text_model(cfg["text_encoder"], tok, tiny, False),
        tokenizer=tok, unet=UNet2DConditionModel(**cfg["unet"]), scheduler=DDIMScheduler(**SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _build_sdxl(tiny: bool):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    cfg, tok = sdxl_configs(tiny), _tokenizer()
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**cfg["vae"]), text_encoder=_text_model(cfg["text_encoder"], tok, tiny, False),
        text_encoder_2=_text_model(cfg["text_encoder_2"], tok, tiny, True), tokenizer=tok, tokenizer_2=tok,
        unet=UNet2DConditionModel(**cfg["unet"]), scheduler=DDIMScheduler(**SCHEDULER),
        force_zeros_for_empty_prompt=True)


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    configs: Callable[[bool], dict]
    build: Callable[[bool], object]
    resolution: int  # full size, in pixels


ARCHITECTURES: dict[str, Architecture] = {
    "sd15": Architecture("sd15", "Stable Diffusion 1.5 (UNet 860 M, CLIP ViT-L/14)", sd15_configs, _build_sd15, 512),
    "sdxl": Architecture("sdxl", "SDXL 1.0 base (UNet 2.6 B, CLIP ViT-L/14 + OpenCLIP bigG/14)", sdxl_configs,
                         _build_sdxl, 1024),
}
DTYPES = ("float16", "bfloat16", "float32")


def build_random(arch: str, out: str | Path, tiny: bool = False, seed: int = 0, dtype: str = "float16") -> Path:
    """Write a ``arch`` pipeline with random weights (``torch.manual_seed(seed)``) to ``out``; returns it."""
    import torch

    if arch not in ARCHITECTURES:
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new folder for the pipeline")
    torch.manual_seed(seed)
    pipe = ARCHITECTURES[arch].build(tiny)
    pipe.to(getattr(torch, dtype))
    pipe.save_pretrained(out, safe_serialization=True)
    card = {"architecture": arch, "tiny": tiny, "seed": seed, "dtype": dtype,
            "weights": "random (seeded); for benchmarks only, generates noise",
            "source": "workbench.backbones.random_arch (configs written from the published config.json files)"}
    (out / "random_weights.json").write_text(json.dumps(card, indent=1) + "\n")
    return out
