"""``workbench recipes`` (list the registry) and ``workbench train`` (one recipe on one subject)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from workbench.errors import UserError
from workbench.recipes import registry

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:.*#\s*(.+)$")


def field_comments(model: type) -> dict[str, str]:
    """The one-line comment after each field in a Params class (and its bases), by field name."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, registry.RecipeParams)):
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            m = _FIELD_COMMENT.match(line)
            if m:
                comments[m.group(1)] = m.group(2).strip()
    return comments


def describe_recipes() -> str:
    lines = []
    for name, recipe in sorted(registry.load_all().items()):
        lines.append(f"{name}: {recipe.description}")
        comments = field_comments(recipe.params)
        for field, info in recipe.params.model_fields.items():
            lines.append(f"    {field} = {info.default!r}  # {comments.get(field, '')}".rstrip(" #"))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def parse_params(recipe_name: str, assignments: list[str]) -> registry.RecipeParams:
    """``["rank=8", "train_text_encoder=true"]`` → the recipe's validated Params (values as YAML)."""
    try:
        recipe = registry.get_recipe(recipe_name)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    raw = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set rank=8")
        try:
            raw[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raw[key.strip()] = value
    try:
        return recipe.params.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(recipe.params.model_fields) or "(none)"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: "
            + ("unknown parameter" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise UserError(f"recipe {recipe_name}: {problems} (parameters: {fields})") from None


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("recipes", help="list the fine-tuning recipes and their parameters")
    p.set_defaults(func=lambda args: print(describe_recipes(), end="") or 0)

    p = subparsers.add_parser("train", help="fine-tune one recipe on one subject's training photos")
    p.add_argument("--subject", required=True, help="subject id (from `workbench intake`)")
    p.add_argument("--recipe", required=True, help="recipe name (see `workbench recipes`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe parameter, value in YAML syntax (repeatable), e.g. --set rank=8")
    p.add_argument("--backbone", default="tiny-face", help="tiny-face, a diffusers folder or a hub id")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identifier", default="sks", help="rare word bound to the subject")
    p.add_argument("--class-noun", default="person")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (0: none)")
    p.add_argument("--out", required=True, type=Path, help="run folder (rerun to resume)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    params = parse_params(args.recipe, args.set)  # fails here, before anything loads
    from workbench.recipes.engine import TrainJob
    from workbench.subjects.store import load_subject

    subject = load_subject(args.subject)
    job = TrainJob(base=args.backbone, train_images=list(subject.train), holdout_images=list(subject.holdout),
                   subject_id=args.subject,
                   out_dir=args.out, identifier=args.identifier, class_noun=args.class_noun,
                   device=args.device, seed=args.seed, resolution=subject.resolution,
                   checkpoint_every=args.checkpoint_every)
    result = registry.get_recipe(args.recipe).train(job, params)
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    print(f"{result.recipe}: {result.steps} steps, {result.seconds:.1f} s, final loss {loss}")
    print(f"artifact: {result.artifact_dir}")
    print(f"prompt word: {result.identifier}")
    return 0
