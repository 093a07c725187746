"""Erasure on request: one call deletes every artifact of a subject in every store, with a receipt.

:func:`erase` works in this order, each step idempotent:

1. plan: the subject's ledger of personal hashes (:func:`.verification.ledger`), its folders (subject
   folder, model and run folders naming it, folders registered whole) and every registered file that
   still exists; written to the journal ``$WORKBENCH_HOME/erasure-journal/<subject>.json`` *before*
   anything is deleted;
2. registered files, by path (outside every store only if the bytes are still the registered ones);
3. copies: any file in any store whose sha256 (or file name) is a personal hash, wherever it was copied;
4. the subject's folders, whole (the subject folder, with its manifest, last);
5. the encryption key (crypto-shredding), empty folders left in the stores;
6. verification (:func:`.verification.verify_erasure`), the receipt in
   ``$WORKBENCH_HOME/receipts/<receipt-id>.json``, an audit line; then the journal is removed.

A crash anywhere leaves the journal; :func:`resume_pending_erasures` (run at the start of every
workbench command via :func:`workbench.lifecycle.startup`) finishes it, with the same receipt id.
While a journal exists, nothing can be registered for the subject.

The receipt holds counts per kind, the personal sha256 list (with sizes and kinds), times, the
receipt id, the verification result and the audit-log head: no image, no name, no file name or path.

Test hook: with ``WORKBENCH_TEST_HOOKS=1``, ``WORKBENCH_TEST_ERASE_DELAY=<seconds>`` sleeps after each
deletion, so a test can kill the process mid-way (tests/test_erasure_crash.py). Ignored otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench import paths
from workbench.errors import Interrupted, UserError
from workbench.lifecycle import audit_log, manifest, stores, verification

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)


class NothingToErase(UserError):
    """The subject has no data in any store and no pending erasure (the app says so; the CLI says check the id)."""


@dataclass
class Receipt:
    receipt_id: str
    subject: str  # pseudonymous subject id
    requested: str  # ISO 8601 UTC: when the erasure started
    completed: str
    resumed: bool  # True when finished after an interruption
    counts: dict[str, int]  # files deleted per artifact kind ("copy": found by hash, "unregistered": other)
    files_deleted: int
    folders_removed: int
    key_destroyed: bool
    artifacts: list[dict]  # [{sha256, size, kind}] of the subject's personal artifacts
    verification: dict  # {"ok", "residual"} right after deletion
    audit_head: str  # hash of the audit-log line recording this erasure
    stores: list[str] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=lambda: list(verification.CANNOT_SEE))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


def _iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def _pause() -> None:
    if os.environ.get("WORKBENCH_TEST_HOOKS") == "1" and os.environ.get("WORKBENCH_TEST_ERASE_DELAY"):
        time.sleep(float(os.environ["WORKBENCH_TEST_ERASE_DELAY"]))


def _write_journal(subject_id: str, plan: dict) -> None:
    manifest.atomic_write_bytes(paths.erasure_journal(subject_id), json.dumps(plan, indent=1).encode())


def _plan(subject_id: str) -> dict:
    from workbench.lifecycle.keys import key_path

    personal = verification.ledger(subject_id)
    owned = verification.owned_folders(subject_id)
    lines = manifest.read(subject_id)
    kind_of = {manifest.resolve(a.path): a.kind for a in lines}  # the last registration's kind
    registered: dict[Path, set[str]] = {}
    for a in lines:
        registered.setdefault(manifest.resolve(a.path), set()).add(a.sha256)
    files, counts = [], Counter()
    whole = [f for f in owned if stores.store_of(f) is not None]  # deleted whole; outside stores: file by file
    others = verification.other_subject_hashes(subject_id)
    for path, hashes in registered.items():
        if not path.is_file() or any(path.is_relative_to(f) for f in whole):
            continue
        digest = manifest.sha256_file(path)
        mine = digest in hashes or digest in personal
        if not mine and (stores.store_of(path) is None or digest in others):
            log.warning("not deleting %s: it no longer holds what was registered there", path)
            continue
        files.append(str(path))
        counts[kind_of[path]] += 1
    for folder in whole:
        for f in folder.rglob("*") if folder.is_dir() else []:
            if f.is_file() or f.is_symlink():
                counts[kind_of.get(f.resolve(), "unregistered")] += 1
    return {
        "version": 1, "subject": subject_id, "receipt_id": uuid.uuid4().hex, "requested": _iso(),
        "files": files, "folders": [str(f) for f in owned], "copies": [], "counts": dict(counts),
        "existing_folders": [str(f) for f in owned if f.exists()], "key": key_path(subject_id).exists(),
        "artifacts": [{"sha256": h, **e} for h, e in sorted(personal.items(), key=lambda x: (x[1]["kind"], x[0]))],
    }


class _Lock:
    """One erasure at a time on this data root (another process waits)."""

    def __enter__(self):
        folder = paths.erasure_journal_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


class ErasureInProgress(Interrupted):
    """Work for a subject stopped (or was refused) because the subject is being, or has been, erased."""


_LOCK_TEXT = b"workbench: work on this subject holds this file shared; its erasure holds it exclusive\n"


def _subject_lock(subject_id: str, mode: int) -> int:
    """An open fd on the subject's work lock (``erasure-journal/locks/<subject>.lock``), locked in ``mode``."""
    folder = paths.erasure_journal_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{paths.check_subject_id(subject_id)}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if not os.fstat(fd).st_size:
        os.write(fd, _LOCK_TEXT)  # never empty: an empty file's hash may be a personal hash (an empty log)
    if fcntl:
        fcntl.flock(fd, mode)
    return fd


def _request_path(subject_id: str) -> Path:
    return paths.erasure_journal_dir() / f"{paths.check_subject_id(subject_id)}.request"


def erasure_requested(subject_id: str) -> bool:
    """True from the moment an erasure of the subject is asked for until it completes: running work for the
    subject polls this (the runner's ``should_stop``) and stops at its next step."""
    return _request_path(subject_id).exists() or paths.erasure_journal(subject_id).exists()


@contextmanager
def working_on(subject_ids: str | list[str], must_exist: bool = True, decrypt: bool = True) -> Iterator[None]:
    """Hold the subjects' work locks shared for the block (any number of processes, on any node of a shared
    data root); :func:`erase` takes the lock exclusive, so it waits for the block to end, and the block
    cannot start while an erasure is asked for or running (:class:`ErasureInProgress`). ``must_exist``:
    the subject folder must exist (work that continues an earlier step: its absence means it was erased).

    It is also the boundary of encryption at rest: an encrypted subject is opened as a plaintext working copy
    for the block and sealed back into the store when it ends (:mod:`.sealed`); ``decrypt=False`` for work that
    does not touch the subject's folder (e.g. writing a run file), which then only holds the lock."""
    from workbench.lifecycle import sealed

    ids = sorted({subject_ids} if isinstance(subject_ids, str) else set(subject_ids))
    fds, opened = [], []
    try:
        for sid in ids:
            fds.append(_subject_lock(sid, fcntl.LOCK_SH if fcntl else 0))
            if erasure_requested(sid):
                raise ErasureInProgress(f"subject {sid} is being erased: its work stops")
            if must_exist and not paths.stored_subject_dir(sid).is_dir():
                raise ErasureInProgress(f"subject {sid} was erased while the run was going on: its work stops")
        for sid in ids if decrypt else []:
            if sealed.open_subject(sid):
                opened.append(sid)
        yield
    finally:
        try:
            for sid in opened:
                sealed.close_subject(sid)
        finally:
            for fd in fds:
                os.close(fd)


def erase(subject_id: str, verify: bool = True) -> Receipt:
    """Delete every artifact of ``subject_id`` in every store; returns (and stores) the receipt.

    Resumes an interrupted erasure of the same subject when its journal exists. Work running for the
    subject (:func:`working_on`, e.g. a Ray task training one of its models) is asked to stop first (it
    stops at its next training step, or finishes the generation or measurement it is in); the erasure
    waits for it, then deletes, so nothing that work writes is left behind.
    """
    paths.check_subject_id(subject_id)
    with _Lock():
        request = _request_path(subject_id)
        request.write_text(_iso() + "\n", encoding="utf-8")
        try:
            fd = _subject_lock(subject_id, fcntl.LOCK_EX if fcntl else 0)  # waits for running work to stop
            try:
                receipt = _erase_locked(subject_id, verify)
                for lock in (paths.erasure_journal_dir() / "locks").glob(f"{subject_id}.*.lock"):
                    lock.unlink(missing_ok=True)  # the runner's per-model training locks (none is held now)
                return receipt
            finally:
                os.close(fd)
        finally:
            request.unlink(missing_ok=True)


def _erase_locked(subject_id: str, verify: bool) -> Receipt:
    journal = paths.erasure_journal(subject_id)
    resumed = journal.is_file()
    if resumed:
        plan = json.loads(journal.read_text(encoding="utf-8"))
        log.info("resuming the interrupted erasure of %s (receipt %s)", subject_id, plan["receipt_id"])
    else:
        plan = _plan(subject_id)
        if not (plan["files"] or plan["artifacts"] or plan["key"] or plan["existing_folders"]):
            raise NothingToErase(f"subject {subject_id!r} has no data in the stores and no erasure receipt: "
                                 "check the id (`ls $WORKBENCH_HOME/subjects`)")
        _write_journal(subject_id, plan)
        audit_log.append("erase-start", subject_id, count=len(plan["artifacts"]), receipt=plan["receipt_id"])
    return _execute(subject_id, plan, resumed, verify)


def _unlink(path: Path, touched: set[Path]) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    touched.add(path.parent)
    _pause()
    return True


def _rmdir(folder: Path) -> bool:
    try:
        folder.rmdir()
        return True
    except OSError:
        return False


def _execute(subject_id: str, plan: dict, resumed: bool, verify: bool) -> Receipt:
    from workbench.lifecycle.keys import destroy_key, key_path

    touched: set[Path] = set()
    owned = [Path(f) for f in plan["folders"]]
    for f in plan["files"]:  # 2. registered files
        _unlink(Path(f), touched)
    personal = {a["sha256"]: a for a in plan["artifacts"]}
    found = [str(p) for _, p, _ in verification.find_copies(personal, skip=owned)]  # 3. copies
    new = [p for p in found if p not in plan["copies"]]
    if new:
        plan["copies"] += new
        _write_journal(subject_id, plan)
    for f in plan["copies"]:
        _unlink(Path(f), touched)
    subject_dir = paths.stored_subject_dir(subject_id)
    for folder in sorted(owned, key=lambda f: f == subject_dir):  # 4. folders; the subject folder last
        if not folder.exists() or stores.is_protected(folder):
            continue
        if stores.store_of(folder) is None:  # the user's own folder: remove only what is now empty
            for sub in sorted((d for d in folder.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                _rmdir(sub)
            _rmdir(folder)
            continue
        shutil.rmtree(folder)
        touched.add(folder.parent)
        _pause()
    destroy_key(subject_id)  # 5. crypto-shredding
    removed = sum(not Path(f).exists() for f in plan["existing_folders"])
    for folder in sorted(touched, key=lambda p: len(p.parts), reverse=True):
        stores.prune_empty(folder)
    result = verification.verify_erasure(subject_id, log=False, _erasing=True) if verify else None  # 6.
    counts = dict(plan["counts"])
    if plan["copies"]:
        counts["copy"] = len(plan["copies"])
    entry = audit_log.append("erase", subject_id, count=sum(counts.values()), receipt=plan["receipt_id"],
                             ok=None if result is None else int(result["ok"]))
    receipt = Receipt(
        receipt_id=plan["receipt_id"], subject=subject_id, requested=plan["requested"], completed=_iso(),
        resumed=resumed, counts=counts, files_deleted=sum(counts.values()), folders_removed=removed,
        key_destroyed=plan["key"] and not key_path(subject_id).exists(), artifacts=plan["artifacts"],
        verification={"ok": None, "residual": None} if result is None else
        {"ok": result["ok"], "residual": len(result["residual"])},
        audit_head=entry["hash"], stores=sorted(stores.stores()),
    )
    out = verification.receipts_dir() / f"{receipt.receipt_id}.json"
    manifest.atomic_write_bytes(out, (receipt.to_json() + "\n").encode())
    paths.erasure_journal(subject_id).unlink(missing_ok=True)
    return receipt


def pending_erasures() -> list[str]:
    folder = paths.erasure_journal_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def resume_pending_erasures() -> list[Receipt]:
    """Finish every erasure a crash interrupted; returns their receipts. Cheap when there is none."""
    receipts = []
    for subject_id in pending_erasures():
        try:
            receipts.append(erase(subject_id))
            log.warning("completed the interrupted erasure of subject %s (receipt %s)", subject_id,
                        receipts[-1].receipt_id)
        except Exception as exc:  # noqa: BLE001 - one failure must not stop the command that was asked for
            log.error("could not complete the erasure of subject %s: %s", subject_id, exc)
    return receipts
