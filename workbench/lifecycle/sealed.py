"""Encryption at rest of a subject's folder; work reads and writes a plaintext working copy (crypto-shredding).

A subject whose retention policy says ``encrypt: true`` (spec ``retention.encrypt``; on for the app) keeps
every file of ``$WORKBENCH_HOME/subjects/<id>/`` as ciphertext under its key (:mod:`.keys`), except the
lifecycle's bookkeeping, which holds no image and no name (:data:`PLAIN`). Erasure destroys the key, so
what a backup still holds is unreadable. Work on a subject runs inside
:func:`workbench.lifecycle.erasure.working_on` (the subject's work lock), which opens it here:

- **open** (the process's first block on the subject): a working copy
  ``<scratch>/workbench-sealed-<uid>/<pid>-<token>/<id>/`` (folders 0700; scratch: ``$WORKBENCH_SCRATCH``,
  else ``/dev/shm``, a tmpfs, never on disk, else the system temp folder) gets the subject's files
  decrypted, except ``models/``: a model folder is decrypted when a row needs it (:func:`pull`).
  :func:`workbench.paths.subject_dir` names the working copy until the close, so intake, training,
  generation and the metrics read and write plain files as they always did. Files written before
  encryption was turned on are encrypted in place.
- **while open**: a file registered in the manifest is encrypted into the store at once (:func:`seal_files`,
  called by :func:`.manifest.register`; a model's file with its model folder), so a checkpoint and the loss
  log up to it survive a lost node; registered paths are the store's (:func:`at_rest`).
- **close** (the process's last block ends, normally or by an exception): files new or changed in the working
  copy are encrypted into the store (temp file + rename), files deleted there are deleted from the store,
  and the working copy is removed. Only what this process changed is written, so processes working on one
  subject at once (Ray tasks) merge: each writes the content-keyed files it made. Working copies of dead
  processes are removed by the next process that opens one (:func:`sweep`) and at every command's start.

Ciphertext: one Fernet token per 16 MiB of plaintext, one token per line; each token's plaintext starts with
its index and a last-chunk flag, so chunks cannot be dropped, reordered or cut off unnoticed, and a model
of several GB is never held in memory whole.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench import paths
from workbench.errors import UserError
from workbench.lifecycle import keys

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CHUNK = 1 << 24  # plaintext bytes per Fernet token
MAGIC = b"gAAAAA"  # how every Fernet token starts (version byte 0x80, then a timestamp's zero high bytes)
PLAIN = ("manifest.jsonl", "retention.json", "app-session.json")  # bookkeeping at the top of the subject folder
LAZY = "models"  # decrypted one model folder at a time (pull)
_HEAD = struct.Struct(">Q?")  # chunk index, last chunk
_PROCESS_DIR = re.compile(r"^[0-9]+-[0-9a-f]{8}$")  # <pid>-<token>: one process's working copies


@dataclass
class _Copy:
    subject: str
    store: Path  # the subject folder in the data root (ciphertext)
    work: Path  # its plaintext working copy
    users: int = 0  # open blocks of this process
    known: dict[str, tuple] = field(default_factory=dict)  # relative path -> (store signature, working-copy one)


_lock = threading.RLock()
_open: dict[str, _Copy] = {}
_proc: dict = {}  # this process's scratch folder: {"pid", "dir", "fd" (its lock, held while the process lives)}


def _forget() -> None:  # in a forked child: its own scratch folder and working copies
    global _lock
    _lock = threading.RLock()
    _open.clear()
    _proc.clear()
    paths._working.clear()


os.register_at_fork(after_in_child=_forget)


# --- ciphertext files -----------------------------------------------------------------------------

def is_sealed(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def encrypt_file(subject_id: str, src: Path, dst: Path) -> None:
    """Write ``src`` encrypted under the subject's key (created on first use) to ``dst``, atomically."""
    from workbench.lifecycle import manifest  # manifest.register calls seal_files: imported here

    f = keys._fernet(keys.ensure_key(subject_id))
    with open(src, "rb") as fin, manifest.atomic_writer(dst, prefix=".seal-") as out:
        chunk, i = fin.read(CHUNK), 0
        while True:
            nxt = fin.read(CHUNK)
            out.write(f.encrypt(_HEAD.pack(i, not nxt) + chunk) + b"\n")
            if not nxt:
                break
            chunk, i = nxt, i + 1


def decrypt_chunks(subject_id: str, path: Path) -> Iterator[bytes]:
    """The plaintext of a file :func:`encrypt_file` wrote, chunk by chunk; :class:`~.keys.KeyUnavailable`
    once the key is destroyed, UserError when the file was modified, cut short or is another subject's."""
    from cryptography.fernet import InvalidToken

    f = keys.fernet(subject_id)
    last, i = False, 0
    with open(path, "rb") as fh:
        for line in fh:
            try:
                plain = f.decrypt(line.rstrip(b"\n"))
            except InvalidToken:
                raise keys.tampered(subject_id) from None
            index, end = _HEAD.unpack_from(plain)
            if last or index != i:
                raise keys.tampered(subject_id)
            yield plain[_HEAD.size:]
            last, i = end, i + 1
    if not last:
        raise keys.tampered(subject_id)


def decrypt_bytes(subject_id: str, path: Path) -> bytes:
    return b"".join(decrypt_chunks(subject_id, path))


def _decrypt_to(subject_id: str, src: Path, dst: Path) -> None:
    dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".open-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in decrypt_chunks(subject_id, src):
                out.write(chunk)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def subject_of(path: Path) -> str | None:
    """The subject whose folder in the data root holds ``path`` (None: none does)."""
    path, root = Path(path).resolve(), paths.subjects_root()
    return path.relative_to(root).parts[0] if path.is_relative_to(root) and path != root else None


def read_stored(path: Path) -> bytes:
    """The plaintext of a file of the data root, decrypted with its subject's key when it is ciphertext in a
    subject folder."""
    data = Path(path).read_bytes()
    subject = subject_of(path)
    return decrypt_bytes(subject, Path(path)) if subject and data.startswith(MAGIC) else data


# --- the scratch folder ---------------------------------------------------------------------------

def _scratch() -> Path:
    base = os.environ.get("WORKBENCH_SCRATCH")
    if not base:
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()
    return Path(base).expanduser() / f"workbench-sealed-{os.getuid()}"


def scratch_root() -> Path:
    """Where working copies live: ``workbench-sealed-<uid>`` (mode 0700, this user's) in ``$WORKBENCH_SCRATCH``,
    else in ``/dev/shm`` when writable, else in the system temp folder."""
    root = _scratch()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():
        raise UserError(f"the scratch folder {root} for working copies of encrypted subjects is not yours: "
                        "set WORKBENCH_SCRATCH to a folder of your own")
    os.chmod(root, 0o700)
    return root.resolve()


def sweep(root: Path | None = None) -> None:
    """Remove the working copies of processes that died (their lock is free) from the scratch folder."""
    if root is None:
        if not _scratch().is_dir() or _scratch().stat().st_uid != os.getuid():
            return  # none yet, or not ours (opening a subject says so)
        root = scratch_root()
    for lock in root.glob("*.lock"):
        fd = os.open(lock, os.O_RDWR)
        try:
            if fcntl:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
            shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for folder in root.iterdir():  # a folder without its lock: its process died while making it
        if folder.is_dir() and _PROCESS_DIR.match(folder.name) and not folder.with_suffix(".lock").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _process_dir() -> Path:
    """This process's folder in the scratch folder (a new one in a forked child, or once $WORKBENCH_SCRATCH
    changed while nothing was open)."""
    mine = _proc.get("pid") == os.getpid()
    if not mine or (_proc["base"] != _scratch() and not _open):
        if mine:
            _release()
        root = scratch_root()
        sweep(root)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".new-")  # locked before its name shows: never swept alive
        if fcntl:
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(tmp, root / f"{name}.lock")
        (root / name).mkdir(mode=0o700)
        _proc.update(pid=os.getpid(), base=_scratch(), dir=root / name, fd=fd)
    return _proc["dir"]


def _release() -> None:
    shutil.rmtree(_proc["dir"], ignore_errors=True)
    _proc["dir"].with_suffix(".lock").unlink(missing_ok=True)
    os.close(_proc["fd"])
    _proc.clear()


@atexit.register
def _leave() -> None:
    """At exit: close what is still open (sealing it) and remove this process's scratch folder."""
    for subject_id in list(_open):
        _open[subject_id].users = 1
        close_subject(subject_id)
    if _proc.get("pid") == os.getpid():
        _release()


# --- open, close ----------------------------------------------------------------------------------

def _sig(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _files(root: Path, top: Path) -> Iterator[Path]:
    """Regular files under ``root`` but hidden ones (temporaries) and, at the top, the bookkeeping."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and not (here == top and name in PLAIN) and (here / name).is_file():
                yield here / name


def _pull(copy: _Copy, folder: Path, lazy: bool = False) -> None:
    """Decrypt what changed in the store under ``folder`` (a store path) into the working copy; files changed
    here stay as they are. Plaintext found in the store is encrypted in place first. ``lazy``: not ``models/``."""
    for f in _files(folder, copy.store):
        rel = f.relative_to(copy.store).as_posix()
        try:
            if not is_sealed(f):
                encrypt_file(copy.subject, f, f)  # written before encryption was turned on
            if lazy and rel.startswith(LAZY + "/"):
                continue
            target, sig, old = copy.work / rel, _sig(f), copy.known.get(rel)
            if target.exists() and (old is None or old[0] == sig or _sig(target) != old[1]):
                continue  # made here, unchanged in the store, or changed here: sealed at the close
            _decrypt_to(copy.subject, f, target)
        except FileNotFoundError:
            continue  # deleted meanwhile by another process (e.g. an old checkpoint)
        copy.known[rel] = (sig, _sig(target))


def _seal_one(copy: _Copy, rel: str) -> None:
    src, dst = copy.work / rel, copy.store / rel
    before = _sig(src)
    encrypt_file(copy.subject, src, dst)
    copy.known[rel] = (_sig(dst), before)


def _seal(copy: _Copy, folder: Path) -> None:
    """Encrypt what is new or changed in the working copy under ``folder`` into the store; delete from the store
    what was deleted here (unless another process rewrote it since)."""
    for f in _files(folder, copy.work):
        rel = f.relative_to(copy.work).as_posix()
        old = copy.known.get(rel)
        if old is None or old[1] != _sig(f):
            _seal_one(copy, rel)
    prefix = folder.relative_to(copy.work).as_posix()
    for rel, (sig, _) in list(copy.known.items()):
        if (prefix == "." or rel.startswith(prefix + "/")) and not (copy.work / rel).exists():
            dst = copy.store / rel
            if dst.exists() and _sig(dst) == sig:
                dst.unlink()
                for parent in dst.parents:  # empty folders it leaves, up to the subject folder
                    if parent == copy.store or any(parent.iterdir()):
                        break
                    parent.rmdir()
            del copy.known[rel]


def open_subject(subject_id: str) -> bool:
    """Open the subject for work in this process (nested and concurrent blocks share one working copy):
    :func:`workbench.paths.subject_dir` names the working copy until the matching :func:`close_subject`.
    False (and nothing happens) when the subject is not encrypted."""
    with _lock:
        copy = _open.get(subject_id)
        if copy is None:
            if not keys.encryption_enabled(subject_id):
                return False
            copy = _Copy(subject_id, paths.stored_subject_dir(subject_id), _process_dir() / subject_id)
            shutil.rmtree(copy.work, ignore_errors=True)
            copy.work.mkdir(mode=0o700)
            try:
                _pull(copy, copy.store, lazy=True)
            except BaseException:
                shutil.rmtree(copy.work, ignore_errors=True)
                raise
            _open[subject_id] = copy
            paths._working[subject_id] = copy.work
        copy.users += 1
        return True


def close_subject(subject_id: str) -> None:
    """End one block of :func:`open_subject`; the last one seals the working copy into the store and removes it."""
    with _lock:
        copy = _open.get(subject_id)
        if copy is None:
            return
        copy.users -= 1
        if copy.users:
            return
        del _open[subject_id]
        paths._working.pop(subject_id, None)
        try:
            _seal(copy, copy.work)
        finally:  # plaintext never outlives the block, even when sealing failed
            shutil.rmtree(copy.work, ignore_errors=True)


def _copy_of(path: Path) -> tuple[_Copy, Path] | None:
    path = Path(path)
    for copy in _open.values():
        if path.is_relative_to(copy.work):
            return copy, path
    return None


def pull(folder: Path) -> Path:
    """``folder`` (e.g. a model folder of an open subject's working copy) brought up to date with the store:
    what other processes sealed there since the open is decrypted into it. Returns ``folder``."""
    with _lock:
        found = _copy_of(folder)
        if found:
            copy, folder = found
            stored = copy.store / folder.relative_to(copy.work)
            if stored.is_dir():
                _pull(copy, stored)
    return folder


def flush(folder: Path) -> None:
    """Seal ``folder`` of an open subject's working copy now (e.g. a model, before its training lock is released)."""
    with _lock:
        found = _copy_of(folder)
        if found and found[1].is_dir():
            _seal(*found)


def seal_files(files: list[Path]) -> None:
    """Encrypt these files (just written and registered) of an open working copy into the store now; a model's
    file seals its whole model folder (a checkpoint together with the loss log up to it)."""
    with _lock:
        for f in files:
            found = _copy_of(f)
            if not found:
                continue
            copy, rel = found[0], found[1].relative_to(found[0].work).parts
            if any(part.startswith(".") for part in rel):
                continue
            if rel[0] == LAZY and len(rel) > 2:
                _seal(copy, copy.work / LAZY / rel[1])
            else:
                _seal_one(copy, "/".join(rel))


def at_rest(path: Path) -> Path:
    """The store path of a path in a working copy of this process (any other path as it is)."""
    path, folder = Path(path), _proc.get("dir")
    if folder is None or not path.is_relative_to(folder) or path == folder:
        return path
    rel = path.relative_to(folder)
    return paths.stored_subject_dir(rel.parts[0]).joinpath(*rel.parts[1:])


@contextmanager
def opened(path: Path) -> Iterator[Path]:
    """``path`` (e.g. a model folder in the store, as run.json names it) as this process can read it for the
    block: in an encrypted subject's folder, its decrypted working copy (the subject held by ``working_on``,
    the model folder pulled); any other path as it is."""
    from workbench.lifecycle.erasure import working_on

    path = Path(path).resolve()
    owner = subject_of(path)
    with working_on([owner] if owner else []):
        work = working(path)
        if work != path:  # in a working copy: decrypt the model folder it lies in
            rel = path.relative_to(paths.stored_subject_dir(owner)).parts
            pull(paths.subject_dir(owner).joinpath(*rel[:2]) if rel[:1] == (LAZY,) else work)
        yield work


def working(path: Path) -> Path:
    """The working-copy path of a store path of a subject open in this process (any other path as it is)."""
    path = Path(path)
    with _lock:
        for copy in _open.values():
            if path.is_relative_to(copy.store):
                return copy.work / path.relative_to(copy.store)
    return path
