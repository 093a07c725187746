"""Finished recipe artifacts: the ``DONE.json`` marker and loading a personalised pipeline.

A run folder (see :mod:`workbench.recipes.engine`) holds its result in ``artifact/``, renamed into
place only once complete, with ``DONE.json`` inside. ``DONE.json["files"]`` says what the folder
holds, by role:

- ``lora``: ``pytorch_lora_weights.safetensors`` → ``pipe.load_lora_weights(folder)``
- ``embeddings``: ``learned_embeds.safetensors`` → ``pipe.load_textual_inversion(folder)`` (SDXL: once
  per text encoder, :func:`~workbench.recipes.textual_inversion.load_embeds`)
- ``pipeline``: a whole diffusers pipeline folder → ``DiffusionPipeline.from_pretrained(folder)``
- nothing: the untouched base (the ``none`` control)

:func:`load_personalised` loads them exactly the way a diffusers user would, so what the metrics
measure is what a headshot service would ship.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from workbench.errors import UserError

log = logging.getLogger(__name__)

ARTIFACT = "artifact"  # the finished result inside a run folder
DONE = "DONE.json"  # written last; a folder without it is not a result
FORMAT_VERSION = 1


def artifact_dir(path: str | Path) -> Path:
    """A run folder or its ``artifact/`` folder → the artifact folder (which must hold DONE.json)."""
    path = Path(path)
    for cand in (path, path / ARTIFACT):
        if (cand / DONE).is_file():
            return cand
    raise UserError(
        f"{path} holds no finished recipe artifact (no {DONE}); train it first with "
        "`workbench train ... --out <folder>` or rerun the interrupted training to resume it"
    )


def read_done(path: str | Path) -> dict:
    """The ``DONE.json`` of a run folder or artifact folder."""
    folder = artifact_dir(path)
    done = json.loads((folder / DONE).read_text(encoding="utf-8"))
    if done.get("format") != FORMAT_VERSION:
        raise UserError(f"{folder / DONE} has format {done.get('format')!r}; expected {FORMAT_VERSION}")
    return done


def load_personalised(base: str | None, artifact: str | Path, device: str = "cpu"):
    """Load a personalised pipeline: the base backbone plus the artifact, as a diffusers user would.

    ``base`` is the backbone name/folder the artifact was trained on (``None``: the one recorded in
    DONE.json). The returned pipeline has its progress bar off and is on ``device``.
    """
    from workbench.backbones.registry import load_backbone, resolve_backbone
    from workbench.recipes import textual_inversion

    folder = artifact_dir(artifact)
    done = read_done(folder)
    files = done["files"]
    if "pipeline" in files:  # a full fine-tune ships the whole pipeline
        return load_backbone(str(folder / files["pipeline"]), device)
    base = base or done["base"]
    if resolve_backbone(base) != done["base_source"]:
        log.warning("loading %s on base %s, but it was trained on %s", folder, base, done["base_source"])
    pipe = load_backbone(base, device)
    if "embeddings" in files:
        textual_inversion.load_embeds(pipe, folder, files["embeddings"], done["identifier"])
    if "lora" in files:
        pipe.load_lora_weights(str(folder), weight_name=files["lora"])
    return pipe
