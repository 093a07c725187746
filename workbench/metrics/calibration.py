"""Encoder sanity check and threshold calibration on face-verification pairs (LFW protocol).

A pairs CSV has columns ``path_a,path_b,same`` (paths relative to a root folder, ``same`` 1 or 0), e.g.
``../shared/data/lfw/pairs_devtrain/pairs.csv`` (LFW pairsDevTrain: 1,100 same + 1,100 different).
Scores are cosine similarities of the encoder's L2-normalised embeddings; "same person" when the score
is at or above the threshold.

- With calibration pairs: the threshold that maximises accuracy on the calibration pairs is applied to
  the test pairs (Huang et al. 2007, LFW "View 1" style: choose on one set, report on another).
- Without: 10-fold cross-validation on the given pairs (LFW "View 2" protocol, unrestricted setting
  aside): each fold's threshold is chosen on the other 9 folds, accuracy is measured on it; the
  report gives mean +- standard deviation over the 10 folds. Folds are 10 contiguous blocks of the
  same-person pairs plus 10 of the different-person pairs, in file order (as LFW's own folds).

Each photo's face is the one nearest its centre (``pick="central"``, LFW's rule: its photos are centred on
the labelled person; 8 of pairsDevTrain's 3,443 photos hold a bigger bystander, which the product's own
rule, the largest face, would embed instead and so score a wrong person).

A pair in which either photo has no detected face cannot be scored: it is left out of ``accuracy`` and
counted in ``n_pairs_no_face``; ``accuracy_no_face_as_error`` counts it as a mistake instead.

The threshold at a false-accept rate (:func:`threshold_at_far`) is the lowest threshold that accepts at
most ``floor(far * n_negatives)`` different-person pairs. Its resolution is one negative pair,
``1 / n_negatives``: with LFW pairsDevTrain's 1,100 negatives, FAR = 1e-3 lets exactly one impostor
pair through, so the threshold is set by the two highest impostor scores.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import UserError
from workbench.metrics.encoders import embed_files, get_encoder

N_FOLDS = 10


@dataclass(frozen=True)
class Pair:
    path_a: str
    path_b: str
    same: bool


def read_pairs(csv_path: Path) -> list[Pair]:
    """Pairs from a ``path_a,path_b,same`` CSV; a clear :class:`UserError` for anything else."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"pairs file {csv_path} not found")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path_a", "path_b", "same"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; "
                            "expected path_a,path_b,same")
        pairs = []
        for line, row in enumerate(reader, start=2):
            same = (row["same"] or "").strip().lower()
            if same not in ("0", "1", "true", "false"):
                raise UserError(f"{csv_path}:{line}: same={row['same']!r}; write 1 or 0")
            pairs.append(Pair(row["path_a"], row["path_b"], same in ("1", "true")))
    if not pairs:
        raise UserError(f"{csv_path} has no pairs")
    return pairs


def pair_scores(pairs: list[Pair], root: Path, encoder: str, cache: bool = True,
                progress: bool = True, pick: str = "central") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, same, scored)``: cosine similarity per pair (NaN where a face is missing).

    Every distinct file is embedded once; ``cache`` (default on: these are public benchmark photos) keeps
    the embeddings under ``$WORKBENCH_HOME/cache/embeddings``. ``pick``: which face of a photo with
    several (:data:`workbench.metrics.encoders.FACE_PICKS`; LFW: the central one).
    """
    root = Path(root)
    files = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    absent = [f for f in files if not (root / f).is_file()]
    if absent:
        raise UserError(f"{len(absent)} file(s) of the pairs are missing under {root}, e.g. {absent[0]}")
    emb, found = embed_files([root / f for f in files], encoder, cache=cache, progress=progress, pick=pick)
    index = {f: i for i, f in enumerate(files)}
    a = np.array([index[p.path_a] for p in pairs])
    b = np.array([index[p.path_b] for p in pairs])
    scored = found[a] & found[b]
    scores = np.where(scored, np.einsum("ij,ij->i", emb[a], emb[b]), np.nan)
    return scores, np.array([p.same for p in pairs]), scored


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs decided right by "same person iff score >= threshold"."""
    return float(np.mean((scores >= threshold) == same)) if len(scores) else float("nan")


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (midpoints between sorted scores).

    Ties: the middle of the best run of candidates, so the choice does not hug one side.
    """
    if not len(scores):
        raise ValueError("no scored pairs to choose a threshold on")
    s = np.sort(np.unique(scores))
    candidates = np.concatenate([[s[0] - 1e-6], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-6]])
    # Accuracy for every candidate at once: accepted = score >= t.
    pos = np.sort(scores[same])
    neg = np.sort(scores[~same])
    true_accepts = len(pos) - np.searchsorted(pos, candidates, side="left")
    true_rejects = np.searchsorted(neg, candidates, side="left")
    acc = (true_accepts + true_rejects) / len(scores)
    best = np.flatnonzero(acc == acc.max())
    return float(candidates[best[len(best) // 2]])


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> dict:
    """The lowest threshold accepting at most ``floor(far * n_neg)`` different-person pairs.

    Returns the threshold with what it achieves on these pairs: ``achieved_far``, ``tar`` (share of
    same-person pairs accepted), ``n_negative``, ``allowed_false_accepts`` and ``far_resolution``.
    """
    if not 0 < far < 1:
        raise UserError(f"--far {far}: give a false-accept rate between 0 and 1, e.g. 1e-3")
    neg = np.sort(scores[~same])[::-1]  # highest first
    if not len(neg):
        raise UserError("no different-person pairs to calibrate a false-accept rate on")
    allowed = math.floor(far * len(neg) + 1e-9)
    if allowed >= len(neg):
        threshold = float(neg[-1])
    else:
        # Just above the (allowed+1)-th highest impostor score: exactly `allowed` impostors pass (no ties).
        threshold = float(np.nextafter(np.float32(neg[allowed]), np.float32(np.inf)))
    return {
        "far_target": far,
        "threshold": threshold,
        "achieved_far": float(np.mean(neg >= threshold)),
        "tar": float(np.mean(scores[same] >= threshold)) if same.any() else None,
        "n_negative": int(len(neg)),
        "allowed_false_accepts": int(allowed),
        "far_resolution": 1.0 / len(neg),
    }


def folds(same: np.ndarray, n_folds: int = N_FOLDS) -> np.ndarray:
    """Fold number per pair: 10 contiguous blocks of the positives and 10 of the negatives, in order."""
    fold = np.empty(len(same), dtype=int)
    for label in (True, False):
        idx = np.flatnonzero(same == label)
        fold[idx] = np.arange(len(idx)) * n_folds // max(len(idx), 1)
    return fold


def cross_validate(scores: np.ndarray, same: np.ndarray, n_folds: int = N_FOLDS) -> dict:
    """LFW-style k-fold accuracy: threshold chosen on k-1 folds, accuracy on the held-out fold."""
    fold = folds(same, n_folds)
    accs, thresholds = [], []
    for k in range(n_folds):
        test = fold == k
        if not test.any() or test.all():
            continue
        t = best_threshold(scores[~test], same[~test])
        thresholds.append(t)
        accs.append(accuracy(scores[test], same[test], t))
    if len(accs) < 2:
        raise UserError(f"too few scored pairs for {n_folds}-fold cross-validation: give more pairs")
    return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs, ddof=1)),
            "fold_accuracies": [round(a, 4) for a in accs],
            "threshold": float(np.mean(thresholds)), "threshold_std": float(np.std(thresholds, ddof=1))}


def verify_encoder(pairs_csv: Path, root: Path, encoder: str = "sface", calibrate_csv: Path | None = None,
                   calibrate_root: Path | None = None, far: float = 1e-3, cache: bool = True,
                   progress: bool = True, pick: str = "central") -> dict:
    """Verification accuracy of ``encoder`` on a pairs CSV, plus its threshold at ``far``.

    See the module docstring for the protocol. The FAR threshold comes from the calibration pairs when
    given (its achieved FAR on the test pairs is reported too), else from all the given pairs.
    """
    start = time.perf_counter()
    info = get_encoder(encoder).info
    pairs = read_pairs(pairs_csv)
    scores, same, scored = pair_scores(pairs, root, encoder, cache=cache, progress=progress, pick=pick)
    if not scored.any():
        raise UserError(f"{pairs_csv}: no pair has a face in both photos; check --root and the images")
    s, y = scores[scored], same[scored]
    report: dict = {"encoder": encoder, "n_pairs": len(pairs), "n_pairs_scored": int(scored.sum()),
                    "n_pairs_no_face": int((~scored).sum()), "n_same": int(same.sum()),
                    "n_different": int((~same).sum()), "face": pick}
    if calibrate_csv is not None:
        cal_pairs = read_pairs(calibrate_csv)
        cal_scores, cal_same, cal_scored = pair_scores(cal_pairs, calibrate_root or root, encoder,
                                                       cache=cache, progress=progress, pick=pick)
        if not cal_scored.any():
            raise UserError(f"{calibrate_csv}: no pair has a face in both photos; check --calibrate-root")
        cs, cy = cal_scores[cal_scored], cal_same[cal_scored]
        threshold = best_threshold(cs, cy)
        report.update(protocol="threshold chosen on the calibration pairs, accuracy on the test pairs",
                      accuracy=accuracy(s, y, threshold), accuracy_std=None, threshold=threshold,
                      n_calibration_pairs=len(cal_pairs), n_calibration_pairs_no_face=int((~cal_scored).sum()))
        at_far = threshold_at_far(cs, cy, far)
        test_neg = s[~y]
        at_far["achieved_far_on_test_pairs"] = float(np.mean(test_neg >= at_far["threshold"])) \
            if len(test_neg) else None
    else:
        cv = cross_validate(s, y)
        report.update(protocol=f"{N_FOLDS}-fold cross-validation (threshold chosen on 9 folds, accuracy "
                               "on the 10th; mean and standard deviation over folds)", **cv)
        at_far = threshold_at_far(s, y, far)
    # Pairs without a face counted as mistakes (for cross-validation: the mean fold accuracy, rescaled).
    report["accuracy_no_face_as_error"] = report["accuracy"] * len(s) / len(pairs)
    report["at_far"] = at_far
    report["published_lfw_accuracy"] = info.lfw_accuracy_published
    report["shipped_threshold"] = info.threshold
    report["shipped_far"] = info.far
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report
