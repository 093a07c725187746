"""A subject's retention policy: days to keep each kind of artifact, and whether to encrypt at rest.

Stored in ``<subject_dir>/retention.json`` (plain, also for an encrypted subject); absent means
:data:`DEFAULT_DAYS` for every kind and no encryption. The format is the spec's ``retention`` block
(:class:`workbench.spec.RetentionSpec`; ``encrypt``: encryption at rest, :mod:`.sealed`)::

    {"default_days": 30, "kinds": {"upload": 7, "weights": 90}, "encrypt": false}

The policy in force applies to every artifact of the subject, including those registered before it
was set: a deadline is ``created + days_for(kind)``, recomputed from the current policy (each manifest
line also records the deadline in force when it was written, in ``expires``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench import paths
from workbench.errors import UserError

DEFAULT_DAYS = 30  # kept this long when the subject has no retention.json
POLICY_FILE = "retention.json"
DAY = 86400.0  # seconds


class EncryptionStaysOn(UserError, ValueError):
    """A policy would turn encryption at rest off for a subject whose files are ciphertext."""


def policy_path(subject_id: str) -> Path:
    return paths.stored_subject_dir(subject_id) / POLICY_FILE


def normalise(policy: Any) -> dict:
    """A RetentionSpec, or a dict like it (+ ``encrypt``), → a checked plain dict; ValueError names the field."""
    from workbench.lifecycle.manifest import KINDS

    if hasattr(policy, "model_dump"):
        policy = policy.model_dump(mode="json")
    if not isinstance(policy, dict):
        raise ValueError(f"retention policy must be a mapping, not {type(policy).__name__}")
    unknown = sorted(set(policy) - {"default_days", "kinds", "encrypt"})
    if unknown:
        raise ValueError(f"retention.{unknown[0]}: unknown key; expected default_days, kinds, encrypt")
    out = {"default_days": policy.get("default_days", DEFAULT_DAYS), "kinds": dict(policy.get("kinds") or {}),
           "encrypt": False if policy.get("encrypt") is None else policy["encrypt"]}
    for where, days in [("default_days", out["default_days"])] + [(f"kinds.{k}", v) for k, v in out["kinds"].items()]:
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise ValueError(f"retention.{where}: {days!r} is not a whole number of days ≥ 0")
    for kind in out["kinds"]:
        if kind not in KINDS:
            raise ValueError(f"retention.kinds: unknown artifact kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if not isinstance(out["encrypt"], bool):
        raise ValueError(f"retention.encrypt: {out['encrypt']!r} is not true or false")
    return out


def set_retention(subject_id: str, policy: Any) -> dict:
    """Write the subject's policy (atomically); returns it as stored.

    ``policy``: a :class:`workbench.spec.RetentionSpec` or a dict like it; without an ``encrypt`` key (or with
    ``encrypt: null``) the subject's current setting is kept. Encryption at rest, once on, stays on until the
    subject is erased (its files are ciphertext); turning it on creates the subject's key.
    """
    from workbench.lifecycle.keys import ensure_key
    from workbench.lifecycle.manifest import atomic_write_bytes

    if hasattr(policy, "model_dump"):
        policy = policy.model_dump(mode="json")
    current = load_policy(subject_id)["encrypt"]
    if isinstance(policy, dict) and policy.get("encrypt") is None:
        policy = {**policy, "encrypt": current}
    policy = normalise(policy)
    if current and not policy["encrypt"]:
        raise EncryptionStaysOn(f"retention.encrypt: subject {subject_id!r} is encrypted at rest, which stays on "
                                "until the subject is erased; leave encrypt out (or true), or erase the subject")
    if policy["encrypt"]:
        ensure_key(subject_id)
    atomic_write_bytes(policy_path(subject_id), (json.dumps(policy, indent=1, sort_keys=True) + "\n").encode())
    return policy


def load_policy(subject_id: str) -> dict:
    """The subject's policy, or the default one (30 days for all kinds, no encryption)."""
    path = policy_path(subject_id)
    if not path.is_file():
        return normalise({})
    try:
        return normalise(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a valid retention policy ({exc}); rewrite it with set_retention") from None


def days_for(policy: dict, kind: str) -> int:
    return int(policy["kinds"].get(kind, policy["default_days"]))


def deadline(policy: dict, kind: str, created: float) -> float:
    """Epoch seconds after which an artifact of ``kind`` written at ``created`` is due for deletion."""
    return created + days_for(policy, kind) * DAY
