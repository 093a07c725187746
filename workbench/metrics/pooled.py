"""Cohort statistics: one verdict about a recipe, pooled over people, not about one face.

A cohort trains one model per person per recipe (and seed). For each recipe row label and seed:

- **Membership, pooled**: every person's *calibrated* attack scores (s_ft − s_base, Watson et al.
  2022) pooled into one member set and one non-member set; ROC AUC of the pool. Its 95% interval is a
  **two-level bootstrap** (resample people with replacement, then members and non-members within each
  resampled person; Davison & Hinkley 1997, §3.8), and its **p-value** a permutation test that
  relabels members and non-members *within* each person (the split was random per person, so the
  labels are exchangeable within a person, not across people). ``n`` = [members, non-members] pooled,
  ``n_subjects`` the people.
- **Mean of per-person AUCs**, with its bootstrap interval over people: the typical person's risk.
- **Oriented AUC** (METRICS.md: orient an attack's direction on a shadow subject, never on the
  target's own labels): each person's scores are flipped when the *other* people's pooled AUC is below
  ½ (leave-one-out), then pooled; its p-value is one-sided in that learned direction.
- **Identity fidelity and memorisation**: the mean over people of each person's value, with a
  bootstrap interval over people.

Every pooled metric is ``{value, ci_low, ci_high, n, n_subjects, p_value?}``.
"""

from __future__ import annotations

import numpy as np

from workbench.metrics import roc
from workbench.metrics.stats import CONFIDENCE, N_RESAMPLES, bootstrap_mean

N_PERMUTATIONS = roc.N_PERMUTATIONS


def _auc(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    m = np.concatenate([p[0] for p in pairs])
    n = np.concatenate([p[1] for p in pairs])
    return roc.roc_auc(m, n)


def _interval(value: float, draws: np.ndarray) -> tuple[float, float]:
    if np.ptp(draws) == 0:
        return value, value
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def stratified_p_value(pairs: list[tuple[np.ndarray, np.ndarray]], n_permutations: int = N_PERMUTATIONS,
                       seed: int = 0, one_sided: bool = False) -> float:
    """Permutation p-value of the pooled AUC, member/non-member labels shuffled within each person:
    two-sided (|AUC − ½|) or, with ``one_sided``, P(AUC* ≥ AUC)."""
    scores = np.concatenate([np.concatenate(p) for p in pairs])
    ranks, _ = roc._mid_ranks(scores)
    n_m = sum(len(p[0]) for p in pairs)
    n_n = sum(len(p[1]) for p in pairs)
    rng = np.random.default_rng(seed)
    sums = np.zeros(n_permutations)
    start = 0
    for m, n in pairs:
        size = len(m) + len(n)
        block = ranks[start:start + size]
        chosen = np.argsort(rng.random((n_permutations, size)), axis=1)[:, :len(m)]
        sums += block[chosen].sum(axis=1)
        start += size
    aucs = (sums - n_m * (n_m + 1) / 2) / (n_m * n_n)
    observed = _auc(pairs)
    if one_sided:
        extreme = aucs >= observed - 1e-12
    else:
        extreme = np.abs(aucs - 0.5) >= abs(observed - 0.5) - 1e-12
    return float((extreme.sum() + 1) / (n_permutations + 1))


def pooled_auc(pairs: list[tuple[np.ndarray, np.ndarray]], n_resamples: int = N_RESAMPLES, seed: int = 0,
               n_permutations: int = N_PERMUTATIONS) -> dict:
    """The pooled AUC of per-person (member scores, non-member scores), with its two-level bootstrap
    interval and its within-person permutation p-value."""
    pairs = [(np.asarray(m, float), np.asarray(n, float)) for m, n in pairs]
    value = _auc(pairs)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for b in range(n_resamples):
        people = rng.integers(0, len(pairs), len(pairs))
        draws[b] = _auc([(pairs[k][0][rng.integers(0, len(pairs[k][0]), len(pairs[k][0]))],
                          pairs[k][1][rng.integers(0, len(pairs[k][1]), len(pairs[k][1]))]) for k in people])
    lo, hi = _interval(value, draws)
    n = [sum(len(p[0]) for p in pairs), sum(len(p[1]) for p in pairs)]
    return {"value": round(value, 6), "ci_low": round(lo, 6), "ci_high": round(hi, 6), "n": n,
            "n_subjects": len(pairs), "p_value": round(stratified_p_value(pairs, n_permutations, seed), 6),
            "note": "pooled calibrated scores; two-level bootstrap (people, then photos); permutation p-value "
                    "with labels shuffled within each person"}


def oriented_auc(pairs: list[tuple[np.ndarray, np.ndarray]], n_permutations: int = N_PERMUTATIONS,
                 seed: int = 0) -> dict:
    """Each person's scores oriented by the direction the *other* people show (leave-one-out), pooled;
    one-sided permutation p-value in the learned direction."""
    pairs = [(np.asarray(m, float), np.asarray(n, float)) for m, n in pairs]
    oriented = []
    for k, (m, n) in enumerate(pairs):
        others = [p for j, p in enumerate(pairs) if j != k]
        sign = -1.0 if others and _auc(others) < 0.5 else 1.0
        oriented.append((sign * m, sign * n))
    value = _auc(oriented)
    return {"value": round(value, 6), "ci_low": None, "ci_high": None,
            "n": [sum(len(p[0]) for p in pairs), sum(len(p[1]) for p in pairs)], "n_subjects": len(pairs),
            "p_value": round(stratified_p_value(oriented, n_permutations, seed, one_sided=True), 6),
            "note": "each person's direction taken from the other people's pooled AUC (leave-one-out shadow "
                    "subjects); one-sided p-value"}


def mean_over_people(values: list[float], seed: int = 0, n_resamples: int = N_RESAMPLES) -> dict:
    """Mean of per-person values with a bootstrap interval over people."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    m = bootstrap_mean(finite, n_resamples=n_resamples, seed=seed,
                       note="mean over people; interval: bootstrap over people").to_dict()
    return m | {"n_subjects": len(finite)}


def pool_rows(rows: list[dict], subjects: list[str], attacks: list[str], metric_keys: list[str]) -> dict:
    """``results.json``'s ``pooled``: per (label, seed), every membership metric over the pooled calibrated
    scores, the mean of per-person AUCs, the oriented AUC, the mean of every other metric, and the
    per-person table."""
    out = {}
    keys = sorted({(r["label"], r["seed"]) for r in rows}, key=lambda k: (k[1], [r["label"] for r in rows].index(k[0])))
    for label, seed in keys:
        mine = [r for r in rows if r["label"] == label and r["seed"] == seed and r["status"] == "ok"
                and r.get("subject") in subjects]
        if len(mine) < 2:
            continue
        entry = {"label": label, "seed": seed, "recipe": mine[0]["recipe"], "n_subjects": len(mine), "metrics": {},
                 "per_subject": [{"subject": r["subject"], **{k: r["metrics"].get(k, {}).get("value")
                                                             for k in metric_keys if k.startswith("mia.")}}
                                 for r in mine]}
        for attack in attacks:
            pairs = []
            for r in mine:
                cal = (r.get("mia") or {}).get(attack, {}).get("calibrated_scores") or \
                    (r.get("mia") or {}).get(attack, {}).get("scores")
                if cal:
                    pairs.append((cal["members"], cal["nonmembers"]))
            if len(pairs) == len(mine):
                entry["metrics"][f"mia.{attack}.auc"] = pooled_auc(pairs, seed=seed)
                entry["metrics"][f"mia.{attack}.auc_oriented"] = oriented_auc(pairs, seed=seed)
                entry["metrics"][f"mia.{attack}.auc_mean"] = mean_over_people(
                    [r["metrics"].get(f"mia.{attack}.auc", {}).get("value") for r in mine], seed=seed)
        for key in metric_keys:
            if not key.startswith("mia."):
                entry["metrics"][key] = mean_over_people([r["metrics"].get(key, {}).get("value") for r in mine],
                                                         seed=seed)
        out[f"{label}/seed{seed}"] = entry
    return out
