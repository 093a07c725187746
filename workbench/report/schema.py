"""The ``results.json`` schema (version 1): what the runner writes and the report, W&B mirror and
``workbench compare`` read.

One file per run folder::

    {"schema": 1,
     "run":  {name, subject_id, backbone, device, seeds, n_train, n_holdout, created, versions, spec_sha256},
     "rows": [ one per (recipe label, seed); the ``none`` control first
        {label, recipe, seed, status: "ok"|"failed", error: null|str,
         params: {...}, train: {steps, seconds, final_loss} | null (a row that failed before training),
         metrics: {<metric key>: Metric},               # every key of METRIC_KEYS when status is "ok"
         roc: {<attack>: {fpr: [...], tpr: [...]}},    # MIA ROC curves (attacks that ran)
         nearest: [{generated, train, l2, holdout_l2}, ...],   # the k closest generations
         distances: {train: [...], holdout: [...]}     # OPTIONAL: per generation, ℓ2 to the nearest
        }, ...],                                        #   train / holdout photo (distribution plot)
     "meta": {metrics: {<metric key>: {direction, paper, equation, control}},
              encoder: {name, threshold, far}, delta, notes: [str, ...]}}

A **Metric** is ``{"value", "ci_low", "ci_high", "n"}`` (+ optional ``"note"``), as written by
:meth:`workbench.metrics.stats.Metric.to_dict`: the point value, its 95% confidence interval and the
number of resampled units ``n`` (an int, or ``[n_members, n_nonmembers]`` for membership inference).
``value`` is null only when nothing could be measured (``n`` = 0); a metric that was not measured is
still listed, with a null value and a note, so a missing number is visible, never silently absent.

Forward compatible: keys not named here (more metric keys, per-encoder detail, raw attack scores, ...)
are allowed and checked only for shape where it is known (every ``metrics`` entry must be a Metric);
the report lists additional metric keys in an "other measurements" table. A missing required key, or a
required key of the wrong type, is an error.

Paths: ``nearest[].generated`` is relative to the run folder; ``nearest[].train`` is absolute or
relative to ``$WORKBENCH_HOME``. Both must stay inside their folder (checked when the report reads
the images, :func:`workbench.report.html.resolve_image`).

:func:`validate_results` checks all of this and raises :class:`ResultsError` listing every problem
by its path (e.g. ``rows[2].metrics['mia.loss.auc'].ci_low: expected a number or null, got 'x'``).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.errors import UserError

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"

RUN_KEYS = ("name", "subject_id", "backbone", "device", "seeds", "n_train", "n_holdout", "created", "versions",
            "spec_sha256")
ROW_KEYS = ("label", "recipe", "seed", "status", "error", "params", "train", "metrics", "roc", "nearest")
OPTIONAL_ROW_KEYS = ("distances",)
TRAIN_KEYS = ("steps", "seconds", "final_loss")
STATUSES = ("ok", "failed")
CONTROL_RECIPE = "none"  # the untouched base model: every leakage number is compared with it

# Metric keys, in report order: identity fidelity, then leakage.
FIDELITY_METRICS = ("identity.fdfr", "identity.ism_holdout", "identity.ism_train", "identity.verification_rate")
BLEED_METRICS = ("bleed.ism_holdout", "bleed.verification_rate")
MEMORIZATION_METRICS = ("memorization.extraction_rate", "memorization.gap", "memorization.min_l2")
MIA_ATTACKS = ("loss", "pia", "secmi")
MIA_MEASURES = ("auc", "advantage", "tpr_at_1pct_fpr")
MIA_METRICS = tuple(f"mia.{a}.{m}" for a in MIA_ATTACKS for m in MIA_MEASURES)
LEAKAGE_METRICS = MEMORIZATION_METRICS + MIA_METRICS + BLEED_METRICS
METRIC_KEYS = FIDELITY_METRICS + LEAKAGE_METRICS
METRIC_FIELDS = ("value", "ci_low", "ci_high", "n")

NEAREST_KEYS = ("generated", "train", "l2", "holdout_l2")
META_KEYS = ("metrics", "encoder", "delta", "notes")
META_METRIC_KEYS = ("direction", "paper", "equation", "control")
DIRECTIONS = ("higher_is_better", "lower_is_better")
ENCODER_KEYS = ("name", "threshold", "far")

_METRIC_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


class ResultsError(UserError):
    """``results.json`` does not follow the schema; ``problems`` lists each by its path."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        plural = "s" if len(problems) != 1 else ""
        super().__init__(f"{source}: {len(problems)} problem{plural} in results.json (schema {SCHEMA_VERSION}, "
                         "workbench/report/schema.py)\n" + "\n".join(f"  {p}" for p in problems))


def is_leakage(key: str) -> bool:
    """Leakage metrics are reported next to the ``none`` control and their difference from it."""
    return key.startswith(("memorization.", "mia.", "bleed."))


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 50 else text[:47] + "..."


class _Checker:
    def __init__(self):
        self.problems: list[str] = []

    def fail(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def keys(self, obj: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = (),
             extra: bool = False) -> bool:
        """``obj`` is an object holding ``required``; other keys only if ``optional`` or ``extra``."""
        if not isinstance(obj, dict):
            self.fail(where, f"expected an object with keys {', '.join(required)}; got {type(obj).__name__}")
            return False
        for key in required:
            if key not in obj:
                self.fail(where, f"missing key {key!r}")
        if not extra:
            for key in obj:
                if key not in required and key not in optional:
                    self.fail(where, f"unknown key {key!r}; expected {', '.join(required + optional)}")
        return True

    def num(self, x: Any, where: str, nullable: bool = False) -> None:
        if x is None and nullable:
            return
        if not _is_num(x):
            self.fail(where, f"expected a {'number or null' if nullable else 'finite number'}, got {_short(x)}")

    def text(self, x: Any, where: str, nullable: bool = False) -> None:
        if not (isinstance(x, str) or (nullable and x is None)):
            self.fail(where, f"expected a string{' or null' if nullable else ''}, got {_short(x)}")

    def metric(self, m: Any, where: str) -> None:
        if not self.keys(m, where, METRIC_FIELDS, ("note",)):
            return
        for f in ("value", "ci_low", "ci_high"):
            self.num(m.get(f), f"{where}.{f}", nullable=True)
        n = m.get("n")
        parts = n if isinstance(n, list) else [n]
        if not parts or len(parts) > 2 or not all(_is_int(p) and p >= 0 for p in parts):
            self.fail(f"{where}.n", f"expected a count ≥ 0 or [n_members, n_nonmembers], got {_short(n)}")
            return
        if m.get("value") is None and sum(parts) > 0:
            self.fail(f"{where}.value", f"is null but n = {n}; a null value means nothing was measured (n = 0)")
        lo, hi = m.get("ci_low"), m.get("ci_high")
        if _is_num(lo) and _is_num(hi) and lo > hi:
            self.fail(where, f"ci_low {lo} is above ci_high {hi}")
        if "note" in m:
            self.text(m["note"], f"{where}.note")


def validate_results(data: Any, source: str = "results.json") -> dict:
    """Check ``data`` against the schema above; return it unchanged, or raise :class:`ResultsError`."""
    c = _Checker()
    if not c.keys(data, "(top level)", ("schema", "run", "rows", "meta")):
        raise ResultsError(source, c.problems)
    if data.get("schema") != SCHEMA_VERSION:
        c.fail("schema", f"unsupported schema {data.get('schema')!r}; this workbench reads schema {SCHEMA_VERSION}")
    _check_run(c, data.get("run"))
    _check_rows(c, data.get("rows"))
    _check_meta(c, data.get("meta"))
    if c.problems:
        raise ResultsError(source, c.problems)
    return data


def _check_run(c: _Checker, run: Any) -> None:
    if not c.keys(run, "run", RUN_KEYS, extra=True):
        return
    for key in ("name", "subject_id", "backbone", "device", "spec_sha256"):
        c.text(run.get(key), f"run.{key}")
    seeds = run.get("seeds")
    if not isinstance(seeds, list) or not all(_is_int(s) for s in seeds):
        c.fail("run.seeds", f"expected a list of integers, got {_short(seeds)}")
    for key in ("n_train", "n_holdout"):
        if not (_is_int(run.get(key)) and run[key] >= 0):
            c.fail(f"run.{key}", f"expected a count ≥ 0, got {_short(run.get(key))}")
    try:
        datetime.fromisoformat(str(run.get("created")))
    except ValueError:
        c.fail("run.created", "expected an ISO 8601 time (e.g. 2026-11-26T10:00:00+00:00), "
                              f"got {_short(run.get('created'))}")
    if not isinstance(run.get("versions"), dict):
        c.fail("run.versions", f"expected an object of package versions, got {_short(run.get('versions'))}")


def _check_rows(c: _Checker, rows: Any) -> None:
    if not isinstance(rows, list) or not rows:
        c.fail("rows", "expected a non-empty list, one row per (recipe label, seed)")
        return
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        if not c.keys(row, where, ROW_KEYS, OPTIONAL_ROW_KEYS, extra=True):
            continue
        c.text(row.get("label"), f"{where}.label")
        c.text(row.get("recipe"), f"{where}.recipe")
        if not _is_int(row.get("seed")):
            c.fail(f"{where}.seed", f"expected an integer, got {_short(row.get('seed'))}")
        key = (row.get("label"), row.get("seed"))
        if key in seen:
            c.fail(where, f"label {key[0]!r} with seed {key[1]!r} already in rows[{seen[key]}]")
        seen.setdefault(key, i)
        status = row.get("status")
        if status not in STATUSES:
            c.fail(f"{where}.status", f"expected one of {', '.join(STATUSES)}, got {_short(status)}")
        c.text(row.get("error"), f"{where}.error", nullable=True)
        if status == "failed" and not row.get("error"):
            c.fail(f"{where}.error", "a failed row says why (error is empty)")
        if not isinstance(row.get("params"), dict):
            c.fail(f"{where}.params", f"expected an object, got {_short(row.get('params'))}")
        train = row.get("train")
        if train is not None and c.keys(train, f"{where}.train", TRAIN_KEYS, extra=True):
            for k in TRAIN_KEYS:
                c.num(train.get(k), f"{where}.train.{k}", nullable=True)
        _check_metrics(c, row.get("metrics"), where, status == "ok")
        _check_roc(c, row.get("roc"), where)
        _check_nearest(c, row.get("nearest"), where)
        if "distances" in row and c.keys(row["distances"], f"{where}.distances", ("train", "holdout")):
            for k in ("train", "holdout"):
                values = row["distances"].get(k)
                if not isinstance(values, list) or not all(_is_num(v) for v in values):
                    c.fail(f"{where}.distances.{k}", "expected a list of numbers")
    if not any(isinstance(r, dict) and r.get("recipe") == CONTROL_RECIPE for r in rows):
        c.fail("rows", f"no row for the {CONTROL_RECIPE!r} control; every run includes the untouched base model "
                       "(DESIGN.md: a leakage number without its control is not reported)")


def _check_metrics(c: _Checker, metrics: Any, where: str, required: bool) -> None:
    if not isinstance(metrics, dict):
        c.fail(f"{where}.metrics", f"expected an object of metrics, got {_short(metrics)}")
        return
    if required:
        for key in METRIC_KEYS:
            if key not in metrics:
                c.fail(f"{where}.metrics", f"missing {key!r} (a metric that was not measured is listed with "
                                           "value null, n 0 and a note)")
    for key, m in metrics.items():
        if not isinstance(key, str) or not _METRIC_KEY.match(key):
            c.fail(f"{where}.metrics", f"{_short(key)} is not a metric key like 'mia.loss.auc'")
            continue
        c.metric(m, f"{where}.metrics[{key!r}]")


def _check_roc(c: _Checker, roc: Any, where: str) -> None:
    if not isinstance(roc, dict):
        c.fail(f"{where}.roc", f"expected an object {{attack: {{fpr, tpr}}}}, got {_short(roc)}")
        return
    for attack, curve in roc.items():
        w = f"{where}.roc.{attack}"
        if not c.keys(curve, w, ("fpr", "tpr")):
            continue
        fpr, tpr = curve.get("fpr"), curve.get("tpr")
        ok = all(isinstance(v, list) and all(_is_num(x) and 0 <= x <= 1 for x in v) for v in (fpr, tpr))
        if not ok:
            c.fail(w, "fpr and tpr must be lists of numbers in [0, 1]")
        elif len(fpr) != len(tpr):
            c.fail(w, f"fpr has {len(fpr)} points but tpr has {len(tpr)}")


def _check_nearest(c: _Checker, nearest: Any, where: str) -> None:
    if not isinstance(nearest, list):
        c.fail(f"{where}.nearest", f"expected a list, got {_short(nearest)}")
        return
    for j, item in enumerate(nearest):
        w = f"{where}.nearest[{j}]"
        if not c.keys(item, w, NEAREST_KEYS, extra=True):
            continue
        c.text(item.get("generated"), f"{w}.generated")
        c.text(item.get("train"), f"{w}.train")
        c.num(item.get("l2"), f"{w}.l2")
        c.num(item.get("holdout_l2"), f"{w}.holdout_l2", nullable=True)
        gen = item.get("generated")
        if isinstance(gen, str) and (Path(gen).is_absolute() or ".." in Path(gen).parts):
            c.fail(f"{w}.generated", f"must be relative to the run folder, got {_short(gen)}")


def _check_meta(c: _Checker, meta: Any) -> None:
    if not c.keys(meta, "meta", META_KEYS, extra=True):
        return
    metrics = meta.get("metrics")
    if isinstance(metrics, dict):
        for key, info in metrics.items():
            w = f"meta.metrics[{key!r}]"
            if c.keys(info, w, META_METRIC_KEYS, extra=True):
                if info.get("direction") not in DIRECTIONS:
                    c.fail(f"{w}.direction",
                           f"expected one of {', '.join(DIRECTIONS)}, got {_short(info.get('direction'))}")
                for k in ("paper", "equation", "control"):
                    c.text(info.get(k), f"{w}.{k}")
    else:
        c.fail("meta.metrics", f"expected an object, got {_short(metrics)}")
    encoder = meta.get("encoder")
    if c.keys(encoder, "meta.encoder", ENCODER_KEYS, extra=True):
        c.text(encoder.get("name"), "meta.encoder.name")
        c.num(encoder.get("threshold"), "meta.encoder.threshold", nullable=True)
        c.num(encoder.get("far"), "meta.encoder.far", nullable=True)
    c.num(meta.get("delta"), "meta.delta", nullable=True)
    notes = meta.get("notes")
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        c.fail("meta.notes", f"expected a list of strings, got {_short(notes)}")


def load_results(run_dir: str | Path) -> dict:
    """Read and validate ``run_dir/results.json``."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: the run folder has no results yet (`workbench run SPEC` writes it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); rerun `workbench run` to rewrite it") from None
    return validate_results(data, str(path))


def load_run(run_dir: str | Path) -> tuple[dict, dict | None]:
    """A run folder's validated ``results.json`` and its resolved ``spec.json`` (None if absent)."""
    results = load_results(run_dir)
    spec_path = Path(run_dir) / "spec.json"
    spec = json.loads(spec_path.read_text(encoding="utf-8")) if spec_path.is_file() else None
    return results, spec
