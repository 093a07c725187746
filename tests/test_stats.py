"""Bootstrap confidence intervals: point value inside, right n, seeded, degenerate cases handled."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.metrics.stats import Metric, bootstrap, bootstrap_mean, empty, share_note


def test_bootstrap_ci_contains_the_point_value_and_counts_the_units():
    x = np.random.default_rng(1).normal(0.3, 0.1, 40)
    m = bootstrap_mean(x)
    assert m.n == 40
    assert m.value == float(x.mean())
    assert m.ci_low < m.value < m.ci_high
    # The 95% percentile interval of a mean is about mean +- 1.96 standard errors.
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert abs((m.ci_high - m.ci_low) - 2 * 1.96 * se) < 0.35 * 2 * 1.96 * se


def test_bootstrap_is_reproducible_with_a_seed_and_varies_without_it():
    x = np.random.default_rng(2).random(25)
    assert bootstrap_mean(x, seed=7) == bootstrap_mean(x, seed=7)
    assert bootstrap_mean(x, seed=7).ci_low != bootstrap_mean(x, seed=8).ci_low


def test_general_bootstrap_of_a_mean_agrees_with_the_vectorised_one():
    x = np.random.default_rng(3).random(30)
    general = bootstrap(len(x), lambda idx: x[idx].mean(), seed=5)
    fast = bootstrap_mean(x, seed=5)
    assert general.value == fast.value and general.n == fast.n
    assert abs(general.ci_low - fast.ci_low) < 0.03 and abs(general.ci_high - fast.ci_high) < 0.03


def test_no_items_gives_none_with_a_note():
    m = bootstrap_mean([], empty_note="no generation with a face")
    assert m.value is None and m.ci_low is None and m.ci_high is None and m.n == 0
    assert m.to_dict()["note"] == "no generation with a face"
    assert bootstrap(0, lambda idx: 0.0).value is None
    assert empty("why").to_dict() == {"value": None, "ci_low": None, "ci_high": None, "n": 0, "note": "why"}


def test_all_equal_values_give_a_zero_width_interval():
    for v in (0.0, 1.0, 0.42):
        m = bootstrap_mean(np.full(12, v))
        assert m.value == m.ci_low == m.ci_high == v and m.n == 12


def test_a_single_item_has_a_zero_width_interval():
    m = bootstrap_mean([0.7])
    assert (m.value, m.ci_low, m.ci_high, m.n) == (0.7, 0.7, 0.7, 1)


def test_to_dict_has_the_four_fields():
    d = Metric(0.5, 0.4, 0.6, 10).to_dict()
    assert d == {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}
    assert "1/20" in share_note(20, "generations")


def test_nan_values_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean([0.1, float("nan")])
