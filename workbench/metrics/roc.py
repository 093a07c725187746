"""ROC metrics of a membership-inference attack, with stratified bootstrap confidence intervals.

Convention: one score per sample, **higher score = more likely a member** (a loss is negated before
it gets here). Members are the positives. Every threshold τ over the distinct scores gives one ROC
point, the attacker predicting "member" when score ≥ τ:

    TPR(τ) = #{members with s ≥ τ} / n_m,        FPR(τ) = #{non-members with s ≥ τ} / n_n.

The curve is kept at *every* distinct threshold (sklearn's ``roc_curve(..., drop_intermediate=False)``),
starting at (0, 0) and ending at (1, 1).

Metrics:
- **ROC AUC**, tie-aware: P(s_member > s_non) + ½ P(s_member = s_non), the Mann-Whitney U statistic
  divided by n_m·n_n (equal to ``sklearn.metrics.roc_auc_score``, which integrates the same curve
  with the trapezoidal rule). It moves in steps of 1/(n_m·n_n).
- **Attacker advantage** (Yeom et al., "Privacy Risk in Machine Learning: Analyzing the Connection
  to Overfitting", CSF 2018, "membership advantage"), *signed*: max over thresholds of TPR − FPR, the
  attacker's gain (0 when no threshold helps). The two-sided max |TPR − FPR| is a Kolmogorov–Smirnov
  statistic whose null mean is about 0.40 at 15 × 5 photos: it calls an untouched model leaky.
  Its null 95th percentile (from the permutations below) is in the note.
- **p-value** of every AUC (:func:`auc_test`): the two-sided permutation test of "members and
  non-members are exchangeable" (valid because the split is random, METRICS.md "Splits"): the share of
  label permutations whose AUC is at least as far from ½ as the observed one, with the +1 correction
  (Phipson & Smyth 2010), over :data:`N_PERMUTATIONS` permutations (the Mann–Whitney test by
  permutation; ties handled by mid-ranks). A separation significantly *below* ½ is a leak in the
  unexpected direction and is reported as one (``direction``).
- **TPR at FPR ≤ 1%**, defined as ml_privacy_meter does (privacytrustlab/ml_privacy_meter,
  ``audit.py``, ``compute_attack_results``: ``tpr_list[np.where(fpr_list <= 0.01)[0][-1]]`` on
  ``sklearn.metrics.roc_curve``): the TPR at the largest FPR not above 0.01. Repositories differ here
  (SecMI takes the threshold whose FPR is *closest* to 1%, PIA the last point *below* 1%); this is
  the one we report. Two consequences to state alongside it: with fewer than 100 non-members the only
  FPR ≤ 1% is 0, so it is the TPR at zero false positives; and ml_privacy_meter applies the rule to
  sklearn's default curve (``drop_intermediate=True``), which can drop a point inside a run of
  collinear tied points and then read a lower TPR — we apply it to the full curve, i.e. to the best
  TPR any threshold reaches at FPR ≤ 1% (the two agree whenever no such dropped point is the last
  one at FPR ≤ 1%).

Confidence intervals: Efron's percentile bootstrap as in :mod:`workbench.metrics.stats`, resampling
members and non-members *separately* (stratified), so each resample keeps n_m members and n_n
non-members. ``n`` is reported as (n_members, n_nonmembers).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from workbench.metrics import stats
from workbench.metrics.stats import Metric

MAX_FPR = 0.01  # the FPR bound of "TPR at 1% FPR"
MIN_NONMEMBERS_FOR_TPR = 100  # below this, FPR ≤ 1% means "no false positive at all": not reported
N_PERMUTATIONS = 10_000  # label permutations of the AUC and advantage tests


def _scores(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("no scores: members and non-members each need at least one")
    if not np.isfinite(a).all():
        raise ValueError("scores contain NaN or infinite values")
    return a


def roc_curve(members, nonmembers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full ROC curve → (fpr, tpr, thresholds), thresholds descending, first point (0, 0) at +inf.

    Equal to ``sklearn.metrics.roc_curve(y, s, drop_intermediate=False)`` with y = 1 for members."""
    m, n = _scores(members), _scores(nonmembers)
    thresholds = np.unique(np.concatenate([m, n]))[::-1]  # distinct scores, descending
    # count of scores ≥ τ for each τ: searchsorted on the ascending sorted scores
    tp = m.size - np.searchsorted(np.sort(m), thresholds, side="left")
    fp = n.size - np.searchsorted(np.sort(n), thresholds, side="left")
    tpr = np.concatenate([[0.0], tp / m.size])
    fpr = np.concatenate([[0.0], fp / n.size])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def roc_auc(members, nonmembers) -> float:
    """Tie-aware ROC AUC = (R_m − n_m(n_m+1)/2) / (n_m·n_n), R_m the sum of the members' mid-ranks
    (Mann-Whitney U; ties get the average of the ranks they span, i.e. count ½)."""
    m, n = _scores(members), _scores(nonmembers)
    _, inverse, counts = np.unique(np.concatenate([m, n]), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last element of each tie group
    mid_rank = ends - (counts - 1) / 2.0
    r_m = mid_rank[inverse[: m.size]].sum()
    return float((r_m - m.size * (m.size + 1) / 2.0) / (m.size * n.size))


def advantage(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Yeom et al.'s membership advantage, signed: max over thresholds of TPR − FPR (≥ 0: the curve
    starts at (0, 0))."""
    return float(np.max(tpr - fpr))


def _mid_ranks(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-ranks of the pooled scores, and the index of each score's tie group (ascending)."""
    _, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse], inverse


@dataclass(frozen=True)
class PermutationTest:
    auc_p_value: float  # two-sided: P(|AUC* − ½| ≥ |AUC − ½|)
    direction: str  # "members score higher", "members score lower" or "none" (AUC = ½)
    advantage_null_95: float  # 95th percentile of the signed advantage under the null
    advantage_p_value: float  # P(advantage* ≥ advantage)
    n_permutations: int


def auc_test(members, nonmembers, n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> PermutationTest:
    """Permutation tests of the AUC (two-sided) and of the signed advantage (one-sided), on the same
    ``n_permutations`` relabellings of the pooled scores (members keep their count)."""
    m, n = _scores(members), _scores(nonmembers)
    pooled = np.concatenate([m, n])
    ranks, group = _mid_ranks(pooled)
    n_m, n_n, total = m.size, n.size, pooled.size
    rng = np.random.default_rng(seed)
    observed_auc = (ranks[:n_m].sum() - n_m * (n_m + 1) / 2) / (n_m * n_n)
    observed_adv = advantage(*roc_curve(m, n)[:2])
    n_groups = int(group.max()) + 1
    aucs, advs = np.empty(n_permutations), np.empty(n_permutations)
    chunk = max(1, 2_000_000 // total)
    for start in range(0, n_permutations, chunk):
        size = min(chunk, n_permutations - start)
        perm = np.argsort(rng.random((size, total)), axis=1)
        is_member = perm < n_m  # position j holds a member under this relabelling
        aucs[start:start + size] = ((ranks[None, :] * is_member).sum(1) - n_m * (n_m + 1) / 2) / (n_m * n_n)
        # TPR − FPR at every threshold: counts of members / non-members per tie group, cumulated from the top
        tp = np.zeros((size, n_groups))
        np.add.at(tp, (np.repeat(np.arange(size), n_m), np.tile(group, size)[is_member.ravel()]), 1.0)
        fp = np.bincount(group, minlength=n_groups)[None, :] - tp
        gain = np.cumsum(tp[:, ::-1], axis=1) / n_m - np.cumsum(fp[:, ::-1], axis=1) / n_n
        advs[start:start + size] = np.maximum(gain.max(axis=1), 0.0)
    far = np.abs(aucs - 0.5) >= abs(observed_auc - 0.5) - 1e-12
    direction = "none" if observed_auc == 0.5 else (
        "members score higher" if observed_auc > 0.5 else "members score lower")
    return PermutationTest(float((far.sum() + 1) / (n_permutations + 1)), direction,
                           float(np.percentile(advs, 95)),
                           float(((advs >= observed_adv - 1e-12).sum() + 1) / (n_permutations + 1)), n_permutations)


def paired_auc_difference(a_members, a_nonmembers, b_members, b_nonmembers, n_resamples: int = stats.N_RESAMPLES,
                          seed: int = stats.SEED, confidence: float = stats.CONFIDENCE) -> Metric:
    """AUC(a) − AUC(b) for two scorings of the *same* photos (e.g. a fine-tuned model and its base), with a
    paired stratified bootstrap: each resample draws members and non-members once and scores both."""
    am, an, bm, bn = (_scores(x) for x in (a_members, a_nonmembers, b_members, b_nonmembers))
    if am.size != bm.size or an.size != bn.size:
        raise ValueError("a paired difference needs the same members and non-members scored twice")
    value = roc_auc(am, an) - roc_auc(bm, bn)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    for k in range(n_resamples):
        i, j = rng.integers(0, am.size, am.size), rng.integers(0, an.size, an.size)
        draws[k] = roc_auc(am[i], an[j]) - roc_auc(bm[i], bn[j])
    note = "AUC of the raw scores minus the untouched base's raw AUC on the same photos; paired stratified bootstrap"
    return _interval(value, draws, am.size + an.size, confidence, note)


def detectable_auc(n_members: int, n_nonmembers: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest AUC a two-sided test at ``alpha`` detects with ``power``, by the normal approximation
    of the Mann–Whitney statistic (Hanley & McNeil 1982; null variance (n_m + n_n + 1) / (12 n_m n_n)):
    ½ + (z_{1−α/2} + z_{power}) · SE₀. What the sample size can rule out: an AUC above this would
    most likely have been seen."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    se0 = math.sqrt((n_members + n_nonmembers + 1) / (12 * n_members * n_nonmembers))
    return min(1.0, 0.5 + (z(1 - alpha / 2) + z(power)) * se0)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """TPR at the largest FPR not above ``max_fpr`` (ml_privacy_meter's rule, on the full curve)."""
    return float(tpr[np.flatnonzero(fpr <= max_fpr)[-1]])  # (0, 0) is always on the curve


def _point(members: np.ndarray, nonmembers: np.ndarray) -> tuple[float, float, float]:
    fpr, tpr, _ = roc_curve(members, nonmembers)
    return roc_auc(members, nonmembers), advantage(fpr, tpr), tpr_at_fpr(fpr, tpr)


@dataclass(frozen=True)
class RocReport:
    auc: Metric
    advantage: Metric
    tpr_at_1pct_fpr: Metric
    fpr: list[float]  # the full ROC curve, for plotting
    tpr: list[float]
    n_members: int
    n_nonmembers: int

    def to_dict(self) -> dict:
        """Metric dicts carry ``n`` = [n_members, n_nonmembers] (both groups were resampled); a metric
        that cannot be estimated at these counts has value null and n [0, 0], with the reason."""
        n = [self.n_members, self.n_nonmembers]

        def counts(m: Metric) -> list[int]:
            return n if m.value is not None else [0, 0]

        return {
            "auc": {**self.auc.to_dict(), "n": n},
            "advantage": {**self.advantage.to_dict(), "n": n},
            "tpr_at_1pct_fpr": {**self.tpr_at_1pct_fpr.to_dict(), "n": counts(self.tpr_at_1pct_fpr)},
            "roc": {"fpr": [round(float(v), 6) for v in self.fpr], "tpr": [round(float(v), 6) for v in self.tpr]},
        }


def granularity_notes(n_members: int, n_nonmembers: int) -> dict[str, str]:
    """What resolution each metric has at these sample sizes (METRICS.md asks for it in the report)."""
    pairs = n_members * n_nonmembers
    auc = (f"{n_members} members × {n_nonmembers} non-members: AUC moves in steps of 1/{pairs} = {1 / pairs:.3g}; "
           "percentile-bootstrap CIs are too narrow at small n")
    if n_nonmembers < MIN_NONMEMBERS_FOR_TPR:
        tpr = (f"not reported: with {n_nonmembers} non-members FPR moves in steps of 1/{n_nonmembers}, so FPR ≤ 1% "
               f"would mean no false positive at all (the TPR at FPR = 0); it needs at least "
               f"{MIN_NONMEMBERS_FOR_TPR} non-members")
    else:
        tpr = f"TPR moves in steps of 1/{n_members}, FPR in steps of 1/{n_nonmembers}"
    adv = f"signed max(TPR − FPR); it moves in steps of 1/{n_members} and 1/{n_nonmembers}"
    return {"auc": auc, "tpr_at_1pct_fpr": tpr, "advantage": adv}


def roc_report(members, nonmembers, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED,
               confidence: float = stats.CONFIDENCE, n_permutations: int = N_PERMUTATIONS) -> RocReport:
    """AUC (with its permutation p-value), signed advantage (with its null 95th percentile) and TPR@1%FPR
    (only with ≥ 100 non-members), with stratified percentile-bootstrap CIs, and the ROC curve."""
    m, n = _scores(members), _scores(nonmembers)
    notes = granularity_notes(m.size, n.size)
    point = _point(m, n)
    fpr, tpr, _ = roc_curve(m, n)
    test = auc_test(m, n, n_permutations, seed) if n_permutations > 0 else None
    if test is not None:
        notes["auc"] += (f"; two-sided permutation p-value over {test.n_permutations} relabellings "
                         f"({test.direction}); smallest AUC detectable at 80% power (α = 0.05): "
                         f"{detectable_auc(m.size, n.size):.3f}")
        notes["advantage"] += (f"; null 95th percentile {test.advantage_null_95:.3f} (permutations), "
                               f"p = {test.advantage_p_value:.4g}")
    if n_resamples > 0:
        rng = np.random.default_rng(seed)
        draws = np.empty((n_resamples, 3))
        for b in range(n_resamples):  # members and non-members resampled separately (stratified)
            draws[b] = _point(m[rng.integers(0, m.size, m.size)], n[rng.integers(0, n.size, n.size)])
        metrics = [_interval(point[k], draws[:, k], m.size + n.size, confidence, note)
                   for k, note in enumerate((notes["auc"], notes["advantage"], notes["tpr_at_1pct_fpr"]))]
    else:
        metrics = [Metric(point[k], None, None, m.size + n.size, note)
                   for k, note in enumerate((notes["auc"], notes["advantage"], notes["tpr_at_1pct_fpr"]))]
    if test is not None:
        metrics[0] = dataclasses.replace(metrics[0], p_value=test.auc_p_value)
        metrics[1] = dataclasses.replace(metrics[1], p_value=test.advantage_p_value)
    if n.size < MIN_NONMEMBERS_FOR_TPR:
        metrics[2] = stats.empty(notes["tpr_at_1pct_fpr"])
    return RocReport(*metrics, fpr=fpr.tolist(), tpr=tpr.tolist(), n_members=m.size, n_nonmembers=n.size)


def _interval(value: float, draws: np.ndarray, n: int, confidence: float, note: str) -> Metric:
    """The percentile interval exactly as :mod:`workbench.metrics.stats` builds it (its ``_interval``)."""
    return stats._interval(value, draws, n, confidence, note)
