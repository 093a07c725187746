"""``dreambooth``: fine-tune the whole UNet (optionally the text encoder) on the subject's photos
captioned "a photo of sks person" (Ruiz et al. 2023, "DreamBooth").

With prior preservation (on by default here; :mod:`workbench.recipes.prior`) each step also trains
on class images of the base model, so the model keeps its idea of "a person".

Saves the whole fine-tuned pipeline with ``save_pretrained``; load with ``from_pretrained(folder)``.
On SDXL it fine-tunes the whole 2.6 B UNet (``train_text_encoder``: both text encoders), which needs a
large GPU; DreamBooth-LoRA, what diffusers' ``train_dreambooth_lora_sdxl.py`` trains, is the ``lora``
recipe with ``prior_preservation: true`` (``experiments/sdxl_recipes.yaml``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from workbench.recipes.registry import PriorParams, TrainingParams, register_recipe


class Params(PriorParams, TrainingParams):
    steps: Annotated[int, Field(ge=1)] = 200  # optimiser steps
    lr: Annotated[float, Field(gt=0)] = 1e-4  # AdamW learning rate (SD 1.5: 5e-6)
    batch_size: Annotated[int, Field(ge=1)] = 4  # instance images per step (plus as many class images)
    train_text_encoder: bool = False  # also fine-tune the CLIP text encoder(s)
    prior_preservation: bool = True  # add the class-prior loss on base-model class images (see prior.py)


def hooks(params: Params):
    from workbench.diffusion import text_encoders
    from workbench.recipes import engine, prior

    def prepare(pipe, job):
        extra = prior.prior_loss(pipe, job, params)  # before anything trains: class images from the base
        modules = [pipe.unet] + ([te for te, _ in text_encoders(pipe).values()] if params.train_text_encoder else [])
        trained = []
        for module in modules:
            module.requires_grad_(True)
            trained += list(module.parameters())
        return engine.Setup(param_groups=[{"params": trained, "lr": params.lr}],
                            text_trainable=params.train_text_encoder, extra_loss=extra)

    def save(pipe, folder):
        pipe.save_pretrained(folder, safe_serialization=True)
        return {"pipeline": "."}

    return engine.hooks_for("dreambooth", params, prepare=prepare, save=save)


@register_recipe("dreambooth", Params, "full UNet fine-tune (+ text encoder), with prior preservation")
def train(job, params: Params, **loop):
    from workbench.recipes import engine

    return engine.run(job, hooks(params), **loop)
