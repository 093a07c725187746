"""``workbench generate``: sample prompts from a base or personalised model (:mod:`workbench.generate`).

    workbench generate --recipe-dir RUN --prompt "a photo of {identifier} {class_noun}" --out DIR
    workbench generate --model FILE_OR_DIR --base ID_OR_DIR --prompt "a photo of sks person" --out DIR [--subject ID]

``--model`` takes a vendor's file (diffusers or kohya LoRA, textual-inversion embedding, diffusers folder,
or a ``.tar`` of one) and loads it on ``--base`` with diffusers' own loaders
(:mod:`workbench.modelfile.loading`). Generated images are registered for erasure with ``--subject``, or
else with a pseudonymous id derived from the file (printed).
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import UserError
from workbench.generate import GROUPS, generate


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("generate", help="sample images from a trained recipe artifact")
    p.add_argument("--recipe-dir", type=Path, help="a run folder or its artifact/ folder")
    p.add_argument("--model", type=Path, metavar="FILE_OR_DIR",
                   help="instead of --recipe-dir: a vendor's model file (diffusers/kohya LoRA, textual-inversion "
                        "embedding, diffusers folder, or a .tar/.zip of one), loaded on --base")
    p.add_argument("--base", default=None, help="with --model: the base it loads on (must be of the file's family)")
    p.add_argument("--subject", default=None,
                   help="with --model: the subject id whose manifest the images are registered in")
    p.add_argument("--prompt", action="append", required=True,
                   help="prompt; {identifier} and {class_noun} are filled from the artifact (repeatable)")
    p.add_argument("--n", type=int, default=4, help="images per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=25, help="denoising steps")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backbone", default=None, help="base model (default: the artifact's own)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    if args.n < 1 or args.steps < 1 or args.batch_size < 1:
        raise UserError("--n, --steps and --batch-size must be at least 1")
    if (args.model is None) == (args.recipe_dir is None):
        raise UserError("give --recipe-dir (a workbench run) or --model (a vendor's model file), one of the two")
    if args.model is not None:
        return _generate_model(args)
    if args.base or args.subject:
        raise UserError("--base and --subject go with --model; for a run use --backbone")
    from workbench.device import resolve_device
    from workbench.lifecycle.sealed import opened
    from workbench.recipes.artifacts import load_personalised, read_done

    with opened(args.recipe_dir) as recipe_dir:  # an encrypted subject's model: decrypted while it loads
        done = read_done(recipe_dir)
        pipe = load_personalised(args.backbone, recipe_dir, resolve_device(args.device))
    prompts = _prompts(args.prompt, done["identifier"], done["class_noun"])
    records = generate(pipe, prompts, [args.seed], args.n, args.steps, args.guidance, args.batch_size,
                       args.out, done["subject_id"], done["recipe"])
    for r in records:
        print(f"{args.out / r.file}\t{r.prompt}")
    return 0


def _prompts(templates: list[str], identifier: str | None, class_noun: str) -> list[tuple[str, str, int]]:
    prompts, counts = [], {g: 0 for g in GROUPS}
    for template in templates:
        if identifier is None and "{identifier}" in template:
            raise UserError(f"prompt {template!r}: this model file does not say its identifier; write the "
                            "trigger word into the prompt itself")
        try:
            text = template.format(identifier=identifier, class_noun=class_noun)
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(f"prompt {template!r}: only {{identifier}} and {{class_noun}} can be filled "
                            f"({exc})") from None
        group = "identifier" if identifier and identifier in text.split() else "no_identifier"
        prompts.append((text, group, counts[group]))
        counts[group] += 1
    return prompts


def _generate_model(args) -> int:
    """``--model``: a vendor's file on ``--base`` (or a workbench artifact/bundle on its recorded base)."""
    from workbench.device import resolve_device
    from workbench.modelfile.loading import load_model, open_model, owner_id

    owner = args.subject or owner_id(args.model)
    with open_model(args.model, owner) as model:
        done = model.done or {}
        prompts = _prompts(args.prompt, model.identifier, done.get("class_noun", "person"))
        pipe = load_model(model, args.base or args.backbone, resolve_device(args.device))
        records = generate(pipe, prompts, [args.seed], args.n, args.steps, args.guidance, args.batch_size,
                           args.out, owner, done.get("recipe") or model.kind)
    for r in records:
        print(f"{args.out / r.file}\t{r.prompt}")
    if not args.subject:
        print(f"images registered for erasure with the pseudonymous id {owner} (`workbench erase {owner}`)")
    return 0
