"""Content keys: one rule for naming what was computed from what.

Every cache in the workbench (trained models, protected photos, class images, generations, metric
rows) is found again by a key over the *content* it was computed from, never over names or paths
alone: :func:`content_key` hashes a JSON payload, :func:`weights_fingerprint` the model files of a
base model folder (so a backbone rebuilt in place with other weights gets new keys, and nothing
trained on the old weights is reused), :func:`param_hash` the tensors of a personalised artifact.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from workbench.lifecycle.manifest import sha256_file

KEY_LENGTH = 16  # hex digits of a key used as a folder name


def content_key(payload: Any, length: int = KEY_LENGTH) -> str:
    """sha256 of ``payload`` as canonical JSON (sorted keys), cut to ``length`` hex digits."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


_FINGERPRINTS: dict[tuple, str] = {}


def weights_fingerprint(source: str) -> str:
    """sha256 over a local pipeline folder's model files (content, not names); a hub id → itself.

    Cached per (path, size, mtime) of every file, so it is computed once per process and folder state."""
    folder = Path(source)
    if not folder.is_dir():
        return source
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and p.relative_to(folder).parts[0] not in ("safety_checker", "feature_extractor"))
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        for p in files:
            h.update(f"{p.relative_to(folder).as_posix()}\0{sha256_file(p)}\n".encode())
        _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key]


def base_key(base: str) -> str:
    """The content of a backbone (name, hub id or folder): its weights' fingerprint."""
    from workbench.backbones.registry import resolve_backbone

    return weights_fingerprint(resolve_backbone(base))


def param_hash(folder: Path) -> str:
    """sha256 over every tensor in the folder's safetensors files (path, name, dtype, shape, bytes).

    Hashes parameters, not file bytes: diffusers' LoRA files carry metadata whose key order varies."""
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(path, framework="pt") as fh:
            for name in sorted(fh.keys()):
                t = fh.get_tensor(name).contiguous()
                h.update(f"{path.relative_to(folder).as_posix()}\0{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
