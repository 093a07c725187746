"""``workbench compare RUN_DIR...``: each recipe across runs, subjects and seeds, with intervals.

A run's scorecard gives one line per (recipe, seed) with that run's own confidence intervals. To say
how a recipe behaves *in general*, the per-run values are aggregated here:

- rows are grouped by recipe label; failed rows and unmeasured (null) values are left out and counted;
  every metric key of the scorecard is aggregated, then any further keys the runs' results.json hold;
- the **unit** is the subject when the label was run on two or more subjects (each subject's rows,
  over its runs and seeds, are averaged first, so a subject with more seeds does not weigh more),
  otherwise one (run, seed) row;
- the value is the mean over units, with a percentile-bootstrap 95% CI over units
  (:func:`workbench.metrics.stats.bootstrap_mean`, seeded) and ``n`` = the number of units; with one
  unit there is no interval;
- leakage metrics also get the paired difference from the ``none`` control of the same run and seed,
  aggregated the same way (``delta``): that, not the raw value, is the leakage the recipe adds.

Pure functions (:func:`aggregate` → JSON-able dict, :func:`to_markdown`, :func:`to_html`); the CLI is
:mod:`workbench.compare_commands`.
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

import numpy as np

from workbench import paths
from workbench.errors import UserError
from workbench.lifecycle import manifest
from workbench.metrics import registry
from workbench.metrics.stats import N_RESAMPLES, bootstrap_mean
from workbench.report.scorecard import control_for, format_num, main_columns, mia_columns
from workbench.results import CONTROL_RECIPE, load_results


def _interval(values: list[float], n_resamples: int, seed: int) -> dict:
    if not values:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    if len(values) == 1:
        return {"mean": round(float(values[0]), 6), "ci_low": None, "ci_high": None, "n": 1}
    m = bootstrap_mean(values, n_resamples=n_resamples, seed=seed)
    return {"mean": round(m.value, 6), "ci_low": round(m.ci_low, 6), "ci_high": round(m.ci_high, 6), "n": m.n}


def _units(items: list[tuple[str, float]], by_subject: bool) -> list[float]:
    """Per-unit values: subject means when ``by_subject``, else the items themselves."""
    if not by_subject:
        return [v for _, v in items]
    groups: dict[str, list[float]] = defaultdict(list)
    for subject, v in items:
        groups[subject].append(v)
    return [float(np.mean(vs)) for vs in groups.values()]


def aggregate(results_list: list[dict], n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Aggregate validated results dicts: one entry per (recipe label, metric)."""
    if not results_list:
        raise UserError("compare needs at least one run folder")
    metrics = tuple(dict.fromkeys(main_columns() + mia_columns()))
    keys = list(metrics) + sorted({k for r in results_list for row in r["rows"] for k in row["metrics"]} - set(metrics))
    values: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    deltas: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    info: dict[str, dict] = {}
    for results in results_list:
        sid = results["run"]["subject_id"]
        for i, row in enumerate(results["rows"]):
            entry = info.setdefault(row["label"], {"recipes": set(), "subjects": set(), "rows": 0, "failed": 0})
            entry["recipes"].add(row["recipe"])
            entry["rows"] += 1
            if row["status"] != "ok":
                entry["failed"] += 1
                continue
            entry["subjects"].add(sid)
            control = control_for(results, i)
            for key in keys:
                m = row["metrics"].get(key)
                if m is None or m["value"] is None:
                    continue
                values[(row["label"], key)].append((sid, m["value"]))
                if registry.is_leakage(key) and control is not None and control != i:
                    c = results["rows"][control]["metrics"].get(key)
                    if c is not None and c["value"] is not None:
                        deltas[(row["label"], key)].append((sid, m["value"] - c["value"]))
    labels = sorted(info, key=lambda lb: (CONTROL_RECIPE not in info[lb]["recipes"], lb))
    table = []
    for label in labels:
        by_subject = len(info[label]["subjects"]) >= 2
        for key in keys:
            items = values.get((label, key), [])
            entry = {"label": label, "metric": key, "unit": "subject" if by_subject else "run-seed",
                     "n_rows": len(items), **_interval(_units(items, by_subject), n_resamples, seed)}
            if registry.is_leakage(key):
                d = _interval(_units(deltas.get((label, key), []), by_subject), n_resamples, seed)
                entry["delta_vs_none"] = {k: d[k] for k in ("mean", "ci_low", "ci_high", "n")}
            table.append(entry)
    return {
        "runs": [{"name": r["run"]["name"], "subject_id": r["run"]["subject_id"], "seeds": r["run"]["seeds"],
                  "created": r["run"]["created"]} for r in results_list],
        "recipes": {lb: {"recipes": sorted(v["recipes"]), "subjects": len(v["subjects"]), "rows": v["rows"],
                         "failed": v["failed"]} for lb, v in ((lb, info[lb]) for lb in labels)},
        "metrics": keys,
        "n_resamples": n_resamples,
        "table": table,
    }


def load_runs(run_dirs: list[Path]) -> list[dict]:
    return [load_results(d) for d in run_dirs]


# --- Output ----------------------------------------------------------------------------------------

def _cell(e: dict | None) -> str:
    if not e or e["mean"] is None:
        return "—"
    ci = f" [{format_num(e['ci_low'])}, {format_num(e['ci_high'])}]" if e["ci_low"] is not None else ""
    return f"{format_num(e['mean'])}{ci} (n={e['n']})"


def _delta(e: dict) -> str:
    d = e.get("delta_vs_none")
    if not d or d["mean"] is None:
        return ""
    ci = ""
    if d["ci_low"] is not None:
        ci = f" [{format_num(d['ci_low'], 'signed')}, {format_num(d['ci_high'], 'signed')}]"
    return f"Δ {format_num(d['mean'], 'signed')}{ci}"


def _grid(agg: dict) -> tuple[list[str], dict[tuple[str, str], dict]]:
    return list(agg["recipes"]), {(e["label"], e["metric"]): e for e in agg["table"]}


def to_markdown(agg: dict) -> str:
    """Metrics as rows, recipe labels as columns: ``mean [ci] (n=units)`` and, for leakage, ``Δ`` vs none."""
    labels, grid = _grid(agg)
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for key in agg["metrics"]:
        cells = []
        for lb in labels:
            e = grid.get((lb, key))
            cells.append(_cell(e) + (f" {_delta(e)}" if e and _delta(e) else ""))
        lines.append(f"| {registry.title(key)} | " + " | ".join(cells) + " |")
    runs = ", ".join(f"{r['name']}/{r['subject_id']}" for r in agg["runs"])
    units = "; ".join(f"{lb}: {v['subjects']} subject(s), {v['rows']} row(s), {v['failed']} failed"
                      for lb, v in agg["recipes"].items())
    return "\n".join(lines) + f"\n\nRuns: {runs}\nUnits: {units}\n"


CSS = """body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#1d2330;margin:24px}
table{border-collapse:collapse}th,td{border:1px solid #dde1e6;padding:5px 8px;vertical-align:top}
th{background:#f0f2f5;text-align:left}.ci,.d{color:#5b6474;font-size:11px;display:block}.v{font-weight:600}"""


def to_html(agg: dict) -> str:
    """A self-contained page (inline CSS, no script, no external request) with the same table."""
    labels, grid = _grid(agg)
    e_ = html.escape
    head = "".join(f"<th>{e_(lb)}<span class='ci'>{e_(', '.join(agg['recipes'][lb]['recipes']))}; "
                   f"{agg['recipes'][lb]['subjects']} subject(s), {agg['recipes'][lb]['rows']} row(s)</span></th>"
                   for lb in labels)
    rows = []
    for key in agg["metrics"]:
        cells = []
        for lb in labels:
            e = grid.get((lb, key))
            if not e or e["mean"] is None:
                cells.append("<td>—</td>")
                continue
            ci = (f"<span class='ci'>[{format_num(e['ci_low'])}, {format_num(e['ci_high'])}]</span>"
                  if e["ci_low"] is not None else "<span class='ci'>no interval (one unit)</span>")
            cells.append(f"<td><span class='v'>{format_num(e['mean'])}</span>{ci}<span class='ci'>n = {e['n']} "
                         f"{e_(e['unit'])}(s)</span><span class='d'>{e_(_delta(e))}</span></td>")
        rows.append(f"<tr><th>{e_(registry.title(key))}</th>{''.join(cells)}</tr>")
    runs = "".join(f"<li>{e_(r['name'])}: subject {e_(r['subject_id'])}, created {e_(r['created'])}</li>"
                   for r in agg["runs"])
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>Recipe comparison</title><style>{CSS}</style></head><body><h1>Recipe comparison</h1>"
            "<p>Each cell: the mean over units (subjects when a recipe ran on two or more subjects, else run × seed "
            "rows), its 95% bootstrap interval over those units and their count; leakage cells add the paired "
            "difference Δ from the none control of the same run and seed.</p>"
            f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table><h2>Runs</h2><ul>{runs}</ul></body></html>\n")


def write_html(agg: dict, out: Path, results_list: list[dict]) -> Path:
    """Write the page; inside the data root it is registered with every subject it summarises."""
    out = Path(out)
    data = to_html(agg).encode("utf-8")
    subjects = list(dict.fromkeys(r["run"]["subject_id"] for r in results_list))
    if out.resolve().is_relative_to(paths.home()):
        manifest.write_bytes(subjects[0], "report", out, data)
        for sid in subjects[1:]:
            manifest.register(sid, "report", out)
    else:
        manifest.atomic_write_bytes(out, data)
    return out
