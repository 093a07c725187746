"""The Recipes tab as data: its choices and defaults, read from the registries and the spec, and the spec it makes.

Pure functions, no gradio: the recipes come from :func:`workbench.recipes.registry.load_all` (a recipe added
there appears in the app by itself), backbones from :data:`workbench.backbones.registry.BACKBONES`, prompts,
encoders and attacks from :mod:`workbench.spec`, each recipe's parameters from its registered ``Params``
model. The form's values become a spec dict that :func:`workbench.spec.parse_spec` validates, so a bad
value fails with its field path, e.g. ``recipes[1].params.rank: Input should be a valid integer``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml

from workbench.errors import SpecError

DEFAULT_BACKBONE = "tiny-face"
DEFAULT_ENCODERS = ["sface"]  # the fastest encoder that ships its weights
DEFAULT_ATTACKS = ["loss"]  # the cheapest attack; PIA and SecMI cost extra model calls per photo
PHOTO_CHOICES = ("clean", "protected", "both")  # train on the photos as taken, Anti-DreamBooth-protected, or each
ENCRYPT = True  # every app subject is encrypted at rest; erasure destroys its key (docs/LIFECYCLE.md)
PARAMS_HEADER = ("# Parameters of each ticked recipe, filled in with the recipe's defaults: edit them here.\n"
                 "# YAML or JSON: recipe name -> {parameter: value}.\n")


@dataclass
class RecipeForm:
    """The values of the Recipes (and Run) tab."""

    recipes: list[str]  # the ticked recipes; the `none` control is always added
    params_text: str  # YAML/JSON: recipe name -> params
    backbone: str = DEFAULT_BACKBONE
    with_identifier: str = ""  # one prompt template per line
    without_identifier: str = ""
    images_per_prompt: int = 1
    sampling_steps: int = 10
    encoders: tuple[str, ...] = tuple(DEFAULT_ENCODERS)
    mia_attacks: tuple[str, ...] = tuple(DEFAULT_ATTACKS)
    wandb: str = "offline"
    photos: str = "clean"  # one of PHOTO_CHOICES
    protect_epsilon: float = 0.05  # Anti-DreamBooth L-inf budget ([-1, 1] scale), when photos are protected
    protect_rounds: int = 10  # ASPL rounds (the paper: 50; each is seconds on a CPU at 64 px)
    executor: str = "local"  # one of workbench.executors' names: "local" (this process) or "ray"


# ---------------------------------------------------------------------------------------------------
# Choices and defaults

def recipe_choices() -> list[str]:
    from workbench.recipes.registry import load_all

    return [name for name in load_all() if name != "none"]


def backbone_choices() -> list[str]:
    from workbench.backbones.registry import BACKBONES

    return list(BACKBONES)


def encoder_choices() -> list[str]:
    from workbench.metrics.registry import encoders

    return list(encoders())


def attack_choices() -> list[str]:
    from workbench.metrics.registry import attacks

    return list(attacks())


def default_prompts() -> tuple[str, str]:
    """The spec's default prompt templates, one per line: (with identifier, without identifier)."""
    from workbench.spec import WITH_IDENTIFIER, WITHOUT_IDENTIFIER

    return "\n".join(WITH_IDENTIFIER), "\n".join(WITHOUT_IDENTIFIER)


def default_params(name: str) -> dict[str, Any]:
    """A recipe's parameters with their defaults (a field without a default is listed as null)."""
    from pydantic import ValidationError

    from workbench.recipes.registry import get_recipe

    model = get_recipe(name).params
    try:
        return model().model_dump(mode="json")
    except ValidationError:
        return {k: None if f.is_required() else f.get_default(call_default_factory=True)
                for k, f in model.model_fields.items()}


def params_text(recipes: list[str], text: str | None = None) -> str:
    """The params text for ``recipes``: the entries of ``text`` kept for recipes still ticked, defaults for
    newly ticked ones. ``text`` that does not parse is returned unchanged (the run reports the error)."""
    try:
        current = parse_params(text) if text and text.strip() else {}
    except SpecError:
        return text or ""
    merged = {name: current.get(name, default_params(name)) for name in recipes or []}
    return PARAMS_HEADER + (yaml.safe_dump(merged, sort_keys=False, default_flow_style=None) if merged else "")


def parse_params(text: str) -> dict[str, dict]:
    """Recipe name -> params mapping from YAML/JSON text; SpecError naming what is wrong."""
    try:
        data = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"recipe parameters: not valid YAML or JSON{where}") from None
    if not isinstance(data, dict):
        raise SpecError("recipe parameters: expected a mapping of recipe name -> {parameter: value}")
    for name, params in data.items():
        if not isinstance(params, dict | None):
            raise SpecError(f"recipe parameters: {name}: expected a mapping of parameter -> value, "
                            f"got {type(params).__name__}")
    return {str(k): dict(v or {}) for k, v in data.items()}


# ---------------------------------------------------------------------------------------------------
# The spec

def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def check_backbone(name: str) -> str:
    """A registered backbone, a diffusers hub id, or a local folder; no server paths on a shared Space."""
    name = (name or "").strip() or DEFAULT_BACKBONE
    if os.environ.get("SYSTEM") == "spaces" and name.startswith((".", "/", "~")):
        raise SpecError(f"backbone: local folders are not allowed on a shared Space; pick one of "
                        f"{', '.join(backbone_choices())} or a diffusers hub id (org/name)")
    return name


def _ray_address(executor: str) -> dict[str, str]:
    """The cluster the app's Ray runs go to: ``$WORKBENCH_RAY_ADDRESS``, else a local Ray on 127.0.0.1."""
    address = os.environ.get("WORKBENCH_RAY_ADDRESS")
    return {"address": address} if executor == "ray" and address else {}


def spec_data(subject: dict, form: RecipeForm, retention_days: int) -> dict[str, Any]:
    """The spec dict of one in-app comparison of ``none`` + the ticked recipes on ``subject``."""
    params = parse_params(form.params_text)
    unknown = sorted(set(params) - set(recipe_choices()) - {"none"})
    if unknown:
        raise SpecError(f"recipe parameters: unknown recipe {unknown[0]!r}; known: {', '.join(recipe_choices())}")
    if form.photos not in PHOTO_CHOICES:
        raise SpecError(f"training photos: {form.photos!r} is not one of {', '.join(PHOTO_CHOICES)}")
    kinds = ["clean", "protected"] if form.photos == "both" else [form.photos]
    entries = [{"name": "none"}] + [{"name": n, "params": params.get(n, {}), "photos": kind}
                                    for n in form.recipes or [] for kind in kinds]
    if form.photos != "clean":
        subject = subject | {"protection": {"method": "aspl", "epsilon": form.protect_epsilon,
                                            "rounds": form.protect_rounds}}
    prompts = {}
    for key, text in (("with_identifier", form.with_identifier), ("without_identifier", form.without_identifier)):
        if _lines(text):
            prompts[key] = _lines(text)
    return {
        "version": 1, "name": "app", "subject": subject, "backbone": check_backbone(form.backbone),
        "device": "auto", "recipes": entries, "prompts": prompts, "images_per_prompt": form.images_per_prompt,
        "sampling": {"steps": form.sampling_steps, "batch_size": 8},
        "metrics": {"encoders": list(form.encoders), "mia_attacks": list(form.mia_attacks)},
        "tracking": {"wandb": form.wandb}, "retention": {"default_days": retention_days, "encrypt": ENCRYPT},
        "execution": {"executor": form.executor} | _ray_address(form.executor),
    }


def build_spec(subject: dict, form: RecipeForm, retention_days: int):
    """The validated :class:`workbench.spec.Spec`; SpecError with every problem and its field path.

    Paths name the ticked recipe, e.g. ``recipes[1] (lora).params.rank: ...``."""
    from workbench.spec import parse_spec

    data = spec_data(subject, form, retention_days)
    try:
        return parse_spec(data, source="app")
    except SpecError as exc:
        text = str(exc)
        for i, entry in enumerate(data["recipes"]):
            text = text.replace(f"recipes[{i}].", f"recipes[{i}] ({entry['name']}).")
        raise SpecError(text) from None
