"""Identity fidelity and identity leakage of generated images (METRICS.md, "Identity fidelity").

Inputs are embeddings from :func:`workbench.metrics.encoders.embed` (L2-normalised, ``found`` marks
images with a detected face). The unit resampled for confidence intervals is the generated image; the
subject's reference photos are fixed.

- **FDFR** (face detection failure rate; Van Le et al., "Anti-DreamBooth: Protecting Users from
  Personalized Text-to-Image Synthesis", ICCV 2023, §5.1): ``FDFR = #{generations without a detected
  face} / #generations``. Lower is better for fidelity. (Anti-DreamBooth uses RetinaFace; here the
  encoder's detector at confidence >= 0.6, after upscaling small images to 256 px.)
- **ISM** (identity score matching; same paper, §5.1): ``ISM_ref(x̂) = cos(e(x̂), ē_ref / ‖ē_ref‖)``
  with ``ē_ref`` the mean embedding of the reference photos, averaged over generations *with a face*.
  Higher = the generations look more like the subject. ``ism_holdout`` uses the holdout photos
  (never trained on), so a copied training photo earns no extra credit; ``ism_train`` uses the train
  photos. Anti-DreamBooth uses all clean photos.
- **ISM train - holdout**: per generation ``ISM_train - ISM_holdout``, averaged. A model that learned the
  person scores about the same against photos it saw and photos it did not; a positive difference
  means the generations resemble the *training photos* more than the person: a leakage signal.
  (Lower is better for privacy.)
- **Verification rate**: share of *all* generations the encoder accepts as the subject (an image
  without a face is not accepted). A generation is accepted when its mean cosine similarity to the
  holdout photos, ``(1/H) Σ_h cos(e(x̂), e_h)``, is at least the encoder's threshold, calibrated on LFW
  pairsDevTrain at a stated false-accept rate (see :mod:`workbench.metrics.calibration`). The mean of
  pair scores is used (not the cosine with the normalised mean template, which runs higher) so that
  the pair-calibrated threshold keeps its meaning: for photos of other people the rate is about the
  encoder's FAR. Higher = better fidelity; for prompts *without* the identifier, higher = more concept
  bleed (METRICS.md, "Concept bleed").

Prompt groups: ``identifier`` (prompts that name the subject: fidelity) and ``no_identifier`` (prompts
that do not: concept bleed, where every identity score should be low).
"""

from __future__ import annotations

import numpy as np

from workbench.metrics.encoders import EncoderInfo
from workbench.metrics.registry import MetricDef, declare
from workbench.metrics.stats import Metric, bootstrap_mean, empty, share_note

GROUPS = ("identifier", "no_identifier")  # prompt groups (METRICS.md, "Concept bleed")

ANTI = "Van Le et al., Anti-DreamBooth, ICCV 2023, Sec. 5.1"
GEN = "generations with the identifier (encoder's detector; reference photos fixed)"
BLEED_GEN = "generations without the identifier"
declare(
    MetricDef("identity.fdfr", "FDFR", "lower_is_better", "identity", ANTI,
              "share of generations with no detected face", GEN),
    MetricDef("identity.ism_holdout", "ISM holdout", "higher_is_better", "identity", ANTI,
              "cos(e(x), mean e(holdout)), generations with a face", GEN),
    MetricDef("identity.ism_train", "ISM train", "higher_is_better", "identity", ANTI,
              "cos(e(x), mean e(train))", GEN),
    MetricDef("identity.verification_rate", "Verification rate", "higher_is_better", "identity",
              "METRICS.md, Identity fidelity",
              "share of generations accepted at the calibrated threshold", GEN),
    MetricDef("identity.ism_train_minus_holdout", "ISM train − holdout", "lower_is_better", "identity",
              "METRICS.md (leakage signal)", "ISM_train - ISM_holdout per generation", GEN,
              required=False, main=False),
    MetricDef("identity.ism_train_minus_holdout_size_matched", "ISM train − holdout (size-matched)",
              "lower_is_better", "identity", "METRICS.md (leakage signal)",
              "ISM_train - ISM_holdout, both templates from min(T, H) photos (mean over random subsets)", GEN,
              required=False, main=False),
    MetricDef("bleed.ism_holdout", "Bleed ISM", "lower_is_better", "bleed", "METRICS.md, Concept bleed",
              "ISM of prompts without identifier", BLEED_GEN),
    MetricDef("bleed.verification_rate", "Bleed verification", "lower_is_better", "bleed",
              "METRICS.md, Concept bleed", "verification rate of prompts without identifier", BLEED_GEN),
    MetricDef("bleed.fdfr", "Bleed FDFR", "lower_is_better", "bleed", ANTI, "FDFR of prompts without identifier",
              BLEED_GEN, required=False, main=False),
)
#: The per-encoder measures of :func:`identity_metrics` (results' ``by_encoder`` and ``workbench audit``).
MEASURES = ("fdfr", "ism_holdout", "ism_train", "ism_train_minus_holdout", "ism_train_minus_holdout_size_matched",
            "verification_rate")


def mean_template(emb: np.ndarray, found: np.ndarray) -> np.ndarray | None:
    """The L2-normalised mean embedding of the photos with a face (None if there is none)."""
    rows = emb[found]
    if not len(rows):
        return None
    mean = rows.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None


def per_image_scores(gen_emb: np.ndarray, gen_found: np.ndarray, train_emb: np.ndarray,
                     train_found: np.ndarray, holdout_emb: np.ndarray, holdout_found: np.ndarray,
                     threshold: float | None) -> dict[str, np.ndarray]:
    """Per generation: ``ism_holdout``, ``ism_train``, ``verification_score``, ``accepted`` (NaN/False
    where the generation has no face or the references have none)."""
    n = len(gen_emb)
    nan = np.full(n, np.nan)
    t_train = mean_template(train_emb, train_found)
    t_hold = mean_template(holdout_emb, holdout_found)
    ism_holdout = np.where(gen_found, gen_emb @ t_hold, np.nan) if t_hold is not None else nan.copy()
    ism_train = np.where(gen_found, gen_emb @ t_train, np.nan) if t_train is not None else nan.copy()
    if holdout_found.any():
        verification = np.where(gen_found, (gen_emb @ holdout_emb[holdout_found].T).mean(axis=1), np.nan)
    else:
        verification = nan.copy()
    accepted = np.zeros(n, dtype=bool)
    if threshold is not None:
        accepted = np.nan_to_num(verification, nan=-np.inf) >= threshold
    matched = size_matched_difference(gen_emb, gen_found, train_emb[train_found], holdout_emb[holdout_found])
    return {"ism_holdout": ism_holdout, "ism_train": ism_train, "verification_score": verification,
            "accepted": accepted, "ism_train_minus_holdout_size_matched": matched}


SUBSETS = 64  # random equal-size subsets averaged by the size-matched ISM difference


def size_matched_difference(gen_emb: np.ndarray, gen_found: np.ndarray, train: np.ndarray, holdout: np.ndarray,
                            subsets: int = SUBSETS, seed: int = 0) -> np.ndarray:
    """Per generation, ISM_train − ISM_holdout with both templates built from the *same number* of photos:
    the larger reference set is replaced by the mean over ``subsets`` random subsets of the smaller set's
    size. A mean template of more photos is closer to the person's average face, so comparing a 15-photo
    template with a 5-photo one biases the difference by +0.02–0.04 with nothing copied (METRICS.md,
    ISM); matching the sizes removes that bias. NaN where the generation has no face."""
    n = len(gen_emb)
    if not len(train) or not len(holdout):
        return np.full(n, np.nan)
    k = min(len(train), len(holdout))
    rng = np.random.default_rng(seed)

    def expected_ism(ref: np.ndarray) -> np.ndarray:
        if len(ref) == k:
            return gen_emb @ mean_template(ref, np.ones(len(ref), dtype=bool))
        sims = [gen_emb @ mean_template(ref[rng.choice(len(ref), k, replace=False)], np.ones(k, dtype=bool))
                for _ in range(subsets)]
        return np.mean(sims, axis=0)

    return np.where(gen_found, expected_ism(train) - expected_ism(holdout), np.nan)


def _summarise(found: np.ndarray, scores: dict[str, np.ndarray], threshold: float | None,
               has_holdout: bool, n_resamples: int, seed: int) -> dict[str, Metric]:
    n = len(found)
    with_face = found & np.isfinite(scores["ism_holdout"])
    kw = {"n_resamples": n_resamples, "seed": seed}
    out = {
        "fdfr": bootstrap_mean((~found).astype(float), note=share_note(n, "generations"),
                               empty_note="no generated images", **kw),
        "ism_holdout": bootstrap_mean(scores["ism_holdout"][with_face],
                                      empty_note="no generation with a face, or no holdout photo with a face",
                                      **kw),
        "ism_train": bootstrap_mean(scores["ism_train"][found & np.isfinite(scores["ism_train"])],
                                    empty_note="no generation with a face, or no train photo with a face",
                                    **kw),
    }
    both = found & np.isfinite(scores["ism_train"]) & np.isfinite(scores["ism_holdout"])
    out["ism_train_minus_holdout"] = bootstrap_mean(
        scores["ism_train"][both] - scores["ism_holdout"][both],
        empty_note="no generation with a face, or a reference set without faces", **kw)
    matched = scores["ism_train_minus_holdout_size_matched"]
    out["ism_train_minus_holdout_size_matched"] = bootstrap_mean(
        matched[found & np.isfinite(matched)], note="both templates from equally many photos (expected over "
                                                    f"{SUBSETS} random subsets of the larger set)",
        empty_note="no generation with a face, or a reference set without faces", **kw)
    if not has_holdout:
        out["verification_rate"] = empty("no holdout photo with a face to verify against")
    elif threshold is None:
        out["verification_rate"] = empty("this encoder has no calibrated threshold: calibrate it with "
                                         "`workbench verify-encoder --far 1e-3` and pass --threshold NAME=VALUE")
    else:
        out["verification_rate"] = bootstrap_mean(scores["accepted"].astype(float),
                                                  note=share_note(n, "generations"),
                                                  empty_note="no generated images", **kw)
    return out


def identity_metrics(gen_emb: np.ndarray, gen_found: np.ndarray, train_emb: np.ndarray,
                     train_found: np.ndarray, holdout_emb: np.ndarray, holdout_found: np.ndarray,
                     info: EncoderInfo, groups: list[str] | np.ndarray | None = None,
                     threshold: float | None = None, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Every identity metric for one encoder, overall and per prompt group.

    ``groups`` labels each generation (``identifier``/``no_identifier``, or anything); when it has an
    ``identifier`` group, the top-level metrics are computed on that group only (fidelity must not be
    diluted by prompts that do not ask for the subject), else on every generation. ``threshold``
    overrides the encoder's calibrated one. Returns plain dicts (metrics as :meth:`Metric.to_dict`) and
    ``per_image`` score arrays.
    """
    gen_found = np.asarray(gen_found, dtype=bool)
    threshold = info.threshold if threshold is None else float(threshold)
    scores = per_image_scores(gen_emb, gen_found, train_emb, np.asarray(train_found, dtype=bool),
                              holdout_emb, np.asarray(holdout_found, dtype=bool), threshold)
    has_holdout = bool(np.any(holdout_found))
    labels = np.asarray(groups if groups is not None else ["all"] * len(gen_emb), dtype=object)

    def subset(mask: np.ndarray) -> dict:
        part = {k: v[mask] for k, v in scores.items()}
        return {k: m.to_dict() for k, m in _summarise(gen_found[mask], part, threshold, has_holdout,
                                                        n_resamples, seed).items()}

    scope = "identifier" if "identifier" in set(labels) else "all"
    top = subset(labels == scope if scope != "all" else np.ones(len(labels), dtype=bool))
    by_group = {g: subset(labels == g) for g in sorted(set(labels))}
    result = {
        "encoder": info.name,
        "scope": f"generations of the '{scope}' prompt group" if scope != "all" else "all generations",
        **top,
        "threshold": threshold,
        "threshold_far": info.far if threshold == info.threshold else None,
        "threshold_source": "calibrated (encoders.py)" if threshold == info.threshold and threshold is not None
        else ("given by the caller (--threshold)" if threshold is not None else None),
        "n_train_with_face": int(np.sum(train_found)),
        "n_holdout_with_face": int(np.sum(holdout_found)),
        "by_group": by_group,
    }
    if "no_identifier" in by_group:
        bleed = by_group["no_identifier"]
        result["concept_bleed"] = {"ism_holdout": bleed["ism_holdout"],
                                   "verification_rate": bleed["verification_rate"]}
    result["per_image"] = scores
    return result
