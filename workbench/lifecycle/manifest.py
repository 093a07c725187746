"""The per-subject manifest: every artifact derived from a subject is registered when written.

One JSON line per artifact in ``<subject_dir>/manifest.jsonl``: kind, path (relative to the data root
when inside it), sha256, size, created, expires (created + the kind's days under the subject's retention
policy, :mod:`.policy`). Writers go through :func:`write_bytes` / :func:`register` (or
:func:`register_external` for files in the W&B and app-temp stores), so retention and erasure find every
artifact by path and every copy by hash. Each register call also appends one audit-log line.

The file is append-only. Besides artifact lines it holds lines with a ``type``:

- ``{"type": "tombstone", path, sha256, size, kind, deleted, reason}``: a purge deleted the file; the
  hash stays listed, so verification still finds copies of it;
- ``{"type": "folder", path, kind, created}``: a registered folder (e.g. a W&B run), deleted whole.

:func:`read` returns the artifact lines (history, as written); :func:`live` the current ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from workbench import paths

try:
    import fcntl  # POSIX: serialise appends from concurrent processes
except ImportError:  # pragma: no cover - Windows: appends are not serialised
    fcntl = None

KINDS = (
    "upload", "crop", "embedding", "latent_cache", "text_cache", "class_image", "weights",
    "optimizer_state", "checkpoint", "generation", "record", "report", "wandb", "bundle", "app_temp",
)


@dataclass(frozen=True)
class Artifact:
    kind: str
    path: str  # relative to the data root when inside it, else absolute
    sha256: str
    size: int
    created: float  # epoch seconds
    expires: float | None = None  # epoch seconds; None only on lines written before retention existed


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_writer(path: Path, prefix: str = ".tmp-") -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` only when the block ends without error (a temp file in the same
    folder, fsynced, then renamed), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_writer`."""
    with atomic_writer(path) as fh:
        fh.write(data)


def manifest_path(subject_id: str) -> Path:
    return paths.stored_subject_dir(subject_id) / "manifest.jsonl"


def resolve(rel: str) -> Path:
    """A manifest ``path`` → an absolute path."""
    path = Path(rel)
    return path if path.is_absolute() else paths.home() / path


def _rel(path: Path) -> str:
    """How a manifest line names ``path``: relative to the data root when inside it, else absolute; a path in an
    encrypted subject's working copy is named by its place in the store (:func:`.sealed.at_rest`)."""
    from workbench.lifecycle.sealed import at_rest

    path = at_rest(Path(path).resolve())
    try:
        return str(path.relative_to(paths.home()))
    except ValueError:
        return str(path)


def check_not_erasing(subject_id: str) -> None:
    """UserError while an erasure of the subject is pending: nothing may be added to it then."""
    from workbench.errors import UserError

    if paths.erasure_journal(subject_id).exists():
        raise UserError(f"subject {subject_id!r} is being erased; nothing can be added to it until the erasure "
                        "completes (any workbench command completes it first)")


def _append(subject_id: str, lines: list[dict]) -> None:
    """Append whole lines, safe across processes (Ray tasks, the app, the CLI): an exclusive ``flock`` on
    the manifest, one ``write`` of complete lines; after a writer killed mid-line, a newline first so
    the cut line stays alone (``read_lines`` skips it) and the new lines stay whole."""
    mpath = manifest_path(subject_id)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
    fd = os.open(mpath, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        if fcntl:
            fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.lseek(fd, 0, os.SEEK_END)
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, full disks): never leave half a line
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)  # releases the lock


def register(subject_id: str, kind: str, path: Path) -> Artifact:
    """Record an artifact that has just been written (files) or every file under it (folders).

    A file in an encrypted subject's working copy is sealed into the store at once (:mod:`.sealed`); its line
    gives the store path and the plaintext's sha256 and size."""
    from workbench.lifecycle import audit_log, policy, sealed

    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {', '.join(KINDS)}")
    check_not_erasing(subject_id)
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    rules = policy.load_policy(subject_id)
    arts = []
    for f in files:
        now = time.time()
        arts.append(Artifact(kind, _rel(f), sha256_file(f), f.stat().st_size, now, policy.deadline(rules, kind, now)))
    sealed.seal_files(files)
    _append(subject_id, [asdict(a) for a in arts])
    last = arts[-1] if arts else None
    audit_log.append("register", subject_id, sha256=last.sha256 if len(arts) == 1 else None, count=len(arts),
                     kind=kind)
    return last


def register_external(subject_id: str, kind: str, path: Path) -> Artifact | None:
    """Register a file or folder written outside the data root, in the W&B or app-temp store.

    A folder is also recorded as a whole (a ``folder`` line), so erasure and retention delete files
    added to it later too (W&B keeps appending to an offline run). ``path`` must lie inside a store
    (:func:`workbench.lifecycle.stores.stores`) and not be a store's root.
    """
    from workbench.lifecycle import stores

    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; register files after writing them")
    if stores.store_of(path) is None or stores.is_protected(path):
        names = ", ".join(f"{k}={v}" for k, v in stores.stores().items())
        raise ValueError(f"{path} is not inside a store ({names}); write it there, or set WANDB_DIR / "
                         "GRADIO_TEMP_DIR so that it is")
    if path.is_dir():
        check_not_erasing(subject_id)
        _append(subject_id, [{"type": "folder", "kind": kind, "path": _rel(path), "created": time.time()}])
    return register(subject_id, kind, path)


def tombstone(subject_id: str, art: Artifact, reason: str, sha256: str | None = None, size: int | None = None) -> None:
    """Record that ``art``'s file was deleted (by a purge); the hash stays in the manifest."""
    _append(subject_id, [{"type": "tombstone", "kind": art.kind, "path": art.path, "sha256": sha256 or art.sha256,
                          "size": art.size if size is None else size, "deleted": time.time(), "reason": reason}])


def write_bytes(subject_id: str | list[str], kind: str, path: Path, data: bytes) -> Artifact:
    """Atomically write ``data`` to ``path`` and register it (with each subject, when the file holds the data
    of several people, as a cohort's results do: erasing any one of them deletes it)."""
    atomic_write_bytes(Path(path), data)
    owners = [subject_id] if isinstance(subject_id, str) else list(subject_id)
    return [register(owner, kind, path) for owner in owners][0]


def read_lines(subject_id: str) -> list[dict]:
    """Every line of the manifest, parsed; a line cut short by a crash is skipped."""
    mpath = manifest_path(subject_id)
    if not mpath.exists():
        return []
    out = []
    for line in mpath.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read(subject_id: str) -> list[Artifact]:
    """Every artifact line, in the order written (files later deleted or rewritten included)."""
    return [Artifact(**line) for line in read_lines(subject_id) if "type" not in line]


def tombstones(subject_id: str) -> list[dict]:
    return [line for line in read_lines(subject_id) if line.get("type") == "tombstone"]


def folders(subject_id: str) -> list[dict]:
    return [line for line in read_lines(subject_id) if line.get("type") == "folder"]


def live(subject_id: str) -> list[Artifact]:
    """The current artifacts: the last registration of each path not deleted since, with ``expires``
    recomputed under the subject's retention policy in force now."""
    from workbench.lifecycle import policy

    rules = policy.load_policy(subject_id)
    current: dict[str, Artifact] = {}
    for line in read_lines(subject_id):
        kind = line.get("type")
        if kind is None:
            current.pop(line["path"], None)  # keep insertion order = order of last registration
            current[line["path"]] = Artifact(**line)
        elif kind == "tombstone":
            current.pop(line["path"], None)
    return [Artifact(**(asdict(a) | {"expires": policy.deadline(rules, a.kind, a.created)})) for a in current.values()]
