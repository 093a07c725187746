"""A subject's photo store: content-addressed files inside the subject folder, and ``subject.json``.

Layout under :func:`workbench.paths.subject_dir`::

    photos/<sha256>.png   the normalised upload (no metadata); sha256 of these PNG bytes
    crops/<sha256>.png    the aligned crop at the subject's resolution
    subject.json          resolution, accepted photos (sha256, split, crop) and the last rejections
    manifest.jsonl        every file above, registered when written (workbench.lifecycle.manifest)

User file names never become paths: files are named by content hash only. Every write is atomic and
registered; rewriting identical bytes is a no-op, so re-running an intake adds no manifest lines.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from workbench import paths
from workbench.errors import UserError
from workbench.lifecycle import keys, manifest

RECORD = "subject.json"
PHOTOS = "photos"  # normalised uploads, by hash
VERSION = 1


@dataclass
class Subject:
    """What training and evaluation read: the aligned crops of a subject, split in two."""

    id: str
    resolution: int
    train: list[Path] = field(default_factory=list)
    holdout: list[Path] = field(default_factory=list)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SubjectStore:
    """Writes one subject's files; remembers what the manifest already holds to avoid duplicates."""

    def __init__(self, subject_id: str):
        try:
            self.id = paths.check_subject_id(subject_id)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.root = paths.subject_dir(subject_id)
        if self.root == paths.stored_subject_dir(subject_id) and keys.encryption_enabled(subject_id):
            raise UserError(f"subject {subject_id!r} is encrypted at rest and this command cannot open it: use "
                            "`workbench run` or the app (they work on a decrypted working copy)")
        self._registered = {(a.path, a.sha256) for a in manifest.read(subject_id)}

    def _key(self, path: Path) -> str:
        return manifest._rel(path)  # as the manifest names it (the store's path, also from a working copy)

    def put(self, kind: str, rel: str, data: bytes) -> Path:
        """Write ``data`` at ``rel`` (inside the subject folder) atomically and register it once."""
        path = self.root / rel
        digest = sha256_bytes(data)
        key = (self._key(path), digest)
        if key in self._registered and path.is_file() and manifest.sha256_file(path) == digest:
            return path
        manifest.write_bytes(self.id, kind, path, data)
        self._registered.add(key)
        return path

    def photo_path(self, digest: str) -> Path:
        """Where the normalised upload with this sha256 lives (:meth:`put_photo`)."""
        return self.root / PHOTOS / f"{digest}.png"

    def put_photo(self, png: bytes) -> str:
        """Store a normalised upload under its own hash; returns the hash."""
        digest = sha256_bytes(png)
        self.put("upload", f"{PHOTOS}/{digest}.png", png)
        return digest

    def accepted_photos(self) -> list[Path]:
        """The normalised uploads of the accepted photos of the last intake, in its order (none before one)."""
        record = self.read_record() or {}
        return [self.photo_path(e["sha256"]) for e in record.get("accepted", [])]

    def put_crop(self, digest: str, png: bytes) -> str:
        rel = f"crops/{digest}.png"
        self.put("crop", rel, png)
        return rel

    def read_record(self) -> dict | None:
        path = self.root / RECORD
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is unreadable ({exc}); erase subject {self.id!r} and run intake again") \
                from None
        if not isinstance(record, dict) or record.get("version") != VERSION:
            raise UserError(f"{path} has an unknown format; erase subject {self.id!r} and run intake again")
        return record

    def write_record(self, record: dict) -> Path:
        record = {"version": VERSION, **record}
        data = (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        return self.put("record", RECORD, data)


def load_subject(subject_id: str) -> Subject:
    """The subject's train and holdout crops, as written by the last intake."""
    store = SubjectStore(subject_id)
    record = store.read_record()
    if record is None:
        raise UserError(f"subject {subject_id!r} has no photos yet: run "
                        f"`workbench intake PHOTO_OR_DIR ... --subject {subject_id}` first")
    subject = Subject(subject_id, int(record["resolution"]))
    for entry in record.get("accepted", []):
        crop = (store.root / entry["crop"]).resolve()
        if not crop.is_relative_to(store.root.resolve()) or not crop.is_file():
            raise UserError(f"subject {subject_id!r}: crop {entry['crop']} is missing; run intake again")
        (subject.holdout if entry["split"] == "holdout" else subject.train).append(crop)
    return subject
