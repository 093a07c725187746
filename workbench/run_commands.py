"""``workbench run SPEC.yaml``: the whole experiment of a spec (:func:`workbench.runner.run_experiment`).

It ends with a compact table (recipe, identity fidelity, strongest leakage signal, grade) and the path
of ``report.html``; ``--json`` prints the machine-readable status instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.report.scorecard import LEVELS, scorecard, segments_text


def summary(results: dict) -> list[dict]:
    """One line per (recipe, seed[, person]): identity fidelity, the strongest leakage signal, the grade; for a
    cohort, first one line per (recipe, seed) with its pooled calibrated AUCs (:func:`pooled_lines`)."""
    card = scorecard(results)
    cohort = bool(results["run"].get("subjects"))
    out = pooled_lines(results)
    for row in card.rows:
        cell = row.cells.get("identity.ism_holdout")
        reasons = sorted(row.grade.reasons, key=lambda r: LEVELS.index(r.level), reverse=True)
        signal = segments_text(reasons[0].segments()) if reasons else (
            "—" if row.is_control or row.status != "ok" else "none beyond the control")
        person = f" · {results['rows'][row.index].get('subject')}" if cohort else ""
        out.append({"recipe": row.label + (" (control)" if row.is_control else "") + person, "seed": row.seed,
                    "ism_holdout": cell.text if cell is not None and row.status == "ok" else "—",
                    "strongest_leakage_signal": signal if row.status == "ok" else (row.error or "failed"),
                    "grade": row.grade.level})
    return out


def pooled_lines(results: dict) -> list[dict]:
    """A cohort's pooled lines: the strongest pooled calibrated AUC (farthest from ½) with its p and people."""
    out = []
    entries = (results.get("pooled") or {}).values()
    for entry in sorted(entries, key=lambda e: (e["recipe"] != "none", e["seed"], e["label"])):  # the control first
        aucs = [(k, m) for k, m in entry["metrics"].items()
                if k.startswith("mia.") and k.endswith(".auc") and m.get("value") is not None]
        ism = entry["metrics"].get("identity.ism_holdout") or {}
        best = max(aucs, key=lambda km: abs(km[1]["value"] - 0.5), default=None)
        signal = (f"pooled {best[0].split('.')[1]} AUC {best[1]['value']:.3f} [{best[1]['ci_low']:.3f}, "
                  f"{best[1]['ci_high']:.3f}], p = {best[1]['p_value']:.2g}, {best[1]['n_subjects']} people"
                  if best else "—")
        out.append({"recipe": f"{entry['label']} · all people", "seed": entry["seed"],
                    "ism_holdout": f"{ism['value']:.3f} (mean)" if ism.get("value") is not None else "—",
                    "strongest_leakage_signal": signal, "grade": "POOLED"})
    return out


def summary_table(results: dict) -> str:
    rows = summary(results)
    heads = ("recipe", "seed", "ISM holdout ↑", "grade", "strongest leakage signal")
    cells = [(r["recipe"], str(r["seed"]), r["ism_holdout"], r["grade"], r["strongest_leakage_signal"]) for r in rows]
    widths = [max(len(h), *(len(c[k]) for c in cells)) for k, h in enumerate(heads[:-1])]
    line = lambda c: "  ".join(x.ljust(w) for x, w in zip(c[:-1], widths, strict=True)) + "  " + c[-1]  # noqa: E731
    return "\n".join([line(heads)] + [line(c) for c in cells])


def _cmd_run(args) -> int:
    from workbench.logs import setup_cli_logging
    from workbench.report.html import REPORT_FILE
    from workbench.results import load_results
    from workbench.runner import run_experiment
    from workbench.spec import load_spec

    setup_cli_logging()
    spec = load_spec(args.spec)  # fails before any work, naming the field
    executor = args.executor or spec.execution.executor
    progress = _print_progress() if executor == "ray" else None  # locally the engine's own bars say it
    outcome = run_experiment(spec, args.out, progress, executor=executor, address=args.address)
    if args.json:
        print(json.dumps({"run_dir": str(outcome.run_dir), "status": outcome.status}, indent=1))
    else:
        print("\n" + summary_table(load_results(outcome.run_dir)))
        print(f"\nreport: {outcome.run_dir / REPORT_FILE}")
    return 0 if outcome.ok else 1


def _print_progress(every: float = 2.0):
    """A Ray run's progress on stderr: the counts and one line per running task, when they change."""
    import sys
    import time

    last = {"text": None, "t": 0.0}

    def progress(text: str, frac) -> None:
        if text != last["text"] and (time.monotonic() - last["t"] >= every or "\n" not in text):
            print(text, file=sys.stderr, flush=True)
            last.update(text=text, t=time.monotonic())

    return progress


def add_commands(sub) -> None:
    p = sub.add_parser("run", help="run an experiment spec: intake, recipes, generation, metrics, report")
    p.add_argument("spec", help="experiment YAML, e.g. experiments/quickstart.yaml")
    p.add_argument("--out", type=Path, default=None, help="run folder (default under $WORKBENCH_HOME/runs)")
    p.add_argument("--json", action="store_true", help="print the run's status as JSON instead of the summary")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="where the rows run (default: the spec's execution.executor, local): ray runs each "
                        "(person, recipe, seed) row as a Ray task; the results are the same")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (e.g. auto, 10.0.0.5:6379, ray://head:10001); default: the spec's "
                        "execution.address, else a local Ray on 127.0.0.1")
    p.set_defaults(func=_cmd_run)
