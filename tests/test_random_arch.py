"""``workbench backbones build-random``: real SD 1.5 / SDXL architectures with random weights (issue #16, part 4).

Full size is checked without allocating a weight (meta device): the hand-written configs must give the
published parameter counts. The pipelines are built, saved, loaded back with the diffusers classes a user
would use, and sampled at ``--tiny`` size on the CPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
from contextlib import redirect_stdout  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.backbones.random_arch import CLIP_VOCAB, sd15_configs, sdxl_configs  # noqa: E402
from workbench.errors import UserError  # noqa: E402

#: Parameter counts of the published checkpoints (runwayml/stable-diffusion-v1-5,
#: stabilityai/stable-diffusion-xl-base-1.0).
PUBLISHED = {"sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
             "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                      "text_encoder_2": 694_659_840}}


def cli(*argv: str) -> tuple[int, str]:
    from workbench.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_full_size_configs_have_the_published_parameter_counts(arch):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = {"sd15": sd15_configs, "sdxl": sdxl_configs}[arch](False)
    with torch.device("meta"):
        models = {"unet": UNet2DConditionModel(**cfg["unet"]), "vae": AutoencoderKL(**cfg["vae"]),
                  "text_encoder": CLIPTextModel(CLIPTextConfig(vocab_size=CLIP_VOCAB, **cfg["text_encoder"]))}
        if "text_encoder_2" in cfg:
            models["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig(vocab_size=CLIP_VOCAB, **cfg["text_encoder_2"]))
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    assert counts == PUBLISHED[arch]


def _sha(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_tiny_build_loads_and_samples(tmp_path, arch, one_thread):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    out = tmp_path / arch
    rc, printed = cli("backbones", "build-random", arch, "--out", str(out), "--tiny", "--dtype", "float32")
    assert rc == 0 and Path(printed.strip()) == out
    assert json.loads((out / "random_weights.json").read_text())["architecture"] == arch
    cls = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}[arch]
    pipe = cls.from_pretrained(out, dtype=torch.float32)
    assert type(pipe) is cls
    full = {"sd15": sd15_configs, "sdxl": sdxl_configs}[arch](False)["unet"]
    for key in ("down_block_types", "up_block_types", "addition_embed_type"):  # the same wiring as full size
        want = full.get(key)
        assert (tuple(pipe.unet.config[key]) if isinstance(want, tuple) else pipe.unet.config.get(key)) == want
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a photo of a person", num_inference_steps=2, height=128, width=128, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 128, 128, 3) and torch.isfinite(torch.from_numpy(images)).all()
    again = tmp_path / f"{arch}-again"
    cli("backbones", "build-random", arch, "--out", str(again), "--tiny", "--dtype", "float32")
    assert _sha(again) == _sha(out)  # seeded: the same weights every time


def test_build_random_refuses_a_non_empty_folder(tmp_path):
    from workbench.backbones.random_arch import build_random

    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        build_random("sd15", tmp_path, tiny=True)
