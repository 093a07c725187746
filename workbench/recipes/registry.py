"""Registry of fine-tuning recipes.

A recipe is one file in this folder: a pydantic ``Params`` model (its spec fields, with defaults and
one-line comments) and a ``train`` function, registered with :func:`register_recipe`. The spec
validator, the CLI and the app's dropdowns all read :data:`RECIPES`; nothing else lists recipes.
Recipe modules import torch inside functions only, so validating a spec stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class RecipeParams(BaseModel):
    """Fields every recipe accepts. Unknown keys are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class TrainingParams(RecipeParams):
    """Fields of every recipe that trains (each recipe restates them with its own defaults)."""

    steps: Annotated[int, Field(ge=1)] = 200  # optimiser steps
    lr: Annotated[float, Field(gt=0)] = 1e-4  # AdamW learning rate (constant)
    batch_size: Annotated[int, Field(ge=1)] = 4  # images per step (drawn with replacement, random flips)
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0  # gradient clipping (global L2 norm)


@dataclass(frozen=True)
class Recipe:
    name: str
    params: type[RecipeParams]
    train: Callable  # train(job: TrainJob, params) -> TrainResult
    description: str


RECIPES: dict[str, Recipe] = {}

# Modules whose import registers recipes (one file per recipe).
RECIPE_MODULES = (
    "workbench.recipes.none",
    "workbench.recipes.lora",
    "workbench.recipes.dreambooth",
    "workbench.recipes.textual_inversion",
    "workbench.recipes.pivotal",
)


def register_recipe(name: str, params: type[RecipeParams], description: str):
    def wrap(train: Callable) -> Callable:
        if name in RECIPES:
            raise ValueError(f"recipe {name!r} registered twice")
        RECIPES[name] = Recipe(name, params, train, description)
        return train

    return wrap


def load_all() -> dict[str, Recipe]:
    """Import every recipe module (idempotent) and return the registry."""
    for mod in RECIPE_MODULES:
        importlib.import_module(mod)
    return RECIPES


def get_recipe(name: str) -> Recipe:
    recipes = load_all()
    if name not in recipes:
        raise KeyError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(recipes))}")
    return recipes[name]
