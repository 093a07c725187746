"""Where the workbench keeps its state.

Everything lives under ``$WORKBENCH_HOME`` (default ``~/.cache/workbench``), so tests and users can
point it anywhere. Subject folders are named by pseudonymous ids, never by people's names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def home() -> Path:
    """The data root: ``$WORKBENCH_HOME`` or ``~/.cache/workbench``."""
    root = os.environ.get("WORKBENCH_HOME") or Path.home() / ".cache" / "workbench"
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_subject_id(subject_id: str) -> str:
    """A subject id is a short slug (letters, digits, ``-``, ``_``); it becomes a folder name."""
    if not isinstance(subject_id, str) or not _SUBJECT_ID.match(subject_id):
        raise ValueError(
            f"subject id {subject_id!r} is not allowed: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'subject-01')"
        )
    return subject_id


def subjects_root() -> Path:
    return home() / "subjects"


# subject id -> its plaintext working copy while this process has the (encrypted) subject open
# (workbench.lifecycle.sealed); set and cleared only there
_working: dict[str, Path] = {}


def subject_dir(subject_id: str) -> Path:
    """The subject's folder as work on it reads and writes it: its plaintext working copy while this process
    has it open encrypted (:mod:`workbench.lifecycle.sealed`), else :func:`stored_subject_dir`."""
    return _working.get(check_subject_id(subject_id)) or stored_subject_dir(subject_id)


def stored_subject_dir(subject_id: str) -> Path:
    """The subject's folder in the data root, as stored (ciphertext when the subject is encrypted): what the
    lifecycle (manifest, retention policy, erasure, verification) reads and deletes."""
    return subjects_root() / check_subject_id(subject_id)


def runs_root() -> Path:
    return home() / "runs"


ERASURE_JOURNAL = "erasure-journal"  # folder of the data root holding pending erasures (one file per subject)


def erasure_journal_dir() -> Path:
    """Where pending erasures are journaled (:mod:`workbench.lifecycle.erasure`); its ``.lock`` serialises them."""
    return home() / ERASURE_JOURNAL


def erasure_journal(subject_id: str) -> Path:
    """The journal of a pending (or interrupted) erasure of ``subject_id``; it exists only while one is pending."""
    return erasure_journal_dir() / f"{check_subject_id(subject_id)}.json"


def lfw_dir() -> Path | None:
    """The LFW copy to use for demo subjects: ``$WORKBENCH_LFW_DIR`` or the shared data folder."""
    env = os.environ.get("WORKBENCH_LFW_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates += [here.parent / "shared" / "data" / "lfw", home() / "lfw"]
    for cand in candidates:
        if (cand / "demo").is_dir() or (cand / "people").is_dir():
            return cand
    return None
