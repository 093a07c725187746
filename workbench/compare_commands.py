"""``workbench compare RUN_DIR...``: recipes aggregated across runs, subjects and seeds (:mod:`workbench.compare`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.compare import aggregate, load_runs, to_markdown, write_html
from workbench.metrics.stats import N_RESAMPLES


def add_commands(sub) -> None:
    p = sub.add_parser("compare", help="aggregate recipes across run folders (runs, subjects, seeds) with intervals")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run folders holding results.json")
    p.add_argument("--json", action="store_true", help="print the aggregate as JSON instead of a markdown table")
    p.add_argument("--out", type=Path, default=None, help="also write a self-contained HTML page here")
    p.add_argument("--resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples (default %(default)s)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    results_list = load_runs(args.run_dirs)
    agg = aggregate(results_list, n_resamples=args.resamples)
    if args.out:
        print(f"wrote {write_html(agg, args.out, results_list)}", file=sys.stderr)
    print(json.dumps(agg, indent=1) if args.json else to_markdown(agg))
    return 0
