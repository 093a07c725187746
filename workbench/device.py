"""Device and precision choices, in one place."""

from __future__ import annotations

import os


def resolve_device(name: str = "auto") -> str:
    """``auto`` → cuda if available, else mps, else cpu; anything else is checked to exist."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from workbench.errors import UserError

        raise UserError("device 'cuda' was requested but no CUDA GPU is visible; use device: auto or cpu")
    return name


def autocast_dtype(device: str):
    """bf16 autocast where the hardware runs it natively (CUDA with bf16, CPUs with AMX/AVX512-BF16);
    None (full fp32) elsewhere. ``WORKBENCH_AUTOCAST=0`` turns it off."""
    import torch

    if os.environ.get("WORKBENCH_AUTOCAST", "1") == "0":
        return None
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu":
        flags = _cpu_flags()
        return torch.bfloat16 if ("amx_bf16" in flags or "avx512_bf16" in flags) else None
    return None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
