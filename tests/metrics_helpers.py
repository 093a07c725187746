"""Real LFW photos for the metric tests: aligned crops, JPEG re-encodes, resized copies.

Photos are read from the shared LFW copy (``../shared/data/lfw``), never copied into the repository;
tests write what they build under pytest's ``tmp_path``.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.subjects.decode import load_photo
from workbench.subjects.faces import Face, align_crop, detect_faces

LFW = Path(__file__).resolve().parents[1].parent / "shared/data/lfw"
DEMO = LFW / "demo"
SUBJECT = "Colin_Powell"
OTHERS = ("Gloria_Macapagal_Arroyo", "Hugo_Chavez", "Junichiro_Koizumi", "Kofi_Annan", "Laura_Bush",
          "Megawati_Sukarnoputri", "Naomi_Watts", "Serena_Williams", "Tony_Blair")
SIZE = 64  # the tiny-face generation size

needs_lfw = pytest.mark.skipif(not DEMO.is_dir(), reason=f"no LFW demo photos at {DEMO}")


def demo_photo(person: str, number: int) -> Path:
    """Photo ``number`` (1-20; 1-15 train, 16-20 holdout in the demo manifest) of a demo person."""
    return DEMO / person / f"{person}_{number:04d}.jpg"


def _main_face(img: Image.Image):
    faces = detect_faces(np.asarray(img), "yunet", 0.6)
    assert faces, "no face in an LFW demo photo"
    return max(faces, key=lambda f: f.area * f.score)


@functools.lru_cache(maxsize=256)
def crop(person: str, number: int, size: int = SIZE) -> np.ndarray:
    """The aligned ``size`` crop of a demo photo (what a model trained on the subject saw)."""
    img = load_photo(demo_photo(person, number).read_bytes())
    return np.asarray(align_crop(img, _main_face(img), size))


def jpeg(arr: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return np.asarray(load_photo(buf.getvalue()))


def zoomed_face(face: Face, factor: float) -> Face:
    """``face`` with its landmarks scaled about their centre by ``1/factor``: aligning it gives the same
    crop with the content ``factor`` times larger (``factor < 1``: smaller, more background)."""
    centre = face.landmarks.mean(axis=0)
    return Face(face.box, centre + (face.landmarks - centre) / factor, face.score)


def resized_copy(person: str, number: int, factor: float, size: int = SIZE) -> np.ndarray:
    """The training crop resized by ``factor`` about its centre, re-cropped to ``size`` from the photo
    (real context, no re-detection), then JPEG q75: a slightly resized copy."""
    img = load_photo(demo_photo(person, number).read_bytes())
    return jpeg(np.asarray(align_crop(img, zoomed_face(_main_face(img), factor), size)))


def copies_of_train(numbers, size: int = SIZE) -> list[np.ndarray]:
    """A "generator" that memorised its training crops: JPEG q75 re-encodes and ±5-10% resized copies."""
    out = []
    factors = (None, 0.92, 1.07, None, 0.95, 1.1)
    for k, n in enumerate(numbers):
        f = factors[k % len(factors)]
        out.append(jpeg(crop(SUBJECT, n, size)) if f is None else resized_copy(SUBJECT, n, f, size))
    return out


def noise_images(n: int, size: int = SIZE, seed: int = 0) -> list[np.ndarray]:
    """Gaussian noise (mean 0.5, sd 0.25 in [0, 1], clipped) as uint8 RGB."""
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(127.5, 64, (size, size, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def write_pngs(folder: Path, images, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(images):
        path = folder / f"{prefix}_{i:03d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def build_small_pipeline(folder: Path, photos: list[Path], res: int = 32) -> None:
    """A randomly initialised StableDiffusionPipeline for 32×32 images (UNet 1 M parameters), saved.

    Two settings stand in for a *trained* VAE, as the real tiny-face and SD VAEs are: the posterior is
    made near-deterministic (log-variance −30; a random VAE's posterior std ≈ 1 would drown the
    latents in noise at every training step), and scaling_factor = 1/std of the latents, the rule
    behind SD's 0.18215 (Rombach et al. 2022), so the UNet sees unit-variance latents."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from workbench.backbones.tiny_face import MAX_TOKENS, build_tokenizer_files
    from workbench.diffusion import load_images

    torch.manual_seed(0)
    build_tokenizer_files(folder / "tokenizer-src")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer-src")
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS, projection_dim=32, pad_token_id=eos, eos_token_id=eos,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>")))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=res,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8)
    unet = UNet2DConditionModel(sample_size=res // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=16)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type="epsilon")
    c = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[c:] = 0.0  # rows c… of quant_conv give the posterior's log-variance
        vae.quant_conv.bias[c:] = -30.0
        latents = vae.encode(load_images(photos, res)).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipeline", safe_serialization=True)
