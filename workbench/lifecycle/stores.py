"""The stores: every folder where the workbench (or a tool it drives) writes a subject's data.

- ``data``: the data root, ``$WORKBENCH_HOME`` (subjects, models, runs, caches, receipts, audit log);
- ``wandb``: Weights & Biases offline run files, ``$WANDB_DIR`` (default ``$WORKBENCH_HOME/wandb``);
- ``app_temp``: the Gradio app's upload/temp copies, ``$GRADIO_TEMP_DIR`` (default
  ``$WORKBENCH_HOME/gradio-tmp``).

Retention, erasure and verification cover exactly these folders (plus paths registered in manifests).
Code that writes elsewhere must register what it wrote (:func:`workbench.lifecycle.manifest.register`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from workbench import paths


def stores() -> dict[str, Path]:
    """Store name → folder (resolved; a folder that does not exist yet is still listed)."""
    home = paths.home()
    wandb = os.environ.get("WANDB_DIR") or home / "wandb"
    gradio = os.environ.get("GRADIO_TEMP_DIR") or home / "gradio-tmp"
    return {"data": home, "wandb": Path(wandb).expanduser().resolve(),
            "app_temp": Path(gradio).expanduser().resolve()}


def store_of(path: Path) -> str | None:
    """The most specific store holding ``path`` (``None``: outside every store)."""
    path = Path(path).resolve()
    best = None
    for name, root in stores().items():
        if path.is_relative_to(root) and (best is None or root.is_relative_to(stores()[best])):
            best = name
    return best


def is_protected(folder: Path) -> bool:
    """True for folders a deletion must never remove whole: a store root or an ancestor of one, the
    user's home folder, the filesystem root."""
    folder = Path(folder).resolve()
    if folder == Path(folder.anchor) or folder == Path.home().resolve():
        return True
    return any(root.is_relative_to(folder) for root in stores().values())


# The lifecycle's own records in the data root (not subject artifacts, never registered): the audit log
# and its head, erasure receipts and journals, encryption keys; and in each subject folder its
# manifest and retention policy.
BOOKKEEPING_ROOT = ("audit.jsonl", "audit.head.json", "receipts", paths.ERASURE_JOURNAL, "keys")
BOOKKEEPING_SUBJECT = ("manifest.jsonl", "retention.json")


def is_bookkeeping(path: Path) -> bool:
    """True for the lifecycle's own record files (see :data:`BOOKKEEPING_ROOT`), which no manifest lists."""
    path = Path(path).resolve()
    home = paths.home()
    if not path.is_relative_to(home):
        return False
    parts = path.relative_to(home).parts
    if parts and parts[0] in BOOKKEEPING_ROOT:
        return True
    return len(parts) == 3 and parts[0] == "subjects" and parts[2] in BOOKKEEPING_SUBJECT


def walk_files() -> Iterator[tuple[str, Path]]:
    """Every regular file in every store, once each (under its most specific store), symlinks not followed."""
    roots = {}
    for name, root in stores().items():
        roots.setdefault(root, name)  # two stores on one folder: scanned once
    for root, name in roots.items():
        nested = {r for r in roots if r != root and r.is_relative_to(root)}
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if here / d not in nested]
            for fname in filenames:
                path = here / fname
                if path.is_file() and not path.is_symlink():
                    yield name, path


def prune_empty(folder: Path) -> None:
    """Remove ``folder`` and its empty parents, up to (not including) the store root that holds it."""
    folder = Path(folder).resolve()
    name = store_of(folder)
    if name is None:
        return
    root = stores()[name]
    while folder != root and folder.is_relative_to(root) and not is_protected(folder):
        if folder.exists():
            try:
                folder.rmdir()
            except OSError:
                return  # not empty
        folder = folder.parent
