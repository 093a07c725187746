"""The audit log: ``$WORKBENCH_HOME/audit.jsonl``, one JSON line per lifecycle action, hash-chained.

Each line is ``{seq, time, actor, action, subject, sha256 | count, ..., prev_hash, hash}`` where
``hash = sha256(canonical JSON of the line without "hash")`` and ``prev_hash`` is the previous line's
``hash`` (:data:`GENESIS` for the first line). Editing a line breaks its own hash; removing, inserting or
reordering lines breaks the next line's ``prev_hash`` (and ``seq``). Removing lines *at the end* leaves
a valid chain, so every append also writes the head (last ``seq`` and ``hash``) to ``audit.head.json``,
and erasure receipts carry the head hash at the time they were written.

What a chain cannot do: someone who can write the data root can rewrite the whole log *and* the head
consistently. Copy ``audit.head.json`` (or receipts) somewhere they cannot write to make that detectable.

Subjects appear by pseudonymous id only; artifacts by sha256; never a name or a file name. ``actor``
is the one set by :func:`acting_as` (the app: the session's pseudonymous subject id), else
``$WORKBENCH_ACTOR``, else the OS user.
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench import paths

try:
    import fcntl  # POSIX: serialise appends from concurrent processes
except ImportError:  # pragma: no cover - Windows: appends are not serialised
    fcntl = None

log = logging.getLogger(__name__)

LOG_FILE = "audit.jsonl"
HEAD_FILE = "audit.head.json"
GENESIS = "0" * 64
ACTIONS = ("register", "purge", "erase", "erase-start", "verify", "export", "import", "retention", "repair")


def log_path() -> Path:
    return paths.home() / LOG_FILE


def head_path() -> Path:
    return paths.home() / HEAD_FILE


def line_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("workbench_audit_actor", default=None)


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Lines appended in this block (this thread or task only) name ``actor``; use a pseudonymous id."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def _actor() -> str:
    if _ACTOR.get():
        return _ACTOR.get()
    if os.environ.get("WORKBENCH_ACTOR"):
        return os.environ["WORKBENCH_ACTOR"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name (e.g. some containers)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _tail(fd: int) -> tuple[dict | None, int]:
    """(last complete line, parsed; offset just after it). Bytes past that offset are an incomplete line."""
    size = os.lseek(fd, 0, os.SEEK_END)
    window = 4096
    while True:
        start = max(0, size - window)
        os.lseek(fd, start, os.SEEK_SET)
        chunk = os.read(fd, size - start)
        cut = chunk.rfind(b"\n")
        if cut < 0 and start > 0:
            window *= 4  # no newline in sight yet: read further back
            continue
        end = start + cut + 1 if cut >= 0 else 0
        lines = chunk[: cut + 1].rstrip(b"\n").rsplit(b"\n", 1) if cut >= 0 else [b""]
        if len(lines) < 2 and start > 0:
            window *= 4
            continue
        last = lines[-1]
        if not last:
            return None, end
        try:
            entry = json.loads(last)
            if isinstance(entry, dict) and isinstance(entry.get("seq"), int) and "hash" in entry:
                return entry, end
        except json.JSONDecodeError:
            pass
        log.warning("the last line of the audit log is damaged; `workbench audit-log verify` reports it")
        return {"seq": 0, "hash": hashlib.sha256(last).hexdigest()}, end


def append(action: str, subject: str | None = None, sha256: str | None = None, count: int | None = None,
           **details: str | int | float | None) -> dict:
    """Append one line; returns it. ``details``: extra plain fields (e.g. ``kind="crop"``)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; expected one of {', '.join(ACTIONS)}")
    path = log_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if fcntl:
            fcntl.flock(fd, fcntl.LOCK_EX)
        last, end = _tail(fd)
        size = os.lseek(fd, 0, os.SEEK_END)
        entries = []
        if end < size:  # a line cut short by a crash: drop it, and say so in the log
            os.ftruncate(fd, end)
            entries.append({"action": "repair", "count": size - end, "note": "dropped an incomplete last line"})
        entries.append({"action": action, "subject": subject, "sha256": sha256, "count": count, **details})
        for fields in entries:
            entry = {"seq": (last["seq"] + 1) if last else 1, "time": _now(), "actor": _actor()}
            entry.update({k: v for k, v in fields.items() if v is not None})
            entry["prev_hash"] = last["hash"] if last else GENESIS
            entry["hash"] = line_hash(entry)
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
            last = entry
        os.fsync(fd)
        tmp = head_path().with_name(f".{HEAD_FILE}.{socket.gethostname()}.{os.getpid()}")  # unique per node
        tmp.write_text(json.dumps({"seq": last["seq"], "hash": last["hash"]}) + "\n", encoding="utf-8")
        os.replace(tmp, head_path())
        return last
    finally:
        os.close(fd)  # releases the lock


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def read() -> list[dict]:
    path = log_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def verify(path: Path | None = None) -> tuple[bool, int | None, str]:
    """Check the chain: ``(ok, first bad line number (1-based) or None, reason)``."""
    path = Path(path) if path else log_path()
    if not path.exists():
        return True, None, "no audit log yet"
    prev, n = GENESIS, 0
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return False, n, "not a JSON line (edited or cut short)"
            if not isinstance(entry, dict) or "hash" not in entry:
                return False, n, "not an audit entry (no hash)"
            if line_hash(entry) != entry["hash"]:
                return False, n, "its content does not match its hash (the line was edited)"
            if entry.get("prev_hash") != prev:
                return False, n, "its prev_hash is not the previous line's hash (a line was removed, inserted " \
                                 "or moved before it)"
            if entry.get("seq") != n:
                return False, n, f"sequence number {entry.get('seq')} where {n} was expected (lines out of order)"
            prev = entry["hash"]
    head = head_path() if path == log_path() else path.with_name(HEAD_FILE)
    if head.exists():
        try:
            h = json.loads(head.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False, None, f"{head.name} is unreadable"
        if h.get("seq", 0) > n:
            return False, n + 1, f"the log ends at line {n} but {head.name} records line {h['seq']}: " \
                                 "lines were removed from the end"
        if h.get("seq"):
            with open(path, encoding="utf-8") as fh:
                for i, line in enumerate(fh, start=1):
                    if i == h["seq"] and json.loads(line)["hash"] != h.get("hash"):
                        return False, i, f"line {i} does not match the hash recorded in {head.name}"
    return True, None, f"{n} lines, chain intact"
