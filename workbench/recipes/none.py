"""``none``: the untouched base model, the control every experiment includes.

It trains nothing; its artifact is a ``DONE.json`` that records the base (name, folder and content
hash), so loading it gives the base pipeline and its generations use the plain identifier word.
"""

from __future__ import annotations

from workbench.recipes.registry import RecipeParams, register_recipe


class Params(RecipeParams):
    """No parameters: the control is the base model as shipped."""


@register_recipe("none", Params, "the untouched base model (control): trains nothing")
def train(job, params: Params, **loop):
    from workbench.recipes import engine

    return engine.run(job, engine.Hooks(recipe="none", params=params, steps=0), **loop)
