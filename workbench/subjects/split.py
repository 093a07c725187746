"""Members and non-members: a random split of every accepted photo of a subject, drawn with a recorded seed.

Membership evidence means something only if members and non-members are exchangeable (METRICS.md,
"Splits"): the members are drawn uniformly at random from *every* accepted photo of the person, and
all the others (or a random ``max_non_members`` of them) are the non-members. A split by file order
is not random: on the untouched base model the LFW demo's ordered split (photos 1–15 vs 16–20) gave
a loss-attack AUC of 0.13 with nothing trained. Because the split is random, a permutation test of
the member/non-member labels is valid (:mod:`workbench.metrics.roc`).

The draw is a pure function of the photos' content hashes, the member count and the seed: the same
photos and seed give the same split on any machine, in any order the files were listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.errors import UserError

DEFAULT_MEMBERS = 15  # a headshot service's typical 10-20 selfies
MIN_NON_MEMBERS = 1


@dataclass(frozen=True)
class Split:
    """Which photos trained the model (members) and which did not (non-members)."""

    members: list[str]  # photo content hashes, in draw order
    non_members: list[str]
    seed: int
    method: str = "random"
    notes: list[str] = field(default_factory=list)

    def meta(self) -> dict:
        """``results.json``'s ``meta.split``: counts, seed and method (the hashes go in the run folder)."""
        return {"seed": self.seed, "members": len(self.members), "non_members": len(self.non_members),
                "method": self.method, "notes": list(self.notes)}

    def record(self) -> dict:
        """The whole split (``split.json`` in the run folder): the meta and every photo hash."""
        return self.meta() | {"member_sha256": list(self.members), "non_member_sha256": list(self.non_members)}


def members_for(n_photos: int, members: int | None, holdout_fraction: float | None) -> tuple[int, list[str]]:
    """How many members to draw from ``n_photos``, and notes when the request had to be reduced."""
    if n_photos < 2:
        raise UserError(f"a subject needs at least 2 accepted photos (members and non-members); it has {n_photos}: "
                        "add photos")
    if members is None and holdout_fraction is not None:
        k = n_photos - max(MIN_NON_MEMBERS, round(holdout_fraction * n_photos))
        return max(1, k), []
    wanted = DEFAULT_MEMBERS if members is None else members
    if wanted <= n_photos - MIN_NON_MEMBERS:
        return wanted, []
    k = max(1, n_photos - max(MIN_NON_MEMBERS, round(0.25 * n_photos)))
    return k, [f"members reduced from {wanted} to {k}: only {n_photos} photos were accepted "
               f"(a quarter are kept as non-members)"]


def draw_split(digests: list[str], members: int | None = None, seed: int = 0, max_non_members: int | None = None,
               holdout_fraction: float | None = None) -> Split:
    """Draw ``members`` of the photos uniformly at random (seeded); the rest are non-members.

    Uniform: the photos are ordered by their content hash, then permuted by a generator seeded with
    ``seed``, so the draw does not depend on file names or listing order."""
    unique = sorted(set(digests))
    k, notes = members_for(len(unique), members, holdout_fraction)
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    chosen, rest = order[:k], order[k:]
    if max_non_members is not None and len(rest) > max_non_members:
        notes.append(f"non-members capped at {max_non_members} of {len(rest)} (subject.max_non_members)")
        rest = rest[:max_non_members]
    return Split(chosen, rest, seed, notes=notes)
