"""The per-subject manifest: every artifact derived from a subject is registered when written.

One JSON line per artifact in ``<subject_dir>/manifest.jsonl``: kind, path (relative to the data root
when inside it), sha256, size, created. Writers go through :func:`write_bytes` / :func:`register`, so
the erasure code (lifecycle issue) can find every copy by path and by hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench import paths

KINDS = (
    "upload", "crop", "embedding", "latent_cache", "text_cache", "class_image", "weights",
    "optimizer_state", "checkpoint", "generation", "record", "report", "wandb", "bundle", "app_temp",
)


@dataclass(frozen=True)
class Artifact:
    kind: str
    path: str
    sha256: str
    size: int
    created: float


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def manifest_path(subject_id: str) -> Path:
    return paths.subject_dir(subject_id) / "manifest.jsonl"


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(paths.home()))
    except ValueError:
        return str(path)


def register(subject_id: str, kind: str, path: Path) -> Artifact:
    """Record an artifact that has just been written (files) or every file under it (folders)."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; expected one of {', '.join(KINDS)}")
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    mpath = manifest_path(subject_id)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    last = None
    with open(mpath, "a", encoding="utf-8") as fh:
        for f in files:
            last = Artifact(kind, _rel(f), sha256_file(f), f.stat().st_size, time.time())
            fh.write(json.dumps(asdict(last), sort_keys=True) + "\n")
    return last


def write_bytes(subject_id: str, kind: str, path: Path, data: bytes) -> Artifact:
    """Atomically write ``data`` to ``path`` and register it."""
    atomic_write_bytes(Path(path), data)
    return register(subject_id, kind, path)


def read(subject_id: str) -> list[Artifact]:
    mpath = manifest_path(subject_id)
    if not mpath.exists():
        return []
    return [Artifact(**json.loads(line)) for line in mpath.read_text().splitlines() if line.strip()]
