"""Backbones by name: the shipped ``tiny-face`` or any diffusers model id / local folder.

Every backbone loads through :func:`load_backbone` into a real ``StableDiffusionPipeline`` (or the
``StableDiffusionXLPipeline`` its ``model_index.json`` names, e.g. SDXL ids or a folder written by
``workbench backbones build-random sdxl``), so the tiny CPU model, SD 1.5 and SDXL share one code path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from workbench.errors import OfflineError, UserError

ASSETS = Path(__file__).resolve().parent / "assets"
BACKBONES: dict[str, Callable[[], Path]] = {}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # a diffusers model id on the hub: 'org/name'
HUB_RESOLUTION = 512  # hub ids of the SD 1.x family


def register_backbone(name: str):
    def wrap(fn: Callable[[], Path]) -> Callable[[], Path]:
        BACKBONES[name] = fn
        return fn

    return wrap


@register_backbone("tiny-face")
def _tiny_face() -> Path:
    folder = ASSETS / "tiny-face"
    if not (folder / "model_index.json").exists():
        raise UserError(
            f"the shipped tiny-face checkpoint is missing from {folder}; reinstall the package, or "
            "rebuild it with `workbench pretrain-base --out <folder>` and pass that folder as backbone"
        )
    return folder


def resolve_backbone(name: str) -> str:
    """A registered name → its folder; a local folder → itself; anything else → a hub model id."""
    if name in BACKBONES:
        return str(BACKBONES[name]())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise UserError(f"backbone folder {path} has no model_index.json: is it a diffusers pipeline?")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise UserError(f"backbone folder {name} does not exist")
    return name


def backbone_resolution(backbone: str, override: int | None = None) -> int:
    """Training/sampling size in px: ``override`` when given, else the backbone's own (the UNet's
    ``sample_size`` times the VAE's downsampling, 2^(blocks - 1)); 512 for a hub id."""
    if override:
        return override
    source = Path(resolve_backbone(backbone))
    unet_cfg, vae_cfg = source / "unet" / "config.json", source / "vae" / "config.json"
    if unet_cfg.exists() and vae_cfg.exists():
        unet = json.loads(unet_cfg.read_text())
        vae = json.loads(vae_cfg.read_text())
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    return HUB_RESOLUTION


def pipeline_class(model_index: dict):
    import diffusers

    cls = model_index.get("_class_name", "StableDiffusionPipeline")
    return getattr(diffusers, cls)


def load_backbone(name: str, device: str = "cpu", dtype=None):
    """Load a backbone as a diffusers pipeline with the safety checker off (research on faces)."""
    import torch
    from diffusers import DiffusionPipeline

    source = resolve_backbone(name)
    dtype = dtype or torch.float32
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    index = Path(source) / "model_index.json"  # SDXL pipelines have no safety checker to turn off
    has_checker = not index.exists() or "safety_checker" in json.loads(index.read_text())
    kwargs = dict(dtype=dtype) | (dict(safety_checker=None, requires_safety_checker=False) if has_checker else {})
    try:
        pipe = DiffusionPipeline.from_pretrained(source, local_files_only=offline, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(source).exists():
            raise UserError(f"could not load backbone folder {source}: {exc}") from exc
        raise OfflineError(
            f"could not load diffusers model {source!r} from the Hugging Face hub or its local cache "
            f"({type(exc).__name__}). On an offline machine, download it elsewhere with "
            f"`huggingface-cli download {source}` and pass the local folder as backbone, or use "
            "backbone: tiny-face."
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
