"""Memorisation metrics: the formulas, and METRICS.md's known answers on real LFW photos.

Known answers (METRICS.md): a "generator" that returns re-encoded / slightly resized training crops has
extraction rate 1.0 and a large gap; other photos of the same person have extraction rate 0 and a gap
near 0. The subject is LFW's Colin Powell (demo photos 1-15 train, 16-20 holdout), at 64 px.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from metrics_helpers import SUBJECT, copies_of_train, crop, needs_lfw, noise_images

from workbench.metrics.memorization import (
    COPY_SIMILARITY_UNAVAILABLE,
    DELTA_REGISTERED_L2,
    as_float,
    expected_min_of_subset,
    l2_matrix,
    memorization_metrics,
    registered_l2_matrix,
    relative_distance,
    tiled_l2_matrix,
)


def test_pixel_l2_is_the_root_mean_square_difference_in_unit_range():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    fa, fb = as_float(list(a), 16), as_float(list(b), 16)
    d = l2_matrix(fa, fb)
    for i, j in itertools.product(range(3), range(2)):
        direct = np.sqrt(np.sum((a[i] / 255.0 - b[j] / 255.0) ** 2) / a[i].size)  # sqrt(Σ(a-b)²/d)
        assert d[i, j] == pytest.approx(direct, abs=1e-6)
    assert l2_matrix(fa, fa).diagonal() == pytest.approx(0.0, abs=1e-6)
    white, black = np.full((1, 8, 8, 3), 1.0), np.zeros((1, 8, 8, 3))
    assert l2_matrix(white, black)[0, 0] == pytest.approx(1.0)  # the largest possible distance


def test_tiled_l2_is_the_worst_tile():
    a = np.zeros((1, 64, 64, 3))
    b = a.copy()
    b[0, :16, :16] = 1.0  # one of the 16 tiles differs completely
    assert tiled_l2_matrix(a, b)[0, 0] == pytest.approx(1.0)
    assert l2_matrix(a, b)[0, 0] == pytest.approx(np.sqrt(1 / 16))  # the average hides it


def test_relative_distance_is_small_for_a_copy_and_at_most_one_over_alpha():
    d = np.array([[0.01, 0.20, 0.22, 0.25, 0.30, 0.40],  # a copy of train photo 0
                  [0.20, 0.21, 0.22, 0.23, 0.24, 0.25]])  # no photo stands out
    rel = relative_distance(d, n=5, alpha=0.5)
    assert rel[0] == pytest.approx(0.01 / (0.5 * np.mean([0.01, 0.20, 0.22, 0.25, 0.30])))
    assert rel[0] < 0.2 and 1.5 < rel[1] <= 2.0


def test_expected_min_of_a_random_subset_matches_enumeration():
    d = np.array([0.3, 0.1, 0.25, 0.4, 0.15, 0.2, 0.35])
    for k in (1, 2, 3, 7, 9):
        subsets = list(itertools.combinations(d, min(k, len(d))))
        assert expected_min_of_subset(d, k) == pytest.approx(np.mean([min(s) for s in subsets]))


def test_registration_undoes_a_small_shift_that_raw_l2_punishes():
    img = as_float([crop(SUBJECT, 1)], 64) if _has_lfw() else as_float(noise_images(1), 64)
    shifted = np.roll(img, 2, axis=2)  # 2 px to the right
    assert l2_matrix(shifted, img)[0, 0] > 2 * registered_l2_matrix(shifted, img)[0, 0]


def _has_lfw() -> bool:
    from metrics_helpers import DEMO

    return DEMO.is_dir()


@needs_lfw
def test_copies_of_training_photos_are_all_extracted_with_a_large_gap():
    train = [crop(SUBJECT, n) for n in range(1, 16)]
    holdout = [crop(SUBJECT, n) for n in range(16, 21)]
    generated = copies_of_train(range(1, 16))  # JPEG q75 and ±5-10% resized re-crops, one per photo
    m = memorization_metrics(generated, train, holdout, n_resamples=500)
    assert m["extraction_rate"]["value"] == 1.0 and m["extraction_rate"]["n"] == 15
    assert m["gap"]["value"] > 0.1 and m["gap"]["ci_low"] > 0.05  # copies: far closer to train than holdout
    assert m["gap_size_matched"]["value"] > 0.03
    assert m["per_image"]["nearest_train_registered_l2"].max() <= DELTA_REGISTERED_L2
    # Each copy's nearest training photo (after registration) is the photo it copies.
    assert list(m["per_image"]["nearest_train_registered_index"]) == list(range(15))
    assert [e["train_index"] for e in m["extracted"]] == list(range(15))
    assert m["relative_distance"]["value"] < 1.0


@needs_lfw
def test_other_photos_of_the_same_person_are_not_extracted_and_gap_is_near_zero():
    train = [crop(SUBJECT, n) for n in range(1, 11)]
    generated = [crop(SUBJECT, n) for n in range(11, 16)]  # same person, photos never trained on
    holdout = [crop(SUBJECT, n) for n in range(16, 21)]
    m = memorization_metrics(generated, train, holdout, n_resamples=500)
    assert m["extraction_rate"]["value"] == 0.0 and m["extraction_rate"]["n"] == 10
    assert m["extraction_rate_unregistered"]["value"] == 0.0
    assert abs(m["gap"]["value"]) < 0.04
    assert m["gap_size_matched"]["ci_low"] <= 0.0 <= m["gap_size_matched"]["ci_high"] + 0.01
    assert m["per_image"]["nearest_train_registered_l2"].min() > DELTA_REGISTERED_L2
    assert m["relative_distance"]["value"] > 1.2


@needs_lfw
def test_mirrored_copies_are_copies_but_mirrored_non_members_are_not_extracted():
    """Training sees every photo and its mirror image, so a left-right flipped copy of a training photo is
    extracted; a flipped copy of a holdout photo is not (it is nearest to the holdout photo, in the gap)."""
    train = [crop(SUBJECT, n) for n in range(1, 9)]
    holdout = [crop(SUBJECT, n) for n in range(16, 21)]
    flipped = [np.ascontiguousarray(img[:, ::-1]) for img in copies_of_train(range(1, 5))]
    m = memorization_metrics(flipped, train, holdout, n_resamples=200)
    assert m["extraction_rate"]["value"] == 0.5 and [e["train_index"] for e in m["extracted"]] == [0, 1, 2, 3]
    assert m["gap"]["value"] > 0.05
    other = [np.ascontiguousarray(img[:, ::-1]) for img in (crop(SUBJECT, 16), crop(SUBJECT, 17))]
    m = memorization_metrics(other, train, holdout, n_resamples=200)
    assert m["extraction_rate"]["value"] == 0.0 and m["gap"]["value"] < 0  # nearer a holdout photo


def test_copy_similarity_is_reported_unavailable_not_substituted():
    imgs = noise_images(3)
    m = memorization_metrics(imgs, imgs[:2], imgs[2:], n_resamples=50)
    assert m["copy_similarity"] == COPY_SIMILARITY_UNAVAILABLE
    assert m["copy_similarity"]["available"] is False and "SSCD" in m["copy_similarity"]["reason"]


def test_images_of_another_size_are_resized_to_the_generation_size():
    gen = noise_images(2, size=32)
    ref = [np.kron(g, np.ones((2, 2, 1), dtype=np.uint8)) for g in gen]  # the same images at 64 px
    m = memorization_metrics(gen, ref, ref, n_resamples=50)
    assert m["size"] == 32
    assert m["extraction_rate"]["value"] == 1.0
