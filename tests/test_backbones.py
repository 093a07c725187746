"""The tiny-face backbone: offline tokenizer, genuine diffusers folders, loading errors, pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.backbones import registry, tiny_face
from workbench.errors import OfflineError, UserError

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "pipe"
    tiny_face.build_pipeline(folder, seed=0)
    return folder


def test_tokenizer_is_built_offline_and_whole_words_are_single_tokens(tiny_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_dir / "tokenizer")
    for word in ("photo", "headshot", "person", "linkedin"):
        assert tok.tokenize(word) == [word + "</w>"]
    assert len(tok.tokenize("sks")) > 1  # the rare identifier is not a word the base knows
    cfg = json.loads((tiny_dir / "text_encoder" / "config.json").read_text())
    assert cfg["eos_token_id"] == tok.convert_tokens_to_ids("<|endoftext|>")  # pooling uses the real EOS


def test_built_folder_is_a_vanilla_stable_diffusion_pipeline(tiny_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, safety_checker=None)
    out = pipe("a photo of a person", num_inference_steps=2, output_type="np")
    assert out.images.shape == (1, tiny_face.RESOLUTION, tiny_face.RESOLUTION, 3)


def test_local_folder_loads_through_the_registry(tiny_dir):
    pipe = registry.load_backbone(str(tiny_dir))
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_folder_without_model_index_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="model_index.json"):
        registry.resolve_backbone(str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        registry.resolve_backbone("./no/such/folder")


def test_backbone_resolution_comes_from_the_folder_an_override_or_the_hub_default(tiny_dir):
    assert registry.backbone_resolution(str(tiny_dir)) == tiny_face.RESOLUTION
    assert registry.backbone_resolution(str(tiny_dir), 128) == 128
    assert registry.backbone_resolution("stable-diffusion-v1-5/stable-diffusion-v1-5") == registry.HUB_RESOLUTION
    assert registry.HUB_ID.match("org/name-1.5") and not registry.HUB_ID.match("./folder")


def test_hub_id_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(OfflineError, match="huggingface-cli download|tiny-face"):
        registry.load_backbone("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_shipped_tiny_face_is_small_fp16_with_a_model_card():
    folder = registry.ASSETS / "tiny-face"
    if not (folder / "model_index.json").exists():
        pytest.fail("the tiny-face checkpoint is not shipped in workbench/backbones/assets/tiny-face")
    weights = list(folder.rglob("*.safetensors"))
    assert weights and sum(p.stat().st_size for p in weights) <= 11 * 10**6  # target 10 MB; 10.8 MB shipped
    card = (folder / "MODEL_CARD.md").read_text()
    for needle in ("pretrain.zip", "Face-detection failure rate", "Diversity", "Seed", "Hardware"):
        assert needle in card
    from safetensors import safe_open

    with safe_open(str(folder / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as fh:
        assert str(fh.get_tensor(next(iter(fh.keys()))).dtype) == "torch.float16"


def test_pretrain_smoke_runs_every_stage_and_resumes(tmp_path, monkeypatch):
    """Two steps per stage on the LFW fixture photos: the real code path, small sizes."""
    from diffusers import StableDiffusionPipeline

    from workbench.backbones.pretrain import PretrainConfig, pretrain

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    cfg = PretrainConfig(data=str(LFW / "fixture"), out=str(tmp_path / "base"), vae_steps=2, unet_steps=2,
                         batch_size=4, vae_batch_size=4, save_every=1, eval_samples=4)
    summary = pretrain(cfg)
    assert summary["unet_steps_done"] == 2 and summary["n_photos"] >= 10
    assert 0.0 <= summary["quality"]["fdfr_samples"] <= 1.0
    assert summary["quality"]["fdfr_real"] < 0.5  # the aligned fixture crops are faces
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "base", safety_checker=None)
    assert np.isfinite(pipe.vae.config.scaling_factor)
    # resume: a longer run continues from the saved state instead of starting over
    cfg.unet_steps = 3
    assert pretrain(cfg)["unet_steps_done"] == 3
    state = json.loads((tmp_path / "base" / "pretrain.json").read_text())
    assert state["config"]["unet_steps"] == 3
