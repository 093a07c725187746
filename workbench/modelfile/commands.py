"""CLI: ``workbench inspect FILE_OR_DIR [--selfies DIR] [--encoder sface] [--json]``.

Opens a model file (a ``.tar``/``.tar.gz``/``.zip``, a ``.safetensors``, a diffusers or artifact folder, a
pickle — refused, never loaded) and reports its weights, their format and base family, and everything
personal it carries besides weights, graded by what leaking the file would expose
(:mod:`workbench.modelfile.inspector`). Exit status 0 whatever the grade; 2 for a file refused outright.
"""

from __future__ import annotations

import json


def _inspect(args) -> int:
    import logging

    from workbench.modelfile.inspector import inspect_path, render_text

    logging.getLogger("workbench").setLevel(logging.WARNING)
    report = inspect_path(args.path, selfies=args.selfies, encoder=args.encoder)
    print(json.dumps(report.to_dict(), indent=1, ensure_ascii=False, default=str) if args.json
          else render_text(report), end="" if not args.json else "\n")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("inspect", help="report what a model file (.tar, .safetensors, folder, ...) carries")
    p.add_argument("path", metavar="FILE_OR_DIR", help="the model file or folder")
    p.add_argument("--selfies", metavar="DIR", help="a folder of the person's photos, to find their photos inside")
    p.add_argument("--encoder", default="sface", help="identity encoder for --selfies (default: sface)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_inspect)
