"""What the app remembers per subject, and the one-comparison-at-a-time guard with its cancel flag.

State (the spec's ``subject`` entry, the retention days, the last *complete* run folder) lives in
``<subject folder>/app-session.json``, registered in the subject's manifest so that erasure and
retention delete it with everything else: a logged-in user gets their subject and last run back after a
reload or a restart; an anonymous session's state goes with its erasure.

A comparison holds its subject's :class:`RunGuard` while it runs. Cancel sets the guard's flag; the run
checks it at every progress report (:class:`Cancelled`) and training after every step (the runner's
``should_stop``), and stops there. A new run, and the erasure at
the end of a session, wait for the guard, so nothing writes into a subject while it is being erased.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

from workbench import paths
from workbench.errors import Interrupted

log = logging.getLogger(__name__)

STATE_FILE = "app-session.json"
_LOCK = threading.Lock()
_GUARDS: dict[str, RunGuard] = {}


class Cancelled(Interrupted):
    """The comparison was cancelled by its user; raised at the next progress report (training stops at
    its next step through the runner's ``should_stop``)."""


@dataclass
class RunGuard:
    busy: threading.Lock = field(default_factory=threading.Lock)
    cancel: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")


# ---------------------------------------------------------------------------------------------------
# State

def _path(sid: str):
    return paths.stored_subject_dir(sid) / STATE_FILE  # bookkeeping: plain also when the subject is encrypted


def state(sid: str) -> dict:
    """The subject's app state ({} when none), read from its state file every time: the file is the truth,
    also when a run executes in another process (ZeroGPU forks one per GPU call)."""
    path = _path(sid)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def update(sid: str, **changes) -> dict:
    """Merge ``changes`` into the subject's state and write its state file (registered, kind ``record``)."""
    from workbench.lifecycle import manifest

    with _LOCK:
        new = state(sid) | changes
        data = (json.dumps(new, indent=1, sort_keys=True) + "\n").encode()
        manifest.write_bytes(sid, "record", _path(sid), data)
    return new


# ---------------------------------------------------------------------------------------------------
# Run guard

def guard(sid: str) -> RunGuard:
    with _LOCK:
        return _GUARDS.setdefault(sid, RunGuard())


def request_cancel(sid: str) -> bool:
    """Ask the subject's running comparison to stop; False when none is running."""
    g = guard(sid)
    if not g.busy.locked():
        return False
    g.cancel.set()
    return True


def running(sid: str) -> bool:
    return guard(sid).busy.locked()


def end_anonymous(sid: str):
    """The end of an anonymous session: stop its run, then erase its subject (receipt + audit-log lines).

    Returns the erasure receipt, or None when the session stored nothing."""
    from workbench.lifecycle.audit_log import acting_as
    from workbench.lifecycle.erasure import erase

    g = guard(sid)
    g.cancel.set()
    with g.busy:  # the run stops at its next step or stage; nothing may write into the subject while it is erased
        try:
            if not paths.stored_subject_dir(sid).exists():
                return None
            with acting_as(sid):
                receipt = erase(sid)
            log.info("session ended: erased subject %s (receipt %s)", sid, receipt.receipt_id)
            return receipt
        except Exception:  # noqa: BLE001 - the server goes on; retention deletes what is left
            log.exception("session ended: could not erase subject %s", sid)
            return None
        finally:
            g.cancel.clear()
            with _LOCK:
                _GUARDS.pop(sid, None)


def erase_anonymous_leftovers() -> list[str]:
    """At launch: erase every anonymous subject a previous server left behind (its sessions ended with it).

    Assumes one app process per data root. Returns the erased subject ids."""
    from workbench.app.identity import is_anonymous_subject

    root = paths.subjects_root()
    if not root.is_dir():
        return []
    leftovers = sorted(p.name for p in root.iterdir() if p.is_dir() and is_anonymous_subject(p.name))
    return [sid for sid in leftovers if end_anonymous(sid) is not None]
