"""``pivotal``: pivotal tuning, a new token embedding and UNet LoRA trained jointly (as in
cloneofsimo/lora's "pivotal tuning" and diffusers' advanced DreamBooth-LoRA script): the token
(the "pivot", textual inversion) with its own learning rate, the adapters with theirs.

Saves both ``learned_embeds.safetensors`` and ``pytorch_lora_weights.safetensors``; load with
``pipe.load_textual_inversion(folder)`` then ``pipe.load_lora_weights(folder)``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from workbench.recipes.lora import UNET_TARGETS
from workbench.recipes.registry import TrainingParams, register_recipe


class Params(TrainingParams):
    steps: Annotated[int, Field(ge=1)] = 200  # optimiser steps
    lr: Annotated[float, Field(gt=0)] = 1e-3  # AdamW learning rate of the LoRA weights
    token_lr: Annotated[float, Field(gt=0)] = 5e-3  # AdamW learning rate of the new embedding row
    batch_size: Annotated[int, Field(ge=1)] = 4  # images per step
    rank: Annotated[int, Field(ge=1)] = 4  # LoRA rank r
    alpha: Annotated[float | None, Field(gt=0)] = None  # LoRA alpha; None: alpha = r
    target_modules: Annotated[list[str], Field(min_length=1)] = list(UNET_TARGETS)  # UNet layers to adapt
    placeholder: str | None = None  # the new token; None: "<identifier>", e.g. "<sks>"
    initializer: str | None = None  # one-token word its embedding starts from; None: the class noun


def hooks(params: Params, job):
    from workbench.recipes import engine, lora, textual_inversion

    token = textual_inversion.placeholder_token(params, job)

    def prepare(pipe, job):
        weights = textual_inversion.add_tokens(pipe, token, params.initializer or job.class_noun)
        adapters = lora.add_lora(pipe.unet, params, params.target_modules)
        return engine.Setup(param_groups=[{"params": adapters, "lr": params.lr},
                                          {"params": weights, "lr": params.token_lr, "weight_decay": 0.0}],
                            text_trainable=True)

    def save(pipe, folder):
        return textual_inversion.save_embeds(pipe, folder, token) | lora.save_lora(pipe, folder, False)

    return engine.hooks_for("pivotal", params, token=token, prepare=prepare, save=save)


@register_recipe("pivotal", Params, "pivotal tuning: a new token embedding and UNet LoRA, trained jointly")
def train(job, params: Params, **loop):
    from workbench.recipes import engine

    return engine.run(job, hooks(params, job), **loop)
