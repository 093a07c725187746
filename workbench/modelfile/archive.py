"""Open a model file safely: a folder, one file, or a ``.tar``/``.tar.gz``/``.zip`` treated as hostile.

Every member of an archive is checked *before* anything is read or written (:func:`check_tar_members`,
:func:`check_zip_members`); one bad member refuses the whole file with a :class:`UserError`:

- names: relative POSIX paths only — no absolute path, drive letter, ``..``, backslash or NUL;
- types: regular files and folders only — no symbolic or hard links, devices, FIFOs (in a zip, the
  Unix mode in ``external_attr`` says whether an entry is a link);
- no name twice; at most :attr:`Limits.max_members` entries and :attr:`Limits.max_bytes` unpacked;
  a zip entry compressed more than :attr:`Limits.max_ratio` times is a zip bomb; encrypted entries are refused.

:func:`extract` then writes the checked members under a destination folder, tars through Python's
``tarfile`` ``data`` filter (PEP 706: it refuses again anything outside the folder, links, devices, and
drops set-uid bits), zips member by member with exclusive creation. :func:`open_source` gives the
inspector read access to members *without* extracting them. Sources: the ``tarfile`` documentation,
"Extraction filters" (Python 3.11.4+); the ZIP APPNOTE 4.4.15 (external file attributes).

The same checks guard :func:`workbench.lifecycle.bundle.import_bundle` (the workbench's own bundle),
which adds its stricter naming and layout rules on top.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from workbench.errors import UserError

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Limits:
    """How much an archive may hold; beyond any of these it is refused, unread."""

    max_members: int = 4096
    max_bytes: int = 16 << 30  # unpacked total; an SDXL full fine-tune in fp32 is ~14 GB
    max_ratio: int = 200  # zip: unpacked / packed size of one entry (DEFLATE's own limit is ~1032)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Member:
    """One regular file inside a source (archive, folder or single file), named relative to its root."""

    name: str
    size: int


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def safe_name(raw: str, part_ok: Callable[[str], bool] | None = None) -> str | None:
    """``raw`` as a clean relative POSIX name (leading ``./`` dropped), or None if it is unsafe.

    ``part_ok``: a stricter test each path component must also pass (the workbench bundle's)."""
    name = raw[2:] if raw.startswith("./") else raw
    name = name.rstrip("/")
    parts = PurePosixPath(name).parts
    if (not name or "\\" in name or "\0" in name or name.startswith("/") or _DRIVE.match(name) or not parts
            or any(p in ("", ".", "..") for p in parts) or "//" in name):
        return None
    if part_ok is not None and not all(part_ok(p) for p in parts):
        return None
    return name


class _Tally:
    """Counts entries and bytes, refusing past the limits; refuses a name seen twice."""

    def __init__(self, what: str, outcome: str, limits: Limits):
        self.what, self.outcome, self.limits = what, outcome, limits
        self.names: set[str] = set()
        self.total = 0

    def add(self, raw: str, name: str, size: int) -> None:
        if len(self.names) >= self.limits.max_members:
            raise UserError(f"{self.what} has more than {self.limits.max_members} entries; {self.outcome}")
        if name in self.names:
            raise UserError(f"{self.what} holds {raw!r} twice; {self.outcome}")
        self.names.add(name)
        self.total += max(0, size)
        if self.total > self.limits.max_bytes:
            raise UserError(f"{self.what} unpacks to more than {_mib(self.limits.max_bytes)}; {self.outcome}")


def check_tar_members(tar: tarfile.TarFile, what: str = "the archive", outcome: str = "nothing was extracted",
                      limits: Limits = DEFAULT_LIMITS,
                      part_ok: Callable[[str], bool] | None = None) -> dict[str, tarfile.TarInfo]:
    """Every member of ``tar``, checked (module docstring), by clean name; a :class:`UserError` at the
    first bad one. Reads the headers only (for a compressed tar, that decompresses the stream once)."""
    tally = _Tally(what, outcome, limits)
    members: dict[str, tarfile.TarInfo] = {}
    try:
        for m in tar:
            name = safe_name(m.name, part_ok)
            if name is None:
                raise UserError(f"{what} holds an unsafe entry name {m.name!r} (absolute, '..' or odd characters); "
                                f"{outcome}")
            if not (m.isfile() or m.isdir()):
                raise UserError(f"{what} entry {m.name!r} is a link or special file; {outcome}")
            tally.add(m.name, name, m.size if m.isfile() else 0)
            members[name] = m
    except tarfile.TarError as exc:
        raise UserError(f"{what} is not a readable tar ({exc}); {outcome}") from None
    return members


def _zip_type(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if info.is_dir():
        return "dir"
    if kind in (0, stat.S_IFREG):  # no Unix mode recorded (made on Windows), or a regular file
        return "file"
    return "link" if kind == stat.S_IFLNK else "special"


def check_zip_members(zf: zipfile.ZipFile, what: str = "the archive", outcome: str = "nothing was extracted",
                      limits: Limits = DEFAULT_LIMITS) -> dict[str, zipfile.ZipInfo]:
    """:func:`check_tar_members` for a zip (its central directory only; nothing is decompressed)."""
    tally = _Tally(what, outcome, limits)
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = safe_name(info.filename)
        if name is None:
            raise UserError(f"{what} holds an unsafe entry name {info.filename!r} (absolute, '..' or odd "
                            f"characters); {outcome}")
        kind = _zip_type(info)
        if kind in ("link", "special"):
            raise UserError(f"{what} entry {info.filename!r} is a link or special file; {outcome}")
        if info.flag_bits & 0x1:
            raise UserError(f"{what} entry {info.filename!r} is encrypted; decrypt the archive first; {outcome}")
        ratio = info.file_size // max(1, info.compress_size)
        if kind == "file" and info.file_size > (1 << 20) and ratio > limits.max_ratio:
            raise UserError(f"{what} entry {info.filename!r} expands {ratio}x (a zip bomb?); {outcome}")
        tally.add(info.filename, name, info.file_size if kind == "file" else 0)
        members[name] = info
    return members


# ---------------------------------------------------------------------------------------------------
# Sources: read access to the members of a folder, a single file or an archive, without extracting.


@dataclass
class Source:
    """What the inspector reads: a label, the kind of container and its regular files in order."""

    label: str
    container: str  # "folder", "file", "tar", "tar.gz", "zip"
    members: list[Member]
    opener: Callable[[str], BinaryIO]  # member name -> binary stream (close it after use)
    notes: list[str]  # things the source did not follow (e.g. a folder's links)

    def open(self, name: str) -> BinaryIO:
        return self.opener(name)


def archive_kind(path: Path) -> str | None:
    """``tar``, ``tar.gz``(or another compressed tar), ``zip`` or None, by content (never by name)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz" if _is_tar(path) else None
    if head.startswith((b"BZh", b"\xfd7zXZ\x00")):
        return "tar.compressed" if _is_tar(path) else None
    return "tar" if len(head) == 512 and head[257:262] == b"ustar" else None


def _is_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


@contextmanager
def open_source(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Iterator[Source]:
    """A :class:`Source` over ``path`` (folder, archive or file), closed on exit. Archives are checked
    member by member first (module docstring): an unsafe one is refused before anything is read."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        yield _folder_source(path)
        return
    kind = archive_kind(path)
    what = f"{path.name}"
    if kind == "zip" and not _is_torch_zip(path):
        with zipfile.ZipFile(path) as zf:
            members = check_zip_members(zf, what, "nothing was read", limits)
            files = [Member(n, i.file_size) for n, i in members.items() if not i.is_dir()]
            yield Source(str(path), "zip", files, lambda n: zf.open(members[n]), [])
        return
    if kind in ("tar", "tar.gz", "tar.compressed"):
        with tarfile.open(path, "r:*") as tar:
            members = check_tar_members(tar, what, "nothing was read", limits)
            files = [Member(n, m.size) for n, m in members.items() if m.isfile()]
            yield Source(str(path), kind, files, lambda n: tar.extractfile(members[n]), [])
        return
    yield Source(str(path), "file", [Member(path.name, path.stat().st_size)], lambda n: open(path, "rb"), [])


def _is_torch_zip(path: Path) -> bool:
    """A torch ``.pt``/``.ckpt``/``.bin`` in torch's zip format: inspected as one (pickle) file, not opened up."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in zf.namelist()[:4096])
    except (zipfile.BadZipFile, OSError):
        return False


def _folder_source(root: Path) -> Source:
    members: list[Member] = []
    notes: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in sorted(dirnames):
            if (here / d).is_symlink():
                notes.append(f"{(here / d).relative_to(root).as_posix()}: a link to a folder, not followed")
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())
        for f in sorted(filenames):
            p = here / f
            rel = p.relative_to(root).as_posix()
            if p.is_symlink() and not p.resolve().is_relative_to(root.resolve()):
                notes.append(f"{rel}: a link to {os.readlink(p)} outside the folder, not followed")
                continue
            if not p.is_file():
                notes.append(f"{rel}: not a regular file, skipped")
                continue
            members.append(Member(rel, p.stat().st_size))
        if len(members) > DEFAULT_LIMITS.max_members:
            raise UserError(f"{root} holds more than {DEFAULT_LIMITS.max_members} files; point inspect at the model "
                            "folder itself")
    return Source(str(root), "folder", members, lambda n: open(root / n, "rb"), notes)


# ---------------------------------------------------------------------------------------------------
# Extraction (for loading a vendor's file with diffusers' own loaders).


def extract(path: str | Path, dest: str | Path, limits: Limits = DEFAULT_LIMITS) -> list[Path]:
    """Extract the archive ``path`` under the existing, empty folder ``dest``; returns the files written.

    Every member is checked before the first byte is written (module docstring)."""
    path, dest = Path(path), Path(dest).resolve()
    if not dest.is_dir() or any(dest.iterdir()):
        raise UserError(f"{dest}: extract into an existing, empty folder")
    kind = archive_kind(path)
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            members = check_zip_members(zf, path.name, "nothing was extracted", limits)
            return [_write_zip_member(zf, info, dest / name) for name, info in members.items() if not info.is_dir()]
    if kind in ("tar", "tar.gz", "tar.compressed"):
        if not hasattr(tarfile, "data_filter"):
            raise UserError("this Python has no tarfile extraction filters (PEP 706): use Python >= 3.11.4")
        with tarfile.open(path, "r:*") as tar:
            members = check_tar_members(tar, path.name, "nothing was extracted", limits)
            tar.extractall(dest, members=list(members.values()), filter="data")
        return [dest / n for n, m in members.items() if m.isfile()]
    raise UserError(f"{path} is not a .tar, .tar.gz or .zip archive (judged by its content)")


def _write_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, open(target, "xb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            written += len(chunk)
            if written > info.file_size:
                raise UserError(f"zip entry {info.filename!r} is longer than its header says; extraction stopped")
            out.write(chunk)
    return target
