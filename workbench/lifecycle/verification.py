"""Finding a subject's data: its ledger of hashes, its folders, and every copy in every store.

:func:`verify_erasure` is the check behind "the scan is a command, not a promise" (PRIVACY.md). It
reads every file in every store (:func:`workbench.lifecycle.stores.stores`) and reports:

- any file whose sha256 is in the subject's ledger: every hash its manifest ever listed (purged files'
  tombstones included), or, once erased, the hashes its receipt lists;
- any file named after one of those hashes (e.g. an embedding cache ``<photo sha256>.npy``);
- anything left in the subject's folders: the subject folder, model folders (``job.json`` /
  ``DONE.json`` naming the subject, or ``imported.json`` of a bundle exported from it), run folders
  (``run.json`` / ``spec.json`` naming it), folders registered whole (W&B runs), the subject's
  encryption key and a pending erasure journal.

Hashing: a file is hashed (streamed, 1 MiB at a time) only when its size equals the size of some
ledger entry; equal hashes imply equal sizes, so this skips no match. No file is skipped for size.

Not personal, hence not in the ledger: the empty file, files of the base model the subject's models
were trained on, and hashes another (not erased) subject's manifest also lists (e.g. DreamBooth class
images, which the base model makes identically for everyone) — those stay until that subject goes too.

What this scan cannot see (also in docs/LIFECYCLE.md): backups and snapshots of these folders; W&B
servers once a run was synced (``wandb sync`` or online mode); models or bundles pushed to a hub;
copies a user made outside the stores (downloads, e-mail, other disks); re-encoded or resized copies
(different bytes, different hash); OS temp files, swap and the page cache; files in a store behind a
symlink (links are not followed); and, after erasure, registered paths outside every store (the
receipt keeps hashes, not paths).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from workbench import paths
from workbench.lifecycle import audit_log, manifest, stores

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# files that say which subject a folder is for (imported.json: a bundle imported from that subject)
MARKERS = ("run.json", "spec.json", "job.json", "DONE.json", "imported.json")
MAX_MARKER_BYTES = 1 << 20
_HASH_IN_NAME = re.compile(r"[0-9a-f]{64}")

CANNOT_SEE = (
    "backups, snapshots and synced copies of the stores (use encryption at rest and destroy the key)",
    "W&B servers after `wandb sync` or an online run (delete the run in the W&B UI or API)",
    "models or bundles pushed to a model hub (delete the repository there)",
    "copies made outside the stores: downloads, e-mail, other disks, other machines",
    "re-encoded, resized or edited copies of a photo (different bytes, different hash)",
    "OS temp files, swap, the page cache and freed disk blocks",
    "files reached only through a symlink inside a store (links are not followed)",
    "after erasure: registered paths outside every store (the receipt keeps hashes, not paths)",
)


def receipts_dir() -> Path:
    return paths.home() / "receipts"


def receipts_for(subject_id: str) -> list[dict]:
    out = []
    folder = receipts_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            receipt = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if receipt.get("subject") == subject_id:
            out.append(receipt)
    return out


def _read_json(path: Path) -> dict | None:
    """A small JSON record, decrypted when it is ciphertext in an encrypted subject's folder."""
    from workbench.errors import UserError
    from workbench.lifecycle.sealed import read_stored

    try:
        if path.stat().st_size > 2 * MAX_MARKER_BYTES:  # ciphertext is about 4/3 of the plaintext
            return None
        data = json.loads(read_stored(path))
    except (OSError, ValueError, UserError):
        return None
    return data if isinstance(data, dict) else None


def marker_subject(path: Path) -> str | None:
    """The subject id a marker file (see :data:`MARKERS`) names, if any."""
    data = _read_json(path)
    if data is None:
        return None
    if path.name == "spec.json":
        subject = data.get("subject")
        return subject.get("id") if isinstance(subject, dict) else None
    if path.name == "imported.json":
        return data.get("source_subject")
    return data.get("subject_id")


def other_subject_hashes(subject_id: str) -> set[str]:
    """Every hash the manifests of the other subjects list."""
    root = paths.subjects_root()
    out: set[str] = set()
    for mpath in root.glob("*/manifest.jsonl") if root.is_dir() else []:
        if mpath.parent.name != subject_id:
            out |= {line["sha256"] for line in manifest.read_lines(mpath.parent.name) if "sha256" in line}
    return out


def _base_hashes(subject_id: str, sizes: set[int]) -> set[str]:
    """Hashes of files of the base models the subject's models were trained on (size-matched only)."""
    out: set[str] = set()
    sources = set()
    for art in manifest.read(subject_id):
        path = manifest.resolve(art.path)
        if path.name == "DONE.json" and path.is_file():
            source = (_read_json(path) or {}).get("base_source")
            if isinstance(source, str) and Path(source).is_dir():
                sources.add(Path(source).resolve())
    for source in sources:
        for f in source.rglob("*"):
            if f.is_file() and f.stat().st_size in sizes:
                out.add(manifest.sha256_file(f))
    return out


def ledger(subject_id: str) -> dict[str, dict]:
    """sha256 → {size, kind} of the subject's personal artifacts (see the module docstring)."""
    entries: dict[str, dict] = {}
    for line in manifest.read_lines(subject_id):
        if "sha256" in line:
            entries.setdefault(line["sha256"], {"size": int(line["size"]), "kind": line["kind"]})
    journal = paths.erasure_journal(subject_id)
    sources = [json.loads(journal.read_text(encoding="utf-8"))] if journal.is_file() else []
    for record in sources + receipts_for(subject_id):
        for item in record.get("artifacts", []):
            entries.setdefault(item["sha256"], {"size": int(item["size"]), "kind": item["kind"]})
    drop = {EMPTY_SHA256} | other_subject_hashes(subject_id)
    drop |= _base_hashes(subject_id, {e["size"] for e in entries.values()})
    return {h: e for h, e in entries.items() if h not in drop}


def _topmost(folders: set[Path]) -> list[Path]:
    return sorted(f for f in folders if not any(f != g and f.is_relative_to(g) for g in folders))


def owned_folders(subject_id: str, marker_files: list[Path] | None = None) -> list[Path]:
    """The subject's folders: subject folder, model/run folders naming it, folders registered whole."""
    found = {paths.stored_subject_dir(subject_id)}
    if marker_files is None:
        marker_files = [p for _, p in stores.walk_files() if p.name in MARKERS]
    ancestors = set()
    for art in manifest.read(subject_id):  # registered files outside the stores: look up their folders
        path = manifest.resolve(art.path)
        if stores.store_of(path) is None:
            ancestors |= {p for p in list(path.parents)[:6] if not stores.is_protected(p)}
    marker_files = list(marker_files) + [d / m for d in ancestors for m in MARKERS if (d / m).is_file()]
    for marker in marker_files:
        if marker_subject(marker) == subject_id:
            found.add(marker.parent.resolve())
    for line in manifest.folders(subject_id):
        found.add(manifest.resolve(line["path"]).resolve())
    return [f for f in _topmost(found) if not stores.is_protected(f)]


def find_copies(personal: dict[str, dict], skip: list[Path] = ()) -> list[tuple[str, Path, str]]:
    """Files in the stores (outside ``skip`` folders) whose content or name matches a personal hash:
    ``(store, path, reason)``."""
    sizes = {e["size"] for e in personal.values()}
    out = []
    for store, path in stores.walk_files():
        if any(path.is_relative_to(s) for s in skip):
            continue
        named = [h for h in _HASH_IN_NAME.findall(path.name) if h in personal]
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size in sizes:
            digest = manifest.sha256_file(path)
            if digest in personal:
                out.append((store, path, f"content matches a {personal[digest]['kind']} of the subject"))
                continue
        if named:
            out.append((store, path, f"named after a {personal[named[0]]['kind']} of the subject"))
    return out


def _where(path: Path) -> dict:
    store = stores.store_of(path)
    if store is None:
        return {"store": None, "path": str(path)}
    return {"store": store, "path": str(path.relative_to(stores.stores()[store]))}


def verify_erasure(subject_id: str, log: bool = True, _erasing: bool = False) -> dict:
    """Scan every store for what is left of ``subject_id``: ``{"ok", "residual": [...], ...}``.

    ``ok`` is True when nothing is found. See the module docstring for what the scan covers and what it
    cannot see (listed in the result under ``cannot_see``).
    """
    paths.check_subject_id(subject_id)
    personal = ledger(subject_id)
    markers, files = [], 0
    for _, path in stores.walk_files():
        files += 1
        if path.name in MARKERS:
            markers.append(path)
    owned = owned_folders(subject_id, markers)
    residual = []
    for folder in owned:
        if not folder.exists():
            continue
        left = [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
        if stores.store_of(folder) is not None:
            residual.append(_where(folder) | {"reason": f"the subject's folder still exists ({len(left)} files)"})
            continue
        for p in left:  # a user's folder outside the stores: only what is the subject's counts
            if p.name in MARKERS and marker_subject(p) == subject_id:
                residual.append(_where(p) | {"reason": "a record naming the subject"})
            elif p.is_file() and p.stat().st_size in {e["size"] for e in personal.values()} \
                    and manifest.sha256_file(p) in personal:
                residual.append(_where(p) | {"reason": "content matches an artifact of the subject"})
    residual += [_where(p) | {"reason": why} for _, p, why in find_copies(personal, skip=owned)]
    from workbench.lifecycle.keys import key_path

    if key_path(subject_id).exists():
        residual.append(_where(key_path(subject_id)) | {"reason": "the subject's encryption key still exists"})
    if paths.erasure_journal(subject_id).exists() and not _erasing:
        residual.append(_where(paths.erasure_journal(subject_id)) | {"reason": "an erasure is pending (interrupted)"})
    known = bool(personal) or paths.stored_subject_dir(subject_id).exists() or bool(receipts_for(subject_id))
    result = {"ok": not residual, "subject": subject_id, "known": known, "residual": residual,
              "ledger_hashes": len(personal), "files_scanned": files,
              "stores": {k: str(v) for k, v in stores.stores().items()}, "cannot_see": list(CANNOT_SEE)}
    if log:
        audit_log.append("verify", subject_id, count=len(residual), ok=int(result["ok"]))
    return result

