"""Reading a W&B offline run back, for the tests: what a ``wandb sync`` would upload.

:func:`read_offline_run` decodes an offline run's ``run-*.wandb`` log (LevelDB-style records of
``wandb_internal_pb2.Record``); :func:`offline_paths_outside_staging` finds local paths recorded anywhere
but in the artifact-staging entries that W&B itself needs (see :mod:`workbench.tracking`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.tracking import wandb_dirs

_BLOCK = 32768  # LevelDB log block size used by W&B's transaction log
_HEADER = 7  # ":W&B" + 2-byte magic + 1-byte version


def _chunks(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (no ':W&B' header)")
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # FULL
            yield chunk
        elif kind == 2:  # FIRST
            pending = chunk
        elif kind == 3:  # MIDDLE
            pending += chunk
        elif kind == 4:  # LAST
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
        else:
            raise ValueError(f"corrupt W&B log: record type {kind} at byte {pos}")


def read_offline_run(run_folder: str | Path) -> list[dict]:
    """Every record of an offline run's ``run-*.wandb`` log, as dicts (protobuf → JSON names)."""
    from google.protobuf.json_format import MessageToDict
    from wandb.proto import wandb_internal_pb2 as pb

    logs = sorted(Path(run_folder).glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no run-*.wandb log in {run_folder}")
    out = []
    for chunk in _chunks(logs[0].read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(chunk)
        out.append(MessageToDict(rec))
    return out


def strings_in(obj: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, string) for every string (and decoded JSON string) at any depth of ``obj``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings_in(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings_in(v, key)
    elif isinstance(obj, str):
        yield key, obj


def offline_paths_outside_staging(records: list[dict], roots: list[Path]) -> list[str]:
    """Strings in ``records`` that contain one of ``roots``, other than artifact staging ``localPath`` entries."""
    staging = str(wandb_dirs()["WANDB_DATA_DIR"] / "artifacts" / "staging")
    bad = []
    for key, text in strings_in(records):
        if key == "localPath" and text.startswith(staging):
            continue
        if any(str(r) in text for r in roots):
            bad.append(text)
    return bad
