"""Point estimates with percentile-bootstrap confidence intervals.

Every reported metric is a :class:`Metric`: the value, a 95% confidence interval and the sample size
``n`` of the unit that was resampled (generations, or photos). The interval is Efron's percentile
bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13): resample the ``n``
units with replacement ``n_resamples`` times (default 2,000, seeded, so a report is reproducible),
recompute the statistic, take the 2.5th and 97.5th percentiles.

Small samples: the percentile bootstrap is too narrow for tiny ``n`` (with 5 holdout photos it cannot
show more uncertainty than the 5 values themselves hold), and a share computed on ``n`` items moves in
steps of ``1/n``; both are said in the report (``note``), never hidden.

Degenerate cases: ``n = 0`` gives ``value = None`` with a note; when every resample gives the same
number (e.g. all values equal) the interval has zero width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 2000  # bootstrap resamples
CONFIDENCE = 0.95  # two-sided interval
SEED = 0  # default seed: the same inputs give the same interval


@dataclass(frozen=True)
class Metric:
    """A point value with its bootstrap CI and the number of resampled units."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    note: str | None = None
    p_value: float | None = None  # a test of "no effect", where the metric has one (membership inference)

    def to_dict(self) -> dict:
        out = {"value": _r(self.value), "ci_low": _r(self.ci_low), "ci_high": _r(self.ci_high), "n": self.n}
        if self.p_value is not None:
            out["p_value"] = round(float(self.p_value), 6)
        if self.note:
            out["note"] = self.note
        return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def empty(note: str) -> Metric:
    """A metric that could not be computed, and why."""
    return Metric(None, None, None, 0, note)


def bootstrap(n: int, statistic: Callable[[np.ndarray], float], n_resamples: int = N_RESAMPLES,
              seed: int = SEED, confidence: float = CONFIDENCE, note: str | None = None,
              empty_note: str = "no items to measure") -> Metric:
    """Percentile-bootstrap CI of ``statistic(indices)`` over ``n`` resampled units.

    ``statistic`` receives an index array (``arange(n)`` for the point value, a resample with
    replacement for each bootstrap draw) and returns a float; this lets a statistic depend on the
    resampled set as a whole (e.g. "share of train photos with at least one generation within delta",
    resampling generations).
    """
    if n <= 0:
        return empty(empty_note)
    value = float(statistic(np.arange(n)))
    if n_resamples <= 0:
        return Metric(value, None, None, n, note)
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_resamples)], dtype=np.float64)
    return _interval(value, draws, n, confidence, note)


def bootstrap_mean(values, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                   confidence: float = CONFIDENCE, note: str | None = None,
                   empty_note: str = "no items to measure") -> Metric:
    """Mean of ``values`` with its percentile-bootstrap CI (vectorised :func:`bootstrap`)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return empty(empty_note)
    if not np.isfinite(x).all():
        raise ValueError("bootstrap_mean got NaN or infinite values; drop them first")
    value = float(x.mean())
    if n_resamples <= 0:
        return Metric(value, None, None, x.size, note)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for start in range(0, n_resamples, 500):  # blocks bound the (B, n) index matrix's memory
        stop = min(n_resamples, start + 500)
        draws[start:stop] = x[rng.integers(0, x.size, (stop - start, x.size))].mean(axis=1)
    return _interval(value, draws, x.size, confidence, note)


def _interval(value: float, draws: np.ndarray, n: int, confidence: float, note: str | None) -> Metric:
    if np.ptp(draws) == 0:  # every resample agrees (e.g. all values equal): a zero-width interval
        return Metric(value, value, value, n, note)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Metric(value, float(low), float(high), n, note)


def share_note(n: int, what: str = "items") -> str:
    """The resolution of a share measured on ``n`` items."""
    return f"a share of {n} {what} moves in steps of 1/{n} = {1 / n:.3g}" if n else f"no {what}"
