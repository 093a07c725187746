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
  to Overfitting", CSF 2018, "membership advantage"): max over thresholds of |TPR − FPR|.
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

from dataclasses import dataclass

import numpy as np

from workbench.metrics import stats
from workbench.metrics.stats import Metric

MAX_FPR = 0.01  # the FPR bound of "TPR at 1% FPR"


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
    """Yeom et al.'s membership advantage: max over thresholds of |TPR − FPR|."""
    return float(np.max(np.abs(tpr - fpr)))


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
        """Metric dicts carry ``n`` = [n_members, n_nonmembers] (both groups were resampled)."""
        n = [self.n_members, self.n_nonmembers]
        return {
            "auc": {**self.auc.to_dict(), "n": n},
            "advantage": {**self.advantage.to_dict(), "n": n},
            "tpr_at_1pct_fpr": {**self.tpr_at_1pct_fpr.to_dict(), "n": n},
            "roc": {"fpr": [round(float(v), 6) for v in self.fpr], "tpr": [round(float(v), 6) for v in self.tpr]},
        }


def granularity_notes(n_members: int, n_nonmembers: int) -> dict[str, str]:
    """What resolution each metric has at these sample sizes (METRICS.md asks for it in the report)."""
    pairs = n_members * n_nonmembers
    auc = (f"{n_members} members × {n_nonmembers} non-members: AUC moves in steps of 1/{pairs} = {1 / pairs:.3g}; "
           "percentile-bootstrap CIs are too narrow at small n")
    if n_nonmembers < 1 / MAX_FPR:
        tpr = (f"with {n_nonmembers} non-members FPR moves in steps of 1/{n_nonmembers}, so FPR ≤ 1% means no "
               f"false positive at all: this is the TPR at FPR = 0 (steps of 1/{n_members})")
    else:
        tpr = f"TPR moves in steps of 1/{n_members}, FPR in steps of 1/{n_nonmembers}"
    adv = f"TPR − FPR moves in steps of 1/{n_members} and 1/{n_nonmembers}"
    return {"auc": auc, "tpr_at_1pct_fpr": tpr, "advantage": adv}


def roc_report(members, nonmembers, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED,
               confidence: float = stats.CONFIDENCE) -> RocReport:
    """AUC, advantage and TPR@1%FPR with stratified percentile-bootstrap CIs, and the ROC curve."""
    m, n = _scores(members), _scores(nonmembers)
    notes = granularity_notes(m.size, n.size)
    point = _point(m, n)
    fpr, tpr, _ = roc_curve(m, n)
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
    return RocReport(*metrics, fpr=fpr.tolist(), tpr=tpr.tolist(), n_members=m.size, n_nonmembers=n.size)


def _interval(value: float, draws: np.ndarray, n: int, confidence: float, note: str) -> Metric:
    """The percentile interval exactly as :mod:`workbench.metrics.stats` builds it (its ``_interval``)."""
    return stats._interval(value, draws, n, confidence, note)
