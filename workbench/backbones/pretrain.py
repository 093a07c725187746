"""``workbench pretrain-base``: pretrain the tiny-face backbone on LFW's pretraining identities.

Data: ``pretrain.zip`` (LFW people with < 10 photos, disjoint from every demo/evaluation subject),
decoded and aligned by the same intake code users' photos go through (safe decode, face detection,
alignment). Stages, each resumable from ``OUT/state``:
1. VAE (f = 2): reconstruction ℓ2 + a small KL term (Rombach et al., CVPR 2022, Eq. 25 of the appendix
   without the adversarial term), then latents are cached with ``scaling_factor = 1/std``.
2. UNet: the DDPM ε-prediction loss ‖ε − ε_θ(√ᾱ_t z₀ + √(1−ᾱ_t) ε, t, c)‖² (Ho et al. 2020, Eq. 14)
   on cached latents, generic captions with 10% dropped for classifier-free guidance, EMA weights.
3. Quality gate (:mod:`workbench.backbones.quality`): face-detection failure rate and diversity.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CAPTIONS = (
    "a photo of a person", "a portrait of a person", "a headshot of a person", "a photo of a face",
    "a close up photo of a person", "a news photo of a person",
)


@dataclass
class PretrainConfig:
    data: str                      # pretrain.zip (or a folder of photos)
    out: str                       # output pipeline folder
    resolution: int = 64           # image size; the VAE halves it
    vae_steps: int = 400           # VAE training steps (f = 2 with 4 channels learns fast)
    vae_batch_size: int = 16       # VAE batch per step
    unet_steps: int = 6000         # UNet training steps
    batch_size: int = 32           # per step
    lr: float = 4e-4               # UNet AdamW learning rate
    vae_lr: float = 2e-3           # VAE AdamW learning rate
    ema: float = 0.999             # EMA decay of UNet weights (the EMA is what ships)
    cond_drop: float = 0.1         # caption dropout for classifier-free guidance
    seed: int = 0                  # everything is seeded
    device: str = "cpu"            # cpu | cuda
    max_minutes: float = 0.0       # stop (and save) after this wall time; 0 = no limit
    save_every: int = 250          # checkpoint interval in steps
    eval_samples: int = 64         # samples for the quality gate (FDFR, diversity)


def prepare_crops(data: Path, resolution: int, cache: Path | None = None) -> np.ndarray:
    """Decode, detect, align every photo in ``data`` → uint8 (N, R, R, 3), with intake's decoder, detector
    and alignment. Photos that fail to decode or show no face are skipped (counted in the log); unlike
    intake, the highest-scoring face is kept and multi-person/size checks are not applied (the shipped
    base was trained this way)."""
    from tqdm import tqdm

    from workbench.subjects.decode import load_photo
    from workbench.subjects.faces import align_crop, detect_faces

    if cache is not None and cache.exists():
        return np.load(cache)
    if data.is_dir():
        items = [(p.name, p.read_bytes) for p in sorted(data.rglob("*")) if p.is_file()]
    else:
        zf = zipfile.ZipFile(data)
        names = sorted(n for n in zf.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png")))
        items = [(n, (lambda n=n: zf.read(n))) for n in names]
    crops, skipped = [], 0
    for _, read in tqdm(items, desc="aligning pretraining photos", unit="photo"):
        try:
            img = load_photo(read())
            faces = detect_faces(np.asarray(img))
        except Exception:  # noqa: BLE001 - a bad photo is skipped, as at intake
            skipped += 1
            continue
        if not faces:
            skipped += 1
            continue
        best = max(faces, key=lambda f: f.score)
        crops.append(np.asarray(align_crop(img, best, resolution), dtype=np.uint8))
    log.info("pretraining crops: %d aligned, %d skipped", len(crops), skipped)
    arr = np.stack(crops)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, arr)
    return arr


def _to_tensor(batch: np.ndarray):
    import torch

    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.contiguous()


@contextlib.contextmanager
def _autocast(device: str):
    """bf16 autocast where native; on CPU also the plain attention kernel (PyTorch's CPU flash
    attention is slow in bf16 backward, see :mod:`workbench.recipes.engine`)."""
    import torch

    from workbench.device import autocast_dtype

    dtype = autocast_dtype(device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None))
        if device == "cpu" and dtype is not None:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


def train_vae(vae, crops: np.ndarray, cfg: PretrainConfig, rng: np.random.Generator) -> list[float]:
    import torch
    from tqdm import trange

    vae.train().to(cfg.device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    losses = []
    for _ in trange(cfg.vae_steps, desc="VAE", unit="step"):
        idx = rng.integers(0, len(crops), cfg.vae_batch_size)
        x = _to_tensor(crops[idx]).to(cfg.device)
        with _autocast(cfg.device):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
        kl = post.kl().mean() / x[0].numel()
        loss = torch.nn.functional.mse_loss(rec.float(), x) + 1e-4 * kl.float()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    vae.eval()
    return losses


def encode_latents(vae, crops: np.ndarray, device: str, batch: int = 256):
    """Posterior means of the crops and of their mirror images (flip augmentation)."""
    import torch

    out = []
    with torch.no_grad():
        for arr in (crops, crops[:, :, ::-1]):
            for i in range(0, len(arr), batch):
                x = _to_tensor(np.ascontiguousarray(arr[i:i + batch])).to(device)
                out.append(vae.encode(x).latent_dist.mean.float().cpu())
    return torch.cat(out)


def train_unet(pipe, latents, cfg: PretrainConfig, state_dir: Path, deadline: float) -> dict:
    """ε-prediction training with EMA; checkpoints to ``state_dir`` so a killed run resumes."""
    import copy

    import torch
    from diffusers import DDPMScheduler
    from tqdm import tqdm

    unet = pipe.unet.to(cfg.device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=1e-2)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    start, losses = 0, []
    ckpt = state_dir / "unet_state.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location=cfg.device)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start, losses = state["step"], state["losses"]
        log.info("resuming UNet pretraining at step %d", start)
    with torch.no_grad():
        ids = pipe.tokenizer(["", *CAPTIONS], padding="max_length", truncation=True,
                             max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
        embeds = pipe.text_encoder(ids.to(cfg.device))[0]  # (1 + n_captions, T, D), frozen encoder
    gen = torch.Generator().manual_seed(cfg.seed + start)
    scale = pipe.vae.config.scaling_factor
    bar = tqdm(range(start, cfg.unet_steps), desc="UNet", unit="step", initial=start,
               total=cfg.unet_steps)
    step = start
    for step in bar:
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=gen)
        z0 = latents[idx].to(cfg.device) * scale
        noise = torch.randn(z0.shape, generator=gen).to(cfg.device)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        t = t.to(cfg.device)
        cap = torch.randint(1, len(CAPTIONS) + 1, (cfg.batch_size,), generator=gen)
        cap[torch.rand(cfg.batch_size, generator=gen) < cfg.cond_drop] = 0
        zt = noise_sched.add_noise(z0, noise, t)  # √ᾱ_t z₀ + √(1−ᾱ_t) ε
        with _autocast(cfg.device):
            pred = unet(zt, t, embeds[cap.to(cfg.device)]).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        last = step + 1 == cfg.unet_steps or (deadline and time.time() > deadline)
        if (step + 1) % cfg.save_every == 0 or last:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "step": step + 1, "losses": losses}, tmp)
            tmp.replace(ckpt)
        if last:
            break
    pipe.unet = ema
    return {"unet_steps_done": step + 1, "final_loss": float(np.mean(losses[-100:]))}


def _hardware(device: str) -> str:
    import os
    import platform

    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return f"CPU {model}, {os.cpu_count()} cores"


def pretrain(cfg: PretrainConfig) -> dict:
    """Run every stage; returns a summary (written to ``OUT/pretrain.json``)."""
    import torch

    from workbench.backbones.quality import evaluate_quality
    from workbench.backbones.tiny_face import build_pipeline

    t0 = time.time()
    deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes else 0.0
    out = Path(cfg.out)
    state = out.parent / (out.name + ".state")
    state.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    crops = prepare_crops(Path(cfg.data), cfg.resolution, state / f"crops_{cfg.resolution}.npy")
    pipe = build_pipeline(seed=cfg.seed)
    vae_file = state / "vae"
    if (vae_file / "config.json").exists():
        pipe.vae = type(pipe.vae).from_pretrained(vae_file)
        vae_losses = json.loads((state / "vae_losses.json").read_text())
    else:
        vae_losses = train_vae(pipe.vae, crops, cfg, rng)
        pipe.vae.save_pretrained(vae_file)
        (state / "vae_losses.json").write_text(json.dumps(vae_losses))
    pipe.vae.to(cfg.device).eval()
    latent_file = state / "latents.pt"
    if latent_file.exists():
        latents = torch.load(latent_file)
    else:
        latents = encode_latents(pipe.vae, crops, cfg.device)
        torch.save(latents, latent_file)
    pipe.vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    summary = train_unet(pipe, latents, cfg, state, deadline)
    pipe.to("cpu")
    pipe.save_pretrained(out, safe_serialization=True)
    quality = evaluate_quality(pipe, crops, n=cfg.eval_samples, seed=cfg.seed)
    summary.update(
        config=asdict(cfg), n_photos=len(crops), vae_final_loss=float(np.mean(vae_losses[-100:])),
        minutes=(time.time() - t0) / 60, torch=torch.__version__, quality=quality,
        threads=torch.get_num_threads(), hardware=_hardware(cfg.device),
    )
    (out / "pretrain.json").write_text(json.dumps(summary, indent=1))
    return summary
