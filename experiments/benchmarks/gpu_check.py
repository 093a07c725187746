"""The GPU check: every speed figure the README needs, in one call that fits 8 minutes on one GPU.

Run through ``experiments/benchmarks/gpu_check.sh`` (which picks the interpreter). Nothing is downloaded:
the model is the real SD 1.5 architecture with seeded random weights (``workbench backbones build-random
sd15``), at 512 px. Sections, cheap ones first, each written to the JSON as soon as it is done:

1. ``sampling``: DDIM-25 + classifier-free guidance (7.5) images/s at batch 4 (the workbench's sampler,
   bf16 autocast on CUDA), one warm-up batch excluded; peak GPU memory.
2. ``mia``: membership-inference queries/s (UNet calls on latents) of the loss and PIA attacks over 16
   photos (``workbench.metrics.membership``), calibration excluded.
3. ``train_step``: ``train_step.py`` — reference (diffusers-example loop, fp32, VAE and text encoder every
   step) vs the engine, LoRA and full UNet, batch 4 and the largest batch that fits, engine with and
   without ``torch.compile``; configurations that would overrun the time budget are recorded as skipped.
4. ``sdxl_lora_step``: the engine's SDXL LoRA step on the real SDXL architecture (random weights) at 1024 px,
   batch 1: median step seconds and img/s, peak memory.

``--tiny`` (the shrunken architecture, a few steps, no compile) is what the CPU test runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import train_step  # noqa: E402

PROMPT = "a photo of sks person"
REFERENCE_H100 = {"lora_batch4_img_s": 28.6, "lora_cached_batch32_compiled_img_s": 151.0,
                  "full_batch4_img_s": 31.0, "ddim25_cfg_batch4_img_s": 4.6,
                  "source": "../shared/docs/RUNBOOK.md (H100, SD 1.5 architecture, random weights, 512 px, bf16)"}
ENGINE_TARGET = "engine >= 4x the reference's img/s (issue #16)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON written (default gpu_check.json)")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--tiny", action="store_true", help="shrunken architecture, few steps, no compile (CPU test)")
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 450 s; tiny 50 s)")
    return p.parse_args(argv)


def _peak(device: str) -> dict:
    import torch

    out = {"process_max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if device == "cuda":
        out["gpu_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["gpu_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return out


def _reset(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def sampling(folder: str, device: str, tiny: bool) -> dict:
    """DDIM-25 + CFG images/s at batch 4, warm-up batch excluded."""
    import torch
    from diffusers import DDIMScheduler

    from workbench.backbones.registry import load_backbone
    from workbench.generate import sample_images

    _reset(device)
    pipe = load_backbone(folder, device, dtype=torch.float32)  # as the workbench samples: fp32 weights, autocast
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    batch, steps, batches = 4, 25, (1 if tiny else 3)
    texts = [PROMPT] * batch

    def run(k: int) -> float:
        train_step.sync(device)
        t0 = time.perf_counter()
        sample_images(pipe, texts, list(range(k * batch, (k + 1) * batch)), steps=steps, guidance_scale=7.5,
                      batch_size=batch, progress=False)
        train_step.sync(device)
        return time.perf_counter() - t0

    run(0)  # warm-up: kernels, allocator
    times = [run(k + 1) for k in range(batches)]
    seconds = sum(times)
    out = {"scheduler": "DDIM", "steps": steps, "guidance_scale": 7.5, "batch": batch,
           "resolution": pipe.unet.config.sample_size * pipe.vae_scale_factor,
           "dtype": str(pipe.unet.dtype).removeprefix("torch."), "timed_batches": batches,
           "img_s": round(batch * batches / seconds, 3), "s_per_batch": round(seconds / batches, 3)} | _peak(device)
    return out


def mia(folder: str, device: str, images: list[Path], tiny: bool) -> dict:
    """Queries/s of the loss and PIA attacks (UNet calls per image × images / scoring seconds)."""
    import torch

    from workbench.backbones.registry import load_backbone
    from workbench.metrics.membership import membership_inference

    _reset(device)
    pipe = load_backbone(folder, device, dtype=torch.float32)
    half = len(images) // 2
    t0 = time.perf_counter()
    report = membership_inference(pipe, images[:half], images[half:], PROMPT, attacks=["loss", "pia"], seed=0,
                                  batch_size=8 if tiny else 16, n_resamples=100, n_permutations=100)
    wall = time.perf_counter() - t0
    out = {"images": len(images), "wall_s": round(wall, 2), "attacks": {}}
    for name, r in report.items():
        secs = r["seconds"] or wall
        out["attacks"][name] = {"queries_per_image": r["queries_per_image"], "total_queries": r["total_queries"],
                                "seconds": secs, "queries_s": round(r["total_queries"] / secs, 2)}
    del pipe
    return out | _peak(device)


def sdxl_lora_step(tmp: Path, device: str, tiny: bool) -> dict:
    """The engine's SDXL LoRA step (UNet + both text encoders' LoRA off, SDXL size/crop conditioning) on the
    real SDXL architecture with random weights at 1024 px, batch 1 (``--tiny``: shrunken, 2 steps)."""
    import argparse as _argparse

    from workbench.backbones.random_arch import build_random
    from workbench.backbones.registry import backbone_resolution

    _reset(device)
    t0 = time.perf_counter()
    folder = str(build_random("sdxl", tmp / "sdxl-random", tiny=tiny, seed=0))
    build_s = time.perf_counter() - t0
    resolution = backbone_resolution(folder)
    images = train_step.make_images(tmp / "sdxl-images", resolution, n=4)
    args = _argparse.Namespace(warmup=1 if tiny else 3, steps=2 if tiny else 8, batch_size=1, rank=4,
                               device=device, resolution=resolution, compile=False)
    times = train_step.engine_times(folder, images, "lora", args, tmp / "sdxl-lora")
    median = sorted(times)[len(times) // 2]
    shutil.rmtree(tmp / "sdxl-random", ignore_errors=True)
    return {"arch": "sdxl", "tiny": tiny, "resolution": resolution, "batch": 1, "rank": 4, "build_s": round(build_s, 1),
            "timed_steps": len(times), "median_step_s": round(median, 4), "img_s": round(1 / median, 3)} | _peak(device)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    budget = args.budget_s or (50.0 if args.tiny else 450.0)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    os.environ["WORKBENCH_HOME"] = str(tmp / "home")  # manifests of the benchmark runs stay in tmp
    result = {"check": "experiments/benchmarks/gpu_check.sh", "device": device, "tiny": args.tiny,
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
              "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
              "reference_h100": REFERENCE_H100, "target": ENGINE_TARGET, "budget_s": budget, "sections": {}}

    def save(name: str, value) -> None:
        result["sections"][name] = value
        result["seconds"] = round(time.perf_counter() - start, 1)
        args.out.write_text(json.dumps(result, indent=1) + "\n")  # partial results survive a timeout
        print(f"[{result['seconds']:6.1f} s] {name}: {json.dumps(value)[:400]}", flush=True)

    try:
        from workbench.backbones.random_arch import build_random

        if device == "cpu":
            torch.set_num_threads(1)
        t0 = time.perf_counter()
        folder = str(build_random("sd15", tmp / "sd15-random", tiny=args.tiny, seed=0))
        from workbench.backbones.registry import backbone_resolution

        resolution = backbone_resolution(folder)
        save("model", {"arch": "sd15", "tiny": args.tiny, "resolution": resolution, "weights": "random (seed 0)",
                       "build_s": round(time.perf_counter() - t0, 1)})
        images = train_step.make_images(tmp / "images", resolution, n=16)
        for name, fn in (("sampling", lambda: sampling(folder, device, args.tiny)),
                         ("mia", lambda: mia(folder, device, images, args.tiny))):
            try:
                save(name, fn())
            except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
                save(name, {"error": f"{type(exc).__name__}: {exc}"})
            _reset(device)
        try:
            save("sdxl_lora_step", sdxl_lora_step(tmp, device, args.tiny))
        except Exception as exc:  # noqa: BLE001
            save("sdxl_lora_step", {"error": f"{type(exc).__name__}: {exc}"})
        _reset(device)
        left = budget - (time.perf_counter() - start)
        step_json = tmp / "train_step.json"
        step_args = ["--device", device, "--backbone", folder, "--resolution", str(resolution),
                     "--batch-sizes", "4,max", "--json", str(step_json), "--budget-s", f"{max(left, 1.0):.0f}"]
        if args.tiny:
            step_args += ["--batch-size", "2", "--batch-sizes", "2,max", "--max-batch", "4", "--steps", "2",
                          "--warmup", "1", "--rounds", "1", "--compile-modes", "off"]
        else:
            step_args += ["--steps", "10", "--warmup", "3", "--rounds", "1", "--max-batch", "32",
                          "--compile-modes", "off,on", "--compile-reserve-s", "180"]
        try:
            train_step.main(step_args)
            steps = json.loads(step_json.read_text())
            if args.tiny:
                steps["compile_note"] = "not run at --tiny on a CPU (torch.compile's warm-up); the GPU check runs it"
            save("train_step", steps)
        except Exception as exc:  # noqa: BLE001
            save("train_step", {"error": f"{type(exc).__name__}: {exc}"})
        save("peak_memory", _peak(device))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
