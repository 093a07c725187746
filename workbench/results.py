"""``results.json`` as typed records (schema version 2): what the runner writes and the report, the W&B
mirror, ``workbench compare``, the app and the notebooks read.

One file per run folder::

    {"schema": 2,
     "run":  Run  {name, subject_id, backbone, device, seeds, n_train, n_holdout, created, versions, spec_sha256},
     "rows": [Row, ...]   one per (recipe label, seed); the ``none`` control first
        {label, recipe, seed, status: "ok"|"failed", error: null|str,
         params: {...}, train: Train | null (a row that failed before training),
         metrics: {<metric key>: Metric},               # every required key of the metric registry when "ok"
         roc: {<attack>: Curve {fpr: [...], tpr: [...]}},   # MIA ROC curves (attacks that ran)
         nearest: [Nearest {generated, train, l2, holdout_l2}, ...],   # the k closest generations
         distances: {train: [...], holdout: [...]}     # OPTIONAL: per generation, ℓ2 to the nearest
        }, ...],                                        #   train / holdout photo (distribution plot)
     "meta": Meta {metrics: {<metric key>: {direction, paper, equation, control}},
                   encoder: {name, threshold, far}, delta, notes: [str, ...]}}

A **Metric** is ``{"value", "ci_low", "ci_high", "n"}`` (+ optional ``"note"`` and ``"p_value"``, a test of
"no effect" where the metric has one, e.g. membership inference), as written by
:meth:`workbench.metrics.stats.Metric.to_dict`: the point value, its 95% confidence interval and the
number of resampled units ``n`` (an int, or ``[n_members, n_nonmembers]`` for membership inference).
``value`` is null only when nothing could be measured (``n`` = 0); a metric that was not measured is
still listed, with a null value and a note, so a missing number is visible, never silently absent.
The metric keys every ok row lists come from :func:`workbench.metrics.registry.required_keys`.

**Train** is ``{steps, seconds, final_loss}`` (numbers or null), the ``photos`` the model saw
(``"clean"`` / ``"protected"``) and ``details``: the typed training records (:mod:`workbench.records`)
keyed by kind, e.g. ``{"steps": {planned, cap, run}, "early_stopping": {...}, "privacy": {...},
"protection": {...}}``. Any kind is accepted here (each must be an object); the record types check
their own fields when the report renders them.

Forward compatible: keys not named here (more metric keys, per-encoder detail, raw attack scores, more
training-record kinds, ...) are allowed, except at the top level and inside a Metric, a Curve and
``distances``; every ``metrics`` entry must be a Metric. The report lists additional metric keys in an
"other measurements" table. A missing required key, or a required key of the wrong type, is an error.

Paths: ``nearest[].generated`` is relative to the run folder; ``nearest[].train`` is absolute or
relative to ``$WORKBENCH_HOME``. Both must stay inside their folder (checked when the report reads
the images, :func:`workbench.report.html.resolve_image`).

Versions: schema 1 (before the training records) kept the step counts as flat keys
``details.steps_planned / steps_cap / steps_run`` and the protection cost as ``train.protection``;
:func:`validate_results` (and so :func:`load_results`) reads such a file as schema 2 in memory, says so
in a log line, and leaves the file as it is. A file without a schema, or with a schema newer than
:data:`SCHEMA_VERSION`, is refused with a message that says which version it is and what to do.

:func:`validate_results` raises :class:`ResultsError` listing every problem by its path
(e.g. ``rows[2].metrics['mia.loss.auc'].ci_low: expected a number or null, got 'x'``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from workbench.errors import UserError
from workbench.metrics import registry

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
OLDEST_SCHEMA = 1  # the oldest version this workbench reads (upgraded in memory)
RESULTS_FILE = "results.json"
CONTROL_RECIPE = registry.CONTROL_RECIPE

STATUSES = ("ok", "failed")
DIRECTIONS = ("higher_is_better", "lower_is_better")
_METRIC_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Loc = tuple  # a location inside results.json: field names, dict keys and list indices
Problem = tuple[Loc, str]


class ResultsError(UserError):
    """``results.json`` does not follow the schema; ``problems`` lists each by its path."""

    def __init__(self, source: str, problems: list[str], headline: str | None = None):
        self.problems = problems
        plural = "s" if len(problems) != 1 else ""
        headline = headline or (f"{source}: {len(problems)} problem{plural} in results.json "
                                f"(schema {SCHEMA_VERSION}, workbench/results.py)")
        super().__init__(headline + "\n" + "\n".join(f"  {p}" for p in problems))


# ---------------------------------------------------------------------------------------------------------
# Field types: each checks one JSON value and says what it expected, in the words of the error report.

def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 50 else text[:47] + "..."


def _problems(*problems: Problem) -> PydanticCustomError:
    """A validation error carrying problems with their locations relative to where it is raised."""
    return PydanticCustomError("results", "{msg}", {"msg": "; ".join(m for _, m in problems),
                                                     "problems": list(problems)})


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check(test, expected: str):
    """A field type: the value unchanged when ``test(value)``, else '<expected>, got <value>'."""

    def validate(x: Any) -> Any:
        if not test(x):
            raise _problems(((), f"{expected}, got {_short(x)}"))
        return x

    return PlainValidator(validate)


def _list_of(test) -> Any:
    return lambda x: isinstance(x, list) and all(test(v) for v in x)


Num = Annotated[float, _check(_is_num, "expected a finite number")]
OptNum = Annotated[float | None, _check(lambda x: x is None or _is_num(x), "expected a number or null")]
Text = Annotated[str, _check(lambda x: isinstance(x, str), "expected a string")]
OptText = Annotated[str | None, _check(lambda x: x is None or isinstance(x, str), "expected a string or null")]
Int = Annotated[int, _check(_is_int, "expected an integer")]
Count = Annotated[int, _check(lambda x: _is_int(x) and x >= 0, "expected a count ≥ 0")]
Counts = Annotated[int | list[int], _check(
    lambda x: (_is_int(x) and x >= 0) or (isinstance(x, list) and 1 <= len(x) <= 2
                                          and all(_is_int(p) and p >= 0 for p in x)),
    "expected a count ≥ 0 or [n_members, n_nonmembers]")]
Obj = Annotated[dict, _check(lambda x: isinstance(x, dict), "expected an object")]
Ints = Annotated[list[int], _check(_list_of(_is_int), "expected a list of integers")]
Nums = Annotated[list[float], _check(_list_of(_is_num), "expected a list of numbers")]
Probs = Annotated[list[float], _check(_list_of(lambda v: _is_num(v) and 0 <= v <= 1),
                                      "expected a list of numbers in [0, 1]")]
Texts = Annotated[list[str], _check(_list_of(lambda v: isinstance(v, str)), "expected a list of strings")]
Status = Annotated[str, _check(lambda x: x in STATUSES, f"expected one of {', '.join(STATUSES)}")]
Direction = Annotated[str, _check(lambda x: x in DIRECTIONS, f"expected one of {', '.join(DIRECTIONS)}")]
Record = Annotated[dict, _check(lambda x: isinstance(x, dict), "expected an object (a training record of this kind)")]


def _iso_time(x: Any) -> bool:
    try:
        datetime.fromisoformat(x)
    except (TypeError, ValueError):
        return False
    return True


IsoTime = Annotated[str, _check(_iso_time, "expected an ISO 8601 time (e.g. 2026-11-26T10:00:00+00:00)")]


def _relative_path(x: Any) -> Any:
    if not isinstance(x, str):
        raise _problems(((), f"expected a string, got {_short(x)}"))
    if Path(x).is_absolute() or ".." in Path(x).parts:
        raise _problems(((), f"must be relative to the run folder, got {_short(x)}"))
    return x


def _metric_key(x: Any) -> Any:
    if not isinstance(x, str) or not _METRIC_KEY.match(x):
        raise _problems(((), f"{_short(x)} is not a metric key like 'mia.loss.auc'"))
    return x


RunPath = Annotated[str, PlainValidator(_relative_path)]
MetricKey = Annotated[str, PlainValidator(_metric_key)]


# ---------------------------------------------------------------------------------------------------------
# Records. Each collects every problem inside it (its fields' and its own invariants') into one error, so
# the report lists them all, each by its path.

class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    CLOSED: ClassVar[bool] = False  # True: keys other than the fields are an error (else kept, unchecked)

    @classmethod
    def _keys(cls, required_only: bool = False) -> list[str]:
        return [f.alias or name for name, f in cls.model_fields.items() if f.is_required() or not required_only]

    @classmethod
    def _invariants(cls, data: dict) -> list[Problem]:
        """Checks across fields, on the raw data (so they run even when a field is wrong): guard types."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _collect(cls, data: Any, handler):
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise _problems(((), f"expected an object with keys {', '.join(cls._keys(True))}; "
                                 f"got {type(data).__name__}"))
        found: list[Problem] = []
        if cls.CLOSED:
            known = cls._keys()
            found += [((), f"unknown key {k!r}; expected {', '.join(known)}") for k in data if k not in known]
        model = None
        try:
            model = handler(data)
        except ValidationError as exc:
            found += _flatten(exc)
        found += cls._invariants(data)
        if found:
            raise _problems(*found)
        return model


class Metric(_Record):
    """One measurement: the value, its 95% interval and the number of resampled units."""

    CLOSED = True
    value: OptNum
    ci_low: OptNum
    ci_high: OptNum
    n: Counts
    note: Annotated[str | None, _check(lambda x: isinstance(x, str), "expected a string")] = None
    p_value: Annotated[float | None, _check(lambda x: x is None or (_is_num(x) and 0 <= x <= 1),
                                            "expected a probability in [0, 1] or null")] = None  # test of no effect

    @classmethod
    def _invariants(cls, m: dict) -> list[Problem]:
        found: list[Problem] = []
        n = m.get("n")
        parts = n if isinstance(n, list) else [n]
        if "value" in m and m["value"] is None and all(_is_int(p) for p in parts) and sum(parts) > 0:
            found.append((("value",), f"is null but n = {n}; a null value means nothing was measured (n = 0)"))
        lo, hi = m.get("ci_low"), m.get("ci_high")
        if _is_num(lo) and _is_num(hi) and lo > hi:
            found.append(((), f"ci_low {lo} is above ci_high {hi}"))
        return found


class Curve(_Record):
    """A ROC curve: false- and true-positive rates, point by point."""

    CLOSED = True
    fpr: Probs
    tpr: Probs

    @classmethod
    def _invariants(cls, c: dict) -> list[Problem]:
        fpr, tpr = c.get("fpr"), c.get("tpr")
        if isinstance(fpr, list) and isinstance(tpr, list) and len(fpr) != len(tpr):
            return [((), f"fpr has {len(fpr)} points but tpr has {len(tpr)}")]
        return []


class Nearest(_Record):
    """A generation and its closest training photo (pixel ℓ2), with the closest holdout photo's distance."""

    generated: RunPath  # relative to the run folder
    train: Text  # absolute, or relative to $WORKBENCH_HOME
    l2: Num
    holdout_l2: OptNum


class Distances(_Record):
    """Per generation, the ℓ2 distance to the nearest train and holdout photo."""

    CLOSED = True
    train: Nums
    holdout: Nums


class Train(_Record):
    """How a row's model was trained: steps, time, final loss, the photos it saw, and the typed training
    records (:mod:`workbench.records`) keyed by kind."""

    steps: OptNum
    seconds: OptNum
    final_loss: OptNum
    photos: OptText = None  # "clean" or "protected"
    details: dict[str, Record] | None = None  # kind -> record, e.g. {"steps": {"planned", "cap", "run"}}


class Row(_Record):
    """One (recipe label, seed): its status, training and measurements."""

    label: Text
    recipe: Text
    seed: Int
    status: Status
    error: OptText
    params: Obj
    train: Train | None
    metrics: dict[MetricKey, Metric]
    roc: dict[str, Curve]
    nearest: list[Nearest]
    distances: Distances = None  # optional; when present, an object
    subject: OptText = None  # the person of the row (a cohort has rows of several people)

    @classmethod
    def _invariants(cls, row: dict) -> list[Problem]:
        found: list[Problem] = []
        status = row.get("status")
        if status == "failed" and not row.get("error"):
            found.append((("error",), "a failed row says why (error is empty)"))
        metrics = row.get("metrics")
        if status == "ok" and isinstance(metrics, dict):
            found += [(("metrics",), f"missing {key!r} (a metric that was not measured is listed with value null, "
                                     "n 0 and a note)") for key in registry.required_keys() if key not in metrics]
        return found


class Run(_Record):
    """What was run, on what, when, with which versions."""

    name: Text
    subject_id: Text
    backbone: Text
    device: Text
    seeds: Ints
    n_train: Count
    n_holdout: Count
    created: IsoTime
    versions: Obj
    spec_sha256: Text


class MetaMetric(_Record):
    direction: Direction
    paper: Text
    equation: Text
    control: Text


class Encoder(_Record):
    name: Text
    threshold: OptNum
    far: OptNum


class Meta(_Record):
    """How to read the numbers: each metric's definition and direction, the identity encoder, δ, notes."""

    metrics: dict[str, MetaMetric]
    encoder: Encoder
    delta: OptNum
    notes: Texts


class Results(_Record):
    """A whole ``results.json`` of the current schema (:func:`validate_results` also reads older ones)."""

    CLOSED = True
    schema_: Annotated[int, _check(lambda x: x == SCHEMA_VERSION, f"expected {SCHEMA_VERSION}")] = Field(
        alias="schema")
    run: Run
    rows: list[Row]
    meta: Meta
    pooled: dict[str, Obj] | None = None  # a cohort's statistics over people (workbench.metrics.pooled)

    @classmethod
    def _invariants(cls, data: dict) -> list[Problem]:
        rows = data.get("rows")
        if not isinstance(rows, list) or not rows:
            return [(("rows",), "expected a non-empty list, one row per (recipe label, seed)")]
        found: list[Problem] = []
        seen: dict[tuple, int] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("label"), str) or not _is_int(row.get("seed")):
                continue
            key = (row["label"], row["seed"], row.get("subject"))
            if key in seen:
                whose = f" of subject {key[2]!r}" if key[2] else ""
                found.append((("rows", i),
                              f"label {key[0]!r} with seed {key[1]!r}{whose} already in rows[{seen[key]}]"))
            seen.setdefault(key, i)
        if not any(isinstance(r, dict) and r.get("recipe") == CONTROL_RECIPE for r in rows):
            found.append((("rows",), f"no row for the {CONTROL_RECIPE!r} control; every run includes the untouched "
                                     "base model (DESIGN.md: a leakage number without its control is not reported)"))
        return found


# ---------------------------------------------------------------------------------------------------------
# Errors: pydantic's locations → the report's paths.

def _flatten(exc: ValidationError) -> list[Problem]:
    """Every problem of a ValidationError, with its location (relative to what was validated)."""
    found: list[Problem] = []
    for e in exc.errors(include_url=False):
        loc = tuple(e["loc"])
        if e["type"] == "results":
            found += [(loc + sub, msg) for sub, msg in e["ctx"]["problems"]]
        elif e["type"] == "missing":
            found.append((loc[:-1], f"missing key {loc[-1]!r}"))
        elif e["type"] == "list_type":
            found.append((loc, f"expected a list, got {_short(e['input'])}"))
        elif e["type"] == "dict_type":
            found.append((loc, f"expected an object, got {_short(e['input'])}"))
        else:
            found.append((loc, f"{e['msg'][0].lower()}{e['msg'][1:]}, got {_short(e['input'])}"))
    return found


def path(loc: Loc) -> str:
    """``("rows", 2, "metrics", "mia.loss.auc", "ci_low")`` → ``rows[2].metrics['mia.loss.auc'].ci_low``."""
    if len(loc) >= 2 and loc[-1] == "[key]":  # a bad dict key: reported at the dict
        loc = loc[:-2]
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.match(str(part)):
            out += ("." if out else "") + str(part)
        else:
            out += f"[{part!r}]"
    return out or "(top level)"


# ---------------------------------------------------------------------------------------------------------
# Versions

def _upgrade_1(data: dict) -> dict:
    """Schema 1 → 2: ``train.details`` holds typed records keyed by kind. The flat step counts become the
    ``steps`` record; ``train.protection`` moves to ``details.protection``; everything else is unchanged."""
    for row in data.get("rows") or []:
        train = row.get("train") if isinstance(row, dict) else None
        if not isinstance(train, dict):
            continue
        details = train.get("details")
        details = dict(details) if isinstance(details, dict) else {}
        flat = {new: details.pop(old) for old, new in (("steps_planned", "planned"), ("steps_cap", "cap"),
                                                       ("steps_run", "run")) if old in details}
        if flat:
            details["steps"] = {"planned": flat.get("planned"), "cap": flat.get("cap"), "run": flat.get("run")}
        if "protection" in train:
            details["protection"] = train.pop("protection")
        if details or "details" in train:
            train["details"] = details
    data["schema"] = 2
    return data


UPGRADES = {1: _upgrade_1}  # version v → v + 1, applied in order


def upgrade(data: Any, source: str = RESULTS_FILE) -> Any:
    """``data`` in the current schema: unchanged when it already is; a deep copy upgraded in memory when it is
    an older version this workbench reads (logged); :class:`ResultsError` when it has no schema or a newer one."""
    if not isinstance(data, dict) or "schema" not in data:
        if not isinstance(data, dict):
            return data  # validation says what is wrong
        raise ResultsError(source, ["schema: missing key 'schema'"], headline=(
            f"{source}: results.json has no 'schema' key, so its version is unknown (every results.json the "
            f"workbench writes has one; this workbench reads schemas {OLDEST_SCHEMA} to {SCHEMA_VERSION}). "
            "It was not written by `workbench run`: rerun `workbench run SPEC` to write it"))
    version = data["schema"]
    if version == SCHEMA_VERSION and _is_int(version):
        return data
    if _is_int(version) and version > SCHEMA_VERSION:
        raise ResultsError(source, [f"schema: {version} is newer than {SCHEMA_VERSION}"], headline=(
            f"{source}: results.json is schema {version}, written by a newer workbench; this one reads schemas "
            f"{OLDEST_SCHEMA} to {SCHEMA_VERSION}. Install a newer workbench to read this run folder (or rerun "
            "`workbench run SPEC` with this one to rewrite it)"))
    if not _is_int(version) or version < OLDEST_SCHEMA:
        raise ResultsError(source, [f"schema: unsupported schema {_short(version)}; this workbench reads schemas "
                                    f"{OLDEST_SCHEMA} to {SCHEMA_VERSION}"])
    data = copy.deepcopy(data)
    for v in range(version, SCHEMA_VERSION):
        data = UPGRADES[v](data)
    log.info("%s: results.json is schema %d (an older workbench); read as schema %d in memory, the file is "
             "unchanged (rerun `workbench run` to rewrite it)", source, version, SCHEMA_VERSION)
    return data


# ---------------------------------------------------------------------------------------------------------
# Public API

def _validated(data: Any, source: str) -> tuple[dict, Results]:
    version = data.get("schema") if isinstance(data, dict) else None
    data = upgrade(data, source)
    try:
        return data, Results.model_validate(data)
    except ValidationError as exc:
        problems = [f"{path(loc)}: {msg}" for loc, msg in _flatten(exc)]
        headline = None
        if version != SCHEMA_VERSION and _is_int(version):
            headline = (f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''} in results.json "
                        f"(schema {version}, read as schema {SCHEMA_VERSION}; workbench/results.py)")
        raise ResultsError(source, problems, headline) from None


def parse_results(data: Any, source: str = RESULTS_FILE) -> Results:
    """``data`` (upgraded when older) as a :class:`Results`, or :class:`ResultsError` listing every problem."""
    return _validated(data, source)[1]


def validate_results(data: Any, source: str = RESULTS_FILE) -> dict:
    """Check ``data`` against the schema; return it as a plain dict (the same object when it is the current
    schema, an upgraded copy when older), or raise :class:`ResultsError` listing every problem by its path."""
    return _validated(data, source)[0]


def load_results(run_dir: str | Path) -> dict:
    """Read and validate ``run_dir/results.json`` (an older schema is upgraded in memory)."""
    file = Path(run_dir) / RESULTS_FILE
    if not file.is_file():
        raise UserError(f"{file} not found: the run folder has no results yet (`workbench run SPEC` writes it)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{file} is not valid JSON ({exc}); rerun `workbench run` to rewrite it") from None
    return validate_results(data, str(file))


def load_run(run_dir: str | Path) -> tuple[dict, dict | None]:
    """A run folder's validated ``results.json`` and its resolved ``spec.json`` (None if absent)."""
    results = load_results(run_dir)
    spec_path = Path(run_dir) / "spec.json"
    spec = json.loads(spec_path.read_text(encoding="utf-8")) if spec_path.is_file() else None
    return results, spec
