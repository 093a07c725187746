"""CLI: ``workbench pretrain-base``, ``workbench backbones`` and ``workbench backbones build-random``."""

from __future__ import annotations

import json
from dataclasses import fields

from workbench.backbones.pretrain import PretrainConfig


def _pretrain(args) -> int:
    import logging

    from workbench.backbones.pretrain import pretrain
    from workbench.device import resolve_device

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    values = {f.name: getattr(args, f.name) for f in fields(PretrainConfig)}
    values["device"] = resolve_device(values["device"])
    summary = pretrain(PretrainConfig(**values))
    print(json.dumps(summary["quality"], indent=1))
    return 0


def _list(args) -> int:
    from workbench.backbones.registry import BACKBONES

    for name, locate in BACKBONES.items():
        try:
            where = str(locate())
        except Exception as exc:  # noqa: BLE001 - listing must not fail on a missing asset
            where = f"unavailable: {exc}"
        print(f"{name}\t{where}")
    print("(any diffusers model id or local pipeline folder also works)")
    return 0


def _build_random(args) -> int:
    from workbench.backbones.random_arch import build_random

    print(build_random(args.arch, args.out, tiny=args.tiny, seed=args.seed, dtype=args.dtype))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("pretrain-base", help="pretrain the tiny-face backbone on LFW pretrain.zip")
    defaults = PretrainConfig(data="", out="")
    p.add_argument("--data", required=True, help="pretrain.zip or a folder of face photos")
    p.add_argument("--out", required=True, help="output pipeline folder")
    for f in fields(PretrainConfig):
        if f.name in ("data", "out"):
            continue
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(getattr(defaults, f.name)),
                       default=getattr(defaults, f.name))
    p.set_defaults(func=_pretrain)
    from workbench.backbones.random_arch import ARCHITECTURES, DTYPES

    q = sub.add_parser("backbones", help="list the registered backbones; `backbones build-random` writes one")
    q.set_defaults(func=_list)
    qs = q.add_subparsers(dest="backbones_command", metavar="SUBCOMMAND")
    r = qs.add_parser("build-random", help="write a pipeline with the real SD 1.5/SDXL architecture and random "
                                           "(seeded) weights, for benchmarks on machines that cannot download")
    r.add_argument("arch", choices=sorted(ARCHITECTURES))
    r.add_argument("--out", required=True, help="new (or empty) pipeline folder")
    r.add_argument("--tiny", action="store_true", help="the same architecture with small widths (CPU tests)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--dtype", choices=DTYPES, default="float16", help="weights on disk (default float16)")
    r.set_defaults(func=_build_random)
