"""diffusers/peft LoRA keys -> kohya/A1111 names (the format most vendors and model hubs ship).

kohya-ss/sd-scripts (``networks/lora.py``) names a LoRA module after the diffusers module path with dots
turned into underscores, behind a prefix per model: ``lora_unet_`` (UNet), ``lora_te_`` (the text encoder;
``lora_te1_``/``lora_te2_`` for SDXL's two). Each module has ``.lora_down.weight`` (peft's ``lora_A``),
``.lora_up.weight`` (``lora_B``) and a scalar ``.alpha``: the update is ``(alpha / rank) · up @ down``, as
peft's ``lora_alpha / r``. diffusers' ``load_lora_weights`` converts these names back
(``diffusers.loaders.lora_conversion_utils._convert_non_diffusers_lora_to_diffusers``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from workbench.errors import UserError

#: diffusers component prefix -> kohya prefix (SD 1.x/2.x; SDXL names its first encoder lora_te1_).
PREFIXES = {"unet.": "lora_unet_", "text_encoder.": "lora_te_", "text_encoder_2.": "lora_te2_"}
SDXL_PREFIXES = PREFIXES | {"text_encoder.": "lora_te1_"}
_PART = re.compile(r"^(?P<module>.+)\.(?P<which>lora_A|lora_B|lora\.down|lora\.up)\.weight$")
_UP_DOWN = {"lora_A": "lora_down", "lora.down": "lora_down", "lora_B": "lora_up", "lora.up": "lora_up"}


def _alphas(metadata: Mapping[str, str]) -> dict[str, float]:
    """``lora_alpha`` per component from diffusers' ``lora_adapter_metadata`` (``{"unet.lora_alpha": ..}``)."""
    raw = metadata.get("lora_adapter_metadata")
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    out = {}
    for key, value in meta.items():
        prefix, _, field = key.rpartition(".")
        if field == "lora_alpha" and isinstance(value, (int, float)):
            out[prefix + "."] = float(value)
    return out


def to_kohya(state: Mapping, metadata: Mapping[str, str] | None = None, sdxl: bool = False) -> dict:
    """A diffusers LoRA state dict (``unet.<module>.lora_A.weight`` ...) with kohya names and ``.alpha``
    tensors; alpha from the file's adapter metadata, else the rank (scale 1, peft's default)."""
    import torch

    prefixes = SDXL_PREFIXES if sdxl else PREFIXES
    alphas = _alphas(metadata or {})
    out: dict = {}
    for key, tensor in state.items():
        prefix = next((p for p in sorted(prefixes, key=len, reverse=True) if key.startswith(p)), None)
        match = _PART.match(key[len(prefix):]) if prefix else None
        if match is None:
            raise UserError(f"LoRA key {key!r} is not a diffusers LoRA key (unet./text_encoder. + lora_A/lora_B)")
        name = prefixes[prefix] + match["module"].replace(".", "_")
        out[f"{name}.{_UP_DOWN[match['which']]}.weight"] = tensor.contiguous()
        if match["which"] in ("lora_A", "lora.down"):
            rank = tensor.shape[0]
            out[f"{name}.alpha"] = torch.tensor(alphas.get(prefix, float(rank)), dtype=torch.float32)
    return out


def convert_file(src: str | Path, dst: str | Path, extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Write the diffusers LoRA file ``src`` in kohya format at ``dst`` (``extra_metadata`` added)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as fh:
        metadata = fh.metadata() or {}
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    sdxl = any(k.startswith("text_encoder_2.") for k in state)
    save_file(to_kohya(state, metadata, sdxl), str(dst), metadata=dict(extra_metadata or {}))
    return Path(dst)
