"""Training-step time: the workbench engine vs a loop written the way the diffusers examples are.

The reference loop follows ``examples/dreambooth/train_dreambooth(_lora).py``: every step encodes the
batch with the VAE (``latent_dist.sample()``) and the prompt with the text encoder, in fp32, with no
caching. The engine (``workbench.recipes.engine.run``) encodes each image and its mirror once, caches
the text embedding while the text side is frozen, and runs under bf16 autocast where the hardware
supports it. Both use the same model, images, batch size, resolution, optimiser and clipping; the
reference even skips the examples' per-step dataloader work (PIL transforms), which favours it.
Warm-up steps are excluded; each loop runs ``--rounds`` times, alternating, and the best median step
time of each is reported with the ratio reference / engine (the machine may be shared).

    python experiments/benchmarks/train_step.py                        # tiny-face on the CPU
    python experiments/benchmarks/train_step.py --device cuda --backbone /models/sd15 --compile
    python experiments/benchmarks/train_step.py --device cuda --arch sd15 --batch-sizes 4,max \
        --compile-modes off,on --json out.json                         # SD 1.5 architecture, random weights

``--arch sd15`` builds the real SD 1.5 architecture with seeded random weights
(``workbench backbones build-random sd15``; ``--tiny`` shrinks its widths for a CPU test) at 512 px.
``--batch-sizes 4,max`` also measures the largest batch the engine fits (doubling from 8 up to
``--max-batch`` until CUDA runs out of memory; on a CPU simply ``--max-batch``); ``--compile-modes off,on``
measures the engine with and without ``torch.compile`` (the reference is never compiled). Configurations
that would start after ``--budget-s`` are recorded as skipped. ``--json`` writes every measurement,
with peak GPU memory, to one file (used by ``gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
FIXTURE = ROOT.parent / "shared" / "data" / "lfw" / "fixture"
PROMPT = "a photo of sks person"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--backbone", default=None, help="diffusers folder (default: a random tiny-face)")
    p.add_argument("--resolution", type=int, default=None, help="default: 64 for tiny-face, else 512")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed steps per loop")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, allocator)")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (this machine is shared)")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's UNet")
    p.add_argument("--reference-amp", action="store_true",
                   help="run the reference under the same autocast (the examples' --mixed_precision)")
    p.add_argument("--only", choices=["lora", "full"], default=None)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best median of each counts")
    p.add_argument("--arch", choices=["tiny-face", "sd15"], default="tiny-face",
                   help="without --backbone: a random tiny-face, or the SD 1.5 architecture with random weights")
    p.add_argument("--tiny", action="store_true", help="with --arch sd15: the shrunken widths (CPU tests)")
    p.add_argument("--batch-sizes", default=None,
                   help="comma-separated batch sizes, 'max' = the largest that fits (default: --batch-size)")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch 'max' tries (default 64)")
    p.add_argument("--compile-modes", default=None, help="'off', 'on' or 'off,on' (default: as --compile says)")
    p.add_argument("--budget-s", type=float, default=None, help="skip configurations that start after this")
    p.add_argument("--compile-reserve-s", type=float, default=200.0,
                   help="a compiled configuration starts only this long before --budget-s (its warm-up)")
    p.add_argument("--json", type=Path, default=None, help="write every measurement to this JSON file")
    return p.parse_args(argv)


def make_images(folder: Path, resolution: int, n: int = 8) -> list[Path]:
    """Centre crops of the LFW fixture photos (random images if the fixture is absent)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(FIXTURE.glob("*/*.jpg"))[:n]
    paths = []
    for i in range(n):
        if i < len(sources):
            with Image.open(sources[i]) as im:
                im = im.convert("RGB").crop((50, 50, 200, 200))
        else:
            im = Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        path = folder / f"img{i}.png"
        im.resize((resolution, resolution), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def reference_times(folder: str, images: list[Path], kind: str, args) -> list[float]:
    """The diffusers-example loop: VAE and text encoder every step, fp32, nothing cached."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig

    from workbench.device import autocast_dtype
    from workbench.diffusion import load_images
    from workbench.recipes.lora import UNET_TARGETS

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32).to(args.device)
    vae, text_encoder, unet, tokenizer = pipe.vae, pipe.text_encoder, pipe.unet, pipe.tokenizer
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    if kind == "lora":
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                    target_modules=UNET_TARGETS))
        params = [p for p in unet.parameters() if p.requires_grad]
        lr = 1e-4
    else:
        unet.requires_grad_(True)
        params = list(unet.parameters())
        lr = 5e-6
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pixels = load_images(images, args.resolution)
    input_ids = tokenizer([PROMPT] * args.batch_size, padding="max_length", truncation=True,
                          max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    amp = autocast_dtype(args.device) if args.reference_amp else None
    times = []
    for _ in range(args.warmup + args.steps):
        sync(args.device)
        t0 = time.perf_counter()
        idx = torch.randint(len(pixels), (args.batch_size,))
        flip = torch.rand(args.batch_size) < 0.5
        batch = torch.where(flip[:, None, None, None], pixels[idx].flip(-1), pixels[idx]).to(args.device)
        with torch.autocast(args.device, dtype=amp, enabled=amp is not None):
            latents = vae.encode(batch).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch_size,), device=args.device)
            noisy = scheduler.add_noise(latents, noise, t)
            encoder_hidden_states = text_encoder(input_ids.to(args.device))[0]
            pred = unet(noisy, t, encoder_hidden_states).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the examples log the loss every step
        sync(args.device)
        times.append(time.perf_counter() - t0)
    return times[args.warmup:]


def engine_times(folder: str, images: list[Path], kind: str, args, out: Path) -> list[float]:
    """The workbench engine itself: per-step seconds from its loss log."""
    import json

    from workbench.recipes import dreambooth, lora
    from workbench.recipes.engine import TrainJob, run

    steps = args.warmup + args.steps
    if kind == "lora":
        hooks = lora.hooks(lora.Params(steps=steps, lr=1e-4, batch_size=args.batch_size, rank=args.rank))
    else:
        hooks = dreambooth.hooks(dreambooth.Params(steps=steps, lr=5e-6, batch_size=args.batch_size,
                                                   prior_preservation=False))
    job = TrainJob(base=folder, train_images=images, subject_id="bench", out_dir=out, device=args.device,
                   resolution=args.resolution, checkpoint_every=0, compile=args.compile)
    run(job, hooks)
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    return [r["seconds"] for r in rows][args.warmup:]


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-step-"))
    try:
        return bench(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(args, tmp: Path) -> int:
    os.environ["WORKBENCH_HOME"] = str(tmp / "home")  # manifests of the benchmark runs stay in tmp

    import torch

    from workbench.device import autocast_dtype

    torch.set_num_threads(args.threads)
    if args.backbone is None and args.arch == "sd15":
        from workbench.backbones.random_arch import build_random
        from workbench.backbones.registry import backbone_resolution

        folder = str(build_random("sd15", tmp / "sd15-random", tiny=args.tiny, seed=0))
        args.resolution = args.resolution or backbone_resolution(folder)
    elif args.backbone is None:
        from workbench.backbones.tiny_face import build_pipeline

        folder = str(tmp / "tiny-face")
        build_pipeline(Path(folder), seed=0)
        args.resolution = args.resolution or 64
    else:
        folder = args.backbone
        args.resolution = args.resolution or 512
    images = make_images(tmp / "images", args.resolution)
    if args.batch_sizes or args.compile_modes or args.json:
        return run_matrix(args, folder, images, tmp)
    print(f"device {args.device}, threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"model {folder if args.backbone else 'tiny-face (random weights)'}, {args.resolution}px, "
          f"batch {args.batch_size}, {args.rounds} rounds of {args.steps} timed steps after {args.warmup} warm-up; "
          f"engine autocast {autocast_dtype(args.device)}, reference "
          f"{autocast_dtype(args.device) if args.reference_amp else 'fp32'}"
          f"{', engine compiled' if args.compile else ''}")
    for kind in [args.only] if args.only else ["lora", "full"]:
        refs, engs = [], []
        for r in range(args.rounds):  # alternate, so both loops see the same background load
            refs.append(statistics.median(reference_times(folder, images, kind, args)))
            engs.append(statistics.median(engine_times(folder, images, kind, args, tmp / f"run-{kind}-{r}")))
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
        ref, eng = min(refs), min(engs)
        print(f"{kind:5s} step: reference {ref * 1000:8.1f} ms   engine {eng * 1000:8.1f} ms   "
              f"reference/engine {ref / eng:5.2f}x   ({args.batch_size / eng:.1f} img/s)", flush=True)
    return 0


def _oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def largest_batch(folder: str, images: list[Path], kind: str, args, tmp: Path) -> int:
    """The largest engine batch that fits: doubling from 8 (two untimed steps each) until out of memory."""
    if args.device != "cuda":
        return args.max_batch  # nothing to probe on a CPU: the cap is the answer
    probe = argparse.Namespace(**vars(args) | {"warmup": 1, "steps": 1, "compile": False})
    best, batch = None, 8
    while batch <= args.max_batch:
        probe.batch_size = batch
        try:
            engine_times(folder, images, kind, probe, tmp / f"probe-{kind}-{batch}")
            best = batch
        except Exception as exc:  # noqa: BLE001 - out of memory ends the search; anything else is a bug
            if not _oom(exc):
                raise
            break
        finally:
            _free(args.device)
        batch *= 2
    return best or 4


def run_matrix(args, folder: str, images: list[Path], tmp: Path) -> int:
    """Every (kind, batch, compile) configuration: reference and engine step times, img/s, peak memory."""
    import json

    import torch

    start = time.perf_counter()
    sizes = [s.strip() for s in (args.batch_sizes or str(args.batch_size)).split(",") if s.strip()]
    modes = [m.strip() == "on" for m in (args.compile_modes or ("on" if args.compile else "off")).split(",")]
    kinds = [args.only] if args.only else ["lora", "full"]
    results = {"device": args.device, "torch": torch.__version__, "resolution": args.resolution,
               "model": folder if args.backbone else f"{args.arch} random weights{' (tiny)' if args.tiny else ''}",
               "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "configs": []}
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    batches = {}
    for kind in kinds:
        batches[kind] = [largest_batch(folder, images, kind, args, tmp) if s == "max" else int(s) for s in sizes]
    plan = [(compiled, kind, b, s) for compiled in modes for kind in kinds
            for b, s in zip(batches[kind], sizes, strict=True)]
    # uncompiled first; then the compiled ones most worth their warm-up: LoRA, the largest batch
    plan.sort(key=lambda c: (c[0], c[0] and c[1] != "lora", c[0] and c[3] != "max"))
    for compiled, kind, batch, size in plan:
        rec = {"kind": kind, "batch": batch, "batch_request": size, "compile": compiled}
        results["configs"].append(rec)
        reserve = args.compile_reserve_s if compiled else 0.0
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s - reserve:
            rec["skipped"] = (f"time budget: {args.budget_s:.0f} s, of which {time.perf_counter() - start:.0f} s spent"
                              + (f", a compiled run needs ~{reserve:.0f} s" if compiled else ""))
            print(json.dumps(rec), flush=True)
            continue
        cfg = argparse.Namespace(**vars(args) | {"batch_size": batch, "compile": compiled})
        rounds = 1 if compiled else args.rounds  # a compiled engine pays its warm-up once per run
        refs, engs, peaks = [], [], {}
        t0 = time.perf_counter()
        for r in range(rounds):
            for name, dest in (("reference", refs), ("engine", engs)):
                if name == "reference" and (compiled or rec.get("reference_error")):
                    continue  # the reference is never compiled: measured once, in the uncompiled pass
                _free(args.device)
                try:
                    if name == "reference":
                        times = reference_times(folder, images, kind, cfg)
                    else:
                        times = engine_times(folder, images, kind, cfg, tmp / f"run-{kind}-{batch}-{compiled}-{r}")
                    dest.append(statistics.median(times))
                    peaks[name] = max(peaks.get(name) or 0, _peak_gib(args.device) or 0) or None
                except Exception as exc:  # noqa: BLE001
                    if not _oom(exc):
                        raise
                    rec[f"{name}_error"] = "out of memory"
                finally:
                    _free(args.device)
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        if engs:
            eng = min(engs)
            rec |= {"engine_ms": round(eng * 1000, 2), "engine_img_s": round(batch / eng, 2),
                    "engine_peak_gib": peaks.get("engine")}
        if refs:
            ref = min(refs)
            rec |= {"reference_ms": round(ref * 1000, 2), "reference_img_s": round(batch / ref, 2),
                    "reference_peak_gib": peaks.get("reference")}
        if engs and refs:
            rec["reference_over_engine"] = round(min(refs) / min(engs), 3)
        print(json.dumps(rec), flush=True)
    uncompiled_ref = {(c["kind"], c["batch"]): c.get("reference_img_s") for c in results["configs"]
                      if not c["compile"] and c.get("reference_img_s")}
    for c in results["configs"]:  # a compiled engine against the (uncompiled) reference of the same batch
        ref = uncompiled_ref.get((c["kind"], c["batch"]))
        if c["compile"] and ref and c.get("engine_img_s"):
            c["engine_over_reference_img_s"] = round(c["engine_img_s"] / ref, 3)
    results["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
