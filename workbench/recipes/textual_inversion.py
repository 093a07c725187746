"""``textual_inversion``: learn one new word embedding for the subject (Gal et al. 2022, "An Image is
Worth One Word"). A placeholder token (default ``<sks>``) is added to the tokenizer, its embedding row
initialised from the class word's, and only that row trains: v* = argmin_v E‖ε - ε_θ(z_t, t, c(v))‖².

The other rows' gradients are masked to zero and their weight decay is off, so AdamW leaves them
bit-for-bit unchanged. Saved as ``learned_embeds.safetensors`` = {token: (1, D) tensor}, the format
``pipe.load_textual_inversion(folder)`` reads. On SDXL the token is added to both tokenizers and text
encoders and both rows train (diffusers' ``textual_inversion_sdxl.py``); the file holds
{"clip_l": (1, 768), "clip_g": (1, 1280)}, loaded into each encoder with ``load_textual_inversion(row,
token=..., text_encoder=..., tokenizer=...)`` (:func:`load_embeds`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from workbench.errors import UserError
from workbench.recipes.registry import TrainingParams, register_recipe

EMBEDS_FILE = "learned_embeds.safetensors"
EMBEDDING_KEYS = {"sdxl": ("clip_l", "clip_g")}  # file keys per text encoder, by pipeline family


class Params(TrainingParams):
    steps: Annotated[int, Field(ge=1)] = 300  # optimiser steps
    lr: Annotated[float, Field(gt=0)] = 5e-3  # AdamW learning rate of the new embedding row
    batch_size: Annotated[int, Field(ge=1)] = 4  # images per step
    placeholder: str | None = None  # the new token; None: "<identifier>", e.g. "<sks>"
    initializer: str | None = None  # one-token word its embedding starts from; None: the class noun


def placeholder_token(params, job) -> str:
    return params.placeholder or f"<{job.identifier.lower()}>"


def add_token(tokenizer, text_encoder, token: str, initializer: str):
    """Add ``token`` to one tokenizer and its text encoder, initialised from ``initializer``.

    Returns (embedding weight, token id); the weight is made trainable with every other row's
    gradient masked to zero.
    """
    import torch

    init_ids = tokenizer.encode(initializer, add_special_tokens=False)
    if len(init_ids) != 1:
        raise UserError(f"initializer {initializer!r} is {len(init_ids)} tokens for this tokenizer; "
                        "pick a word that is a single token (e.g. 'person')")
    if tokenizer.add_tokens(token) != 1:
        raise UserError(f"placeholder {token!r} is already in the tokenizer's vocabulary; pick a new one")
    token_id = tokenizer.convert_tokens_to_ids(token)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = weight[init_ids[0]]
    keep = torch.zeros(weight.shape[0], 1, device=weight.device)
    keep[token_id] = 1.0
    weight.requires_grad_(True)
    weight.register_hook(lambda grad: grad * keep)  # only the new row learns
    return weight, token_id


def add_tokens(pipe, token: str, initializer: str) -> list:
    """:func:`add_token` in every text encoder of the pipeline (SDXL: both, as diffusers'
    ``textual_inversion_sdxl.py``); returns their embedding weights."""
    from workbench.diffusion import text_encoders

    return [add_token(tok, te, token, initializer)[0] for te, tok in text_encoders(pipe).values()]


def save_embeds(pipe, folder: Path, token: str) -> dict[str, str]:
    """One learned row per text encoder: ``{token: row}`` for one encoder (diffusers' format),
    ``{"clip_l": row, "clip_g": row}`` for SDXL (the format of SDXL embeddings in the wild)."""
    from safetensors.torch import save_file

    from workbench.diffusion import family, text_encoders

    keys = EMBEDDING_KEYS.get(family(pipe).name, (token,))
    rows = {}
    for key, (te, tok) in zip(keys, text_encoders(pipe).values(), strict=True):
        row = te.get_input_embeddings().weight[tok.convert_tokens_to_ids(token)]
        rows[key] = row.detach().float().cpu().unsqueeze(0).contiguous()
    save_file(rows, folder / EMBEDS_FILE)
    return {"embeddings": EMBEDS_FILE}


def load_embeds(pipe, folder: Path, weight_name: str, token: str) -> None:
    """Load an embedding file written by :func:`save_embeds` the way a diffusers user would."""
    from workbench.diffusion import family, text_encoders

    keys = EMBEDDING_KEYS.get(family(pipe).name)
    if keys is None:
        pipe.load_textual_inversion(str(folder), weight_name=weight_name)
        return
    from safetensors.torch import load_file

    rows = load_file(Path(folder) / weight_name)
    for key, (te, tok) in zip(keys, text_encoders(pipe).values(), strict=True):
        pipe.load_textual_inversion(rows[key], token=token, text_encoder=te, tokenizer=tok)


def hooks(params: Params, job):
    from workbench.recipes import engine

    token = placeholder_token(params, job)

    def prepare(pipe, job):
        weights = add_tokens(pipe, token, params.initializer or job.class_noun)
        return engine.Setup(param_groups=[{"params": weights, "lr": params.lr, "weight_decay": 0.0}],
                            text_trainable=True)

    return engine.hooks_for("textual_inversion", params, token=token, prepare=prepare,
                            save=lambda pipe, folder: save_embeds(pipe, folder, token))


@register_recipe("textual_inversion", Params, "a new token embedding for the subject; the model is frozen")
def train(job, params: Params, **loop):
    from workbench.recipes import engine

    return engine.run(job, hooks(params, job), **loop)
