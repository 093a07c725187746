"""Optional encryption at rest: one Fernet key per subject, destroyed on erasure (crypto-shredding).

The key lives in ``$WORKBENCH_HOME/keys/<subject>.key`` (mode 0600, folder 0700). Fernet
(``cryptography``) is AES-128-CBC + HMAC-SHA256 with a timestamp: tampered ciphertext fails to
decrypt rather than giving wrong bytes. Once the key file is gone, every copy of the ciphertext (on a
backup, a synced folder, a disk image) is unreadable, which deleting files alone cannot promise.

The subject's ``retention.json`` may say ``{"encrypt": true}`` (:func:`encryption_enabled`; spec
``retention.encrypt``, on for the app): then every file of its folder is ciphertext at rest and work
reads a plaintext working copy (:mod:`.sealed`). :func:`encrypt_file` encrypts one file for what leaves
the machine (e.g. an archive). See docs/LIFECYCLE.md for the threat model.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench import paths
from workbench.errors import UserError


class KeyUnavailable(UserError):
    """The subject's key does not exist (never created, or destroyed by erasure)."""


def key_path(subject_id: str) -> Path:
    return paths.home() / "keys" / f"{paths.check_subject_id(subject_id)}.key"


def _fernet(key: bytes):
    try:
        from cryptography.fernet import Fernet
    except ImportError:
        raise UserError("encryption needs the `cryptography` package: pip install cryptography") from None
    return Fernet(key)


def ensure_key(subject_id: str) -> bytes:
    """The subject's key, created (0600) on first use."""
    path = key_path(subject_id)
    if path.is_file():
        return path.read_bytes().strip()
    from cryptography.fernet import Fernet

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def encryption_enabled(subject_id: str) -> bool:
    from workbench.lifecycle.policy import load_policy

    return bool(load_policy(subject_id)["encrypt"])


def encrypt_bytes(subject_id: str, data: bytes) -> bytes:
    return _fernet(ensure_key(subject_id)).encrypt(data)


def fernet(subject_id: str):
    """The subject's ``Fernet``; :class:`KeyUnavailable` when it has no key (destroyed by erasure)."""
    path = key_path(subject_id)
    if not path.is_file():
        raise KeyUnavailable(f"subject {subject_id!r} has no encryption key (destroyed by erasure, or never "
                             "created): the data cannot be decrypted")
    return _fernet(path.read_bytes().strip())


def tampered(subject_id: str) -> UserError:
    return UserError(f"the ciphertext is not subject {subject_id!r}'s, or was modified")


def decrypt_bytes(subject_id: str, token: bytes) -> bytes:
    """Plaintext of ``token``; :class:`KeyUnavailable` once the key is destroyed, UserError if tampered."""
    from cryptography.fernet import InvalidToken

    f = fernet(subject_id)
    try:
        return f.decrypt(token)
    except InvalidToken:
        raise tampered(subject_id) from None


def encrypt_file(subject_id: str, src: Path, dst: Path | None = None, kind: str | None = None) -> Path:
    """Write ``src`` encrypted with the subject's key to ``dst`` (default ``src`` + ``.enc``), atomically;
    registered under ``kind`` when given."""
    from workbench.lifecycle import manifest

    src = Path(src)
    dst = Path(dst) if dst else src.with_name(src.name + ".enc")
    manifest.atomic_write_bytes(dst, encrypt_bytes(subject_id, src.read_bytes()))
    if kind:
        manifest.register(subject_id, kind, dst)
    return dst


def destroy_key(subject_id: str) -> bool:
    """Overwrite the key file with random bytes, then delete it. True if there was one.

    Overwriting does not reach copies a copy-on-write filesystem, an SSD's remapping or a backup kept;
    what matters is that no copy of the key was made (docs/LIFECYCLE.md)."""
    path = key_path(subject_id)
    if not path.is_file():
        return False
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.write(os.urandom(size))
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()
    return True
