"""``workbench report RUN_DIR``: (re)write a run's ``report.html`` from its ``results.json``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    from workbench.report.html import write_report
    from workbench.report.scorecard import recipe_grades, scorecard
    from workbench.results import load_results

    out = write_report(args.run_dir)
    for label, level, _ in recipe_grades(scorecard(load_results(args.run_dir))):
        print(f"{label}: {level}")
    print(out)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("report", help="write a run folder's self-contained report.html from its results.json")
    p.add_argument("run_dir", type=Path,
                   help="a run folder (holds results.json), e.g. $WORKBENCH_HOME/runs/quickstart-...")
    p.set_defaults(func=_report)
