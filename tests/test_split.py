"""Random member/non-member splits (METRICS.md "Splits"): seeded, uniform, independent of file order."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from workbench.errors import UserError
from workbench.subjects.split import draw_split

PHOTOS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(40)]


def test_the_same_photos_and_seed_give_the_same_split_whatever_the_order():
    a = draw_split(PHOTOS, members=15, seed=3)
    b = draw_split(list(reversed(PHOTOS)), members=15, seed=3)
    assert a == b and len(a.members) == 15 and len(a.non_members) == 25
    assert set(a.members).isdisjoint(a.non_members) and set(a.members) | set(a.non_members) == set(PHOTOS)
    assert draw_split(PHOTOS, members=15, seed=4).members != a.members
    assert a.meta() == {"seed": 3, "members": 15, "non_members": 25, "method": "random", "notes": []}


def test_every_photo_is_a_member_equally_often():
    """Uniform: over many seeds each photo is drawn with probability 15/40."""
    counts = dict.fromkeys(PHOTOS, 0)
    for seed in range(2000):
        for d in draw_split(PHOTOS, members=15, seed=seed).members:
            counts[d] += 1
    rates = np.array(list(counts.values())) / 2000
    assert np.abs(rates - 15 / 40).max() < 0.045  # > 4 binomial standard errors (0.011) from 0.375


def test_few_photos_keep_a_quarter_out_and_say_so_and_caps_apply():
    split = draw_split(PHOTOS[:12], members=15, seed=0)
    assert len(split.members) == 9 and len(split.non_members) == 3 and "reduced from 15 to 9" in split.notes[0]
    capped = draw_split(PHOTOS, members=15, seed=0, max_non_members=10)
    assert len(capped.non_members) == 10 and "capped" in capped.notes[0]
    assert len(draw_split(PHOTOS[:20], holdout_fraction=0.25, seed=0).non_members) == 5
    with pytest.raises(UserError, match="at least 2"):
        draw_split(PHOTOS[:1])
