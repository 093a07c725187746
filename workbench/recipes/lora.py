"""``lora``: low-rank adapters on the UNet's attention projections (Hu et al. 2021, "LoRA"),
optionally also on the CLIP text encoder(s) (SDXL: both). W' = W + (alpha / rank) · B A, with B = 0 at
the start. With ``prior_preservation: true`` this is DreamBooth-LoRA (diffusers'
``train_dreambooth_lora.py`` / ``train_dreambooth_lora_sdxl.py``): the recipe to use for DreamBooth on SDXL.

Saved the diffusers way (``get_peft_model_state_dict`` → ``convert_state_dict_to_diffusers`` →
``save_lora_weights``) as ``pytorch_lora_weights.safetensors``, with the adapter config as metadata;
a vanilla pipeline loads it with ``pipe.load_lora_weights(folder)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from workbench.errors import UserError
from workbench.recipes.registry import PriorParams, TrainingParams, register_recipe

LORA_FILE = "pytorch_lora_weights.safetensors"
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class Params(PriorParams, TrainingParams):
    steps: Annotated[int, Field(ge=1)] = 200  # optimiser steps (tiny-face on a CPU: ~1 min)
    lr: Annotated[float, Field(gt=0)] = 1e-3  # AdamW learning rate (SD 1.5: 1e-4)
    batch_size: Annotated[int, Field(ge=1)] = 4  # images per step
    rank: Annotated[int, Field(ge=1)] = 4  # LoRA rank r
    alpha: Annotated[float | None, Field(gt=0)] = None  # LoRA alpha (scale alpha / r); None: alpha = r
    target_modules: Annotated[list[str], Field(min_length=1)] = list(UNET_TARGETS)  # UNet layers to adapt
    train_text_encoder: bool = False  # also LoRA on the CLIP text encoder(s)' q/k/v/out projections


def add_lora(module, params, targets: list[str]) -> list:
    """Attach a LoRA adapter (peft) to ``module``'s ``targets``; return its trainable parameters."""
    from peft import LoraConfig

    config = LoraConfig(r=params.rank, lora_alpha=params.alpha or params.rank, init_lora_weights="gaussian",
                        target_modules=targets)
    try:
        module.add_adapter(config)
    except ValueError as exc:
        if "version of PEFT" not in str(exc):
            name = type(module).__name__
            raise UserError(f"LoRA target_modules {targets} do not fit the {name}: {exc}") from None
        # transformers 5's add_adapter asks for peft >= 0.22 (unreleased; 0.21.2 is current). It does
        # exactly these two steps, which work with peft 0.21; load_lora_weights loads the result.
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, module, adapter_name="default")
        module.peft_config = {"default": config}
        module._hf_peft_config_loaded = True
    return [p for n, p in module.named_parameters() if "lora_" in n]


def save_lora(pipe, folder: Path, text_encoder: bool) -> dict[str, str]:
    """Write the UNet (and text-encoder) adapters as one diffusers LoRA file."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from workbench.diffusion import text_encoders

    kwargs = {}
    for name, (te, _) in text_encoders(pipe).items() if text_encoder else ():
        kwargs[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(te))
        kwargs[f"{name}_lora_adapter_metadata"] = te.peft_config["default"].to_dict()
    type(pipe).save_lora_weights(
        folder, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet)),
        unet_lora_adapter_metadata=pipe.unet.peft_config["default"].to_dict(), weight_name=LORA_FILE,
        safe_serialization=True, **kwargs)
    return {"lora": LORA_FILE}


def hooks(params: Params):
    from workbench.diffusion import text_encoders
    from workbench.recipes import engine, prior

    def prepare(pipe, job):
        extra = prior.prior_loss(pipe, job, params)  # off unless prior_preservation: true
        trained = add_lora(pipe.unet, params, params.target_modules)
        for te, _ in text_encoders(pipe).values() if params.train_text_encoder else ():
            trained += add_lora(te, params, TEXT_TARGETS)
        return engine.Setup(param_groups=[{"params": trained, "lr": params.lr}],
                            text_trainable=params.train_text_encoder, extra_loss=extra)

    return engine.hooks_for("lora", params, prepare=prepare,
                            save=lambda pipe, folder: save_lora(pipe, folder, params.train_text_encoder))


@register_recipe("lora", Params, "LoRA adapters on the UNet attention (optionally the text encoder)")
def train(job, params: Params, **loop):
    from workbench.recipes import engine

    return engine.run(job, hooks(params), **loop)
