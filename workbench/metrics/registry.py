"""Every metric the workbench reports, declared once, next to the code that computes it.

A :class:`MetricDef` says what a number is: its key in ``results.json`` (``group.name``), the title a
reader sees, its direction, the paper and equation it implements, the unit its confidence interval
resamples, its group and its control. The modules that compute metrics declare theirs with
:func:`declare` at import time (:mod:`workbench.metrics.identity`, :mod:`~workbench.metrics.memorization`;
:mod:`~workbench.metrics.membership` declares three per registered attack), so registering a new
attack or metric is one file. Everything else reads this registry: the spec's choices of encoders
and attacks, the app's checkboxes, ``results.json``'s required keys and ``meta.metrics``, the
scorecard's columns and directions, the Methods table, ``workbench compare`` and the W&B mirror.

Groups, in report order: ``identity`` (fidelity: does it look like the person), then the leakage
groups ``memorization`` (copies of training photos), ``membership`` (which photos it saw) and
``bleed`` (the person without being asked). Every leakage number is read beside its control, the
``none`` row (the untouched base model).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Literal

Direction = Literal["higher_is_better", "lower_is_better"]
Group = Literal["identity", "memorization", "membership", "bleed"]
GROUPS: tuple[Group, ...] = ("identity", "memorization", "membership", "bleed")  # report order
CONTROL = "the `none` row (untouched base model)"
CONTROL_RECIPE = "none"  # the untouched base model: every leakage number is compared with it

# The modules whose import declares metrics (and attacks, and encoders).
_DECLARING = ("workbench.metrics.identity", "workbench.metrics.memorization", "workbench.metrics.membership",
              "workbench.metrics.finextract")


@dataclass(frozen=True)
class MetricDef:
    key: str  # "group.name" in results.json, e.g. "mia.loss.auc"
    title: str  # what a reader sees, e.g. "MIA AUC (loss)"
    direction: Direction  # from the point of view of the report's reading (privacy for leakage metrics)
    group: Group
    paper: str  # source, with section or equation
    equation: str  # the definition, in one line
    unit: str  # what the confidence interval resamples
    required: bool = True  # listed in every ok row (value null with a note when not measured)
    main: bool = True  # a column of the main scorecard table (else: detail tables / "other measurements")
    control: str = CONTROL

    @property
    def leakage(self) -> bool:
        return self.group != "identity"

    def meta(self) -> dict:
        """The entry of ``results.json``'s ``meta.metrics`` for this key."""
        return {k: v for k, v in asdict(self).items() if k not in ("key", "required", "main")}


_METRICS: dict[str, MetricDef] = {}
_ORDERED: dict[str, MetricDef] | None = None  # _METRICS in report order, rebuilt after each declaration


def declare(*defs: MetricDef) -> tuple[MetricDef, ...]:
    """Register metrics (each key once); returns them so a module can keep them as constants."""
    global _ORDERED
    _ORDERED = None
    for d in defs:
        if d.key in _METRICS and _METRICS[d.key] != d:
            raise ValueError(f"metric {d.key!r} declared twice")
        if d.group not in GROUPS:
            raise ValueError(f"metric {d.key!r}: unknown group {d.group!r}")
        _METRICS[d.key] = d
    return defs


def load_all() -> dict[str, MetricDef]:
    """Every declared metric, in report order (groups in :data:`GROUPS` order, then declaration order)."""
    global _ORDERED
    for name in _DECLARING:
        importlib.import_module(name)
    if _ORDERED is None:  # the scorecard asks per cell: sort once, not on every lookup
        order = {g: i for i, g in enumerate(GROUPS)}
        _ORDERED = dict(sorted(_METRICS.items(), key=lambda kv: order[kv[1].group]))
    return _ORDERED


def get(key: str) -> MetricDef | None:
    return load_all().get(key)


def metrics(group: Group | None = None, *, required: bool | None = None, main: bool | None = None) -> list[MetricDef]:
    """Declared metrics, filtered, in report order."""
    return [d for d in load_all().values()
            if (group is None or d.group == group) and (required is None or d.required == required)
            and (main is None or d.main == main)]


def keys(group: Group | None = None, **kw) -> tuple[str, ...]:
    return tuple(d.key for d in metrics(group, **kw))


def required_keys() -> tuple[str, ...]:
    """Every key an ok row of ``results.json`` lists."""
    return keys(required=True)


def is_leakage(key: str) -> bool:
    """Leakage metrics are reported next to the ``none`` control and their difference from it."""
    d = get(key)
    return d.leakage if d else key.split(".", 1)[0] in ("memorization", "mia", "bleed", "extraction")


def direction(key: str) -> Direction:
    d = get(key)
    return d.direction if d else "higher_is_better"


def title(key: str) -> str:
    d = get(key)
    return d.title if d else key


def meta() -> dict[str, dict]:
    """``meta.metrics`` of results.json: direction, paper, equation, unit, group and control of every key."""
    return {k: d.meta() for k, d in load_all().items()}


def attacks() -> tuple[str, ...]:
    """Registered membership-inference attacks."""
    from workbench.metrics.membership import ATTACKS

    return tuple(ATTACKS)


def encoders() -> tuple[str, ...]:
    """Registered identity encoders."""
    from workbench.metrics.encoders import ENCODERS

    return tuple(ENCODERS)
