"""``workbench`` command line: a thin shell over library functions.

Each stage's command module exposes ``add_commands(subparsers)``; the modules are listed here, nothing else.
A package's commands live in its ``commands.py``; a command with a module of its own is in
``<command>_commands.py`` beside its library module (``metrics/mia_commands.py``, ``generate_commands.py``).
Bad input raises :class:`workbench.errors.UserError`, printed as one line (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from workbench.errors import UserError

# Modules that contribute sub-commands, in the order of the data flow.
COMMAND_MODULES = (
    "workbench.subjects.commands",    # intake
    "workbench.backbones.commands",   # pretrain-base, backbone-info
    "workbench.recipes.commands",     # train, recipes
    "workbench.generate_commands",    # generate
    "workbench.metrics.commands",     # verify-encoder, audit
    "workbench.metrics.mia_commands", # mia
    "workbench.metrics.extract_commands",  # extract (FineXtract)
    "workbench.run_commands",         # run
    "workbench.report.commands",      # report
    "workbench.compare_commands",     # compare
    "workbench.lifecycle.commands",   # purge, erase, verify-erasure, audit-log, export, import, retention
    "workbench.provider.commands",    # provider template, assess, compare
    "workbench.modelfile.commands",   # inspect
    "workbench.app.commands",         # app
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    try:
        from workbench.lifecycle import startup

        startup()  # finish any erasure a crash interrupted, before anything else
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
