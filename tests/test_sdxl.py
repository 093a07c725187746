"""SDXL on a CPU (issue #16, part 3): a tiny SDXL pipeline with random weights (``workbench backbones
build-random sdxl --tiny``) is conditioned exactly as its own ``__call__`` conditions it, trains LoRA (both
text encoders too) and textual inversion (a new row in both text encoders) on the shared engine, generates,
and is measured end to end by ``workbench run``: identity, memorisation and all four membership attacks."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.backbones.registry import load_backbone  # noqa: E402
from workbench.diffusion import conditioning, text_encoders, unconditional  # noqa: E402
from workbench.recipes import engine, registry  # noqa: E402
from workbench.recipes.artifacts import load_personalised  # noqa: E402

PROMPT = "a photo of sks person"
RES = 128  # the tiny SDXL's own size: UNet sample size 16 × VAE factor 8
FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "fixture"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def sdxl_base(tmp_path_factory) -> Path:
    """The tiny SDXL pipeline folder, built once per session (real diffusers classes, random weights)."""
    from workbench.backbones.random_arch import build_random

    return build_random("sdxl", tmp_path_factory.mktemp("sdxl") / "tiny-sdxl", tiny=True, dtype="float32")


def train(name: str, base: Path, crops, out: Path, **params):
    recipe = registry.get_recipe(name)
    job = engine.TrainJob(base=str(base), train_images=crops, subject_id="subject-sdxl", out_dir=out, device="cpu",
                          resolution=RES, checkpoint_every=0)
    return recipe.train(job, recipe.params(**({"steps": 3, "batch_size": 2} | params)))


def eps(pipe, prompt: str = PROMPT) -> torch.Tensor:
    """The UNet's noise prediction on a fixed latent, through the shared conditioning."""
    z = torch.randn(1, 4, RES // 8, RES // 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return pipe.unet(z, 500, **conditioning(pipe, prompt, RES).unet_kwargs(1)).sample


def test_the_conditioning_is_the_pipelines_own(sdxl_base, random_base):
    pipe = load_backbone(str(sdxl_base))
    cond = conditioning(pipe, PROMPT, 96)
    hidden, _, pooled, _ = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    assert torch.equal(cond.hidden, hidden)  # both encoders' penultimate states, concatenated
    assert cond.hidden.shape[-1] == pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert torch.equal(cond.added["text_embeds"], pooled)  # text_encoder_2's pooled projection
    time_ids = pipe._get_add_time_ids((96, 96), (0, 0), (96, 96), dtype=hidden.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert cond.added["time_ids"].shape == (1, 6) and torch.equal(cond.added["time_ids"], time_ids)
    assert conditioning(pipe, PROMPT).added["time_ids"].tolist() == [[RES, RES, 0, 0, RES, RES]]  # pipeline's size
    kwargs = cond.unet_kwargs(3)
    assert kwargs["added_cond_kwargs"]["time_ids"].shape == (3, 6) and kwargs["encoder_hidden_states"].shape[0] == 3
    z = torch.zeros(3, 4, 12, 12)
    with torch.no_grad():
        assert pipe.unet(z, 10, **kwargs).sample.shape == z.shape
        with pytest.raises(ValueError, match="text_embeds"):  # an SDXL UNet cannot run on text alone
            pipe.unet(z, 10, encoder_hidden_states=kwargs["encoder_hidden_states"], added_cond_kwargs={})
    _, neg_hidden, _, neg_pooled = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=True)
    empty = unconditional(pipe, 96)  # SDXL's ∅: zeros (force_zeros_for_empty_prompt), the same time ids
    assert torch.equal(empty.hidden, neg_hidden) and torch.equal(empty.added["text_embeds"], neg_pooled)
    assert torch.equal(empty.added["time_ids"], time_ids) and not neg_hidden.any()
    sd = load_backbone(str(random_base))  # SD 1.x: the text encoder's last hidden states, nothing added
    sd_cond = conditioning(sd, PROMPT)
    assert not sd_cond.added and torch.equal(sd_cond.hidden, sd.encode_prompt(PROMPT, "cpu", 1, False)[0])
    assert torch.equal(unconditional(sd).hidden, sd.encode_prompt(PROMPT, "cpu", 1, True)[1])  # the empty prompt


def test_lora_on_the_unet_and_both_text_encoders_trains_loads_and_generates(sdxl_base, crops, tmp_path, home):
    from safetensors.torch import load_file

    from workbench.generate import sample_images

    result = train("lora", sdxl_base, crops, tmp_path / "run", train_text_encoder=True)
    weights = load_file(result.artifact_dir / "pytorch_lora_weights.safetensors")
    ups = {k: v for k, v in weights.items() if k.endswith("up.weight")}  # LoRA B: 0 at the start
    for part in ("unet", "text_encoder", "text_encoder_2"):
        moved = {k: bool(v.abs().max() > 0) for k, v in ups.items() if k.startswith(f"{part}.")}
        # SDXL reads text_encoder's penultimate hidden states: its last layer (of 2 here) gets no gradient
        expected = {k: not (part == "text_encoder" and ".layers.1." in k) for k in moved}
        assert moved and moved == expected, part
    base, tuned = load_backbone(str(sdxl_base)), load_personalised(None, result.artifact_dir)
    assert type(tuned).__name__ == "StableDiffusionXLPipeline"
    assert all(any("lora" in n for n, _ in te.named_parameters()) for te, _ in text_encoders(tuned).values())
    assert not torch.allclose(eps(tuned), eps(base))
    images = [sample_images(p, [PROMPT], [7], steps=2, guidance_scale=5.0, batch_size=1, progress=False)[0]
              for p in (base, tuned)]
    assert all(im.size == (RES, RES) for im in images) and images[0].tobytes() != images[1].tobytes()


def test_textual_inversion_learns_one_row_in_each_text_encoder(sdxl_base, crops, tmp_path, home):
    from safetensors.torch import load_file

    result = train("textual_inversion", sdxl_base, crops, tmp_path / "run", lr=1e-1)
    assert result.identifier == "<sks>"
    learned = load_file(result.artifact_dir / "learned_embeds.safetensors")
    assert set(learned) == {"clip_l", "clip_g"}
    base, tuned = load_backbone(str(sdxl_base)), load_personalised(None, result.artifact_dir)
    for key, (name, (te, tok)) in zip(("clip_l", "clip_g"), text_encoders(tuned).items(), strict=True):
        old = getattr(base, name).get_input_embeddings().weight
        person = old[tok.convert_tokens_to_ids("person</w>")]
        vocab = len(old)
        assert tok.convert_tokens_to_ids("<sks>") == vocab and len(tok) == vocab + 1, name
        new = te.get_input_embeddings().weight.detach()
        assert torch.equal(new[:vocab], old), f"{name}: only the new row may differ"
        assert torch.equal(new[vocab], learned[key][0]) and learned[key].shape == (1, te.config.hidden_size)
        assert not torch.allclose(new[vocab], person), f"{name}: the token must have moved from its initializer"
    assert not torch.allclose(eps(tuned, "a photo of <sks> person"), eps(base, "a photo of person person"))
    # the same file alone, as a vendor's embedding (`--model FILE --base`): both rows, under the file's name
    from workbench.modelfile.loading import load_model, open_model

    vendor = tmp_path / "vendor_ti.safetensors"
    vendor.write_bytes((result.artifact_dir / "learned_embeds.safetensors").read_bytes())
    with open_model(vendor, owner="sdxl-ti-test") as model:
        assert model.token == "<vendor_ti>"
        pipe = load_model(model, str(sdxl_base))
    for key, (te, tok) in zip(("clip_l", "clip_g"), text_encoders(pipe).values(), strict=True):
        row = te.get_input_embeddings().weight[tok.convert_tokens_to_ids("<vendor_ti>")]
        assert torch.equal(row.detach(), learned[key][0]), key


@pytest.mark.parametrize("name,params", [("dreambooth", {"prior_preservation": False}), ("pivotal", {}),
                                         ("dp_lora", {"noise_multiplier": 1.0, "seeded_noise": True, "delta": 1e-3})])
def test_the_other_recipes_train_on_sdxl_and_change_the_prediction(name, params, sdxl_base, crops, tmp_path, home):
    result = train(name, sdxl_base, crops, tmp_path / "run", steps=2, **params)
    tuned = load_personalised(None, result.artifact_dir)
    assert type(tuned).__name__ == "StableDiffusionXLPipeline"
    prompt = f"a photo of {result.identifier} person"
    assert not torch.allclose(eps(tuned, prompt), eps(load_backbone(str(sdxl_base)), prompt))


def test_workbench_run_measures_sdxl_recipes_end_to_end(sdxl_base, tmp_path, monkeypatch):
    from workbench.cli import main
    from workbench.results import validate_results

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    attacks = ["loss", "loss_t", "pia", "secmi"]
    spec = {
        "version": 1, "name": "sdxl-smoke", "subject": {"photos": [str(FIXTURE / "Colin_Powell")], "members": 3},
        "backbone": str(sdxl_base),
        "device": "cpu",
        "recipes": [{"name": "none"},
                    {"name": "lora", "params": {"steps": 2, "batch_size": 2}},
                    {"name": "textual_inversion", "params": {"steps": 2, "batch_size": 2}}],
        "prompts": {"with_identifier": ["a photo of {identifier} {class_noun}"],
                    "without_identifier": ["a photo of a {class_noun}"]},
        "images_per_prompt": 1, "sampling": {"steps": 2, "batch_size": 2},
        "tracking": {"wandb": "off"}, "metrics": {"encoders": ["sface"], "mia_attacks": attacks},
    }
    path = tmp_path / "sdxl.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    validate_results(results)
    rows = {r["label"]: r for r in results["rows"]}
    assert set(rows) == {"none", "lora", "textual_inversion"} and all(r["status"] == "ok" for r in rows.values())
    for label, row in rows.items():
        m = row["metrics"]
        for key in ("identity.fdfr", "memorization.extraction_rate"):
            assert {"value", "ci_low", "ci_high", "n"} <= set(m[key]), (label, key)
        for attack in attacks:
            auc = m[f"mia.{attack}.auc"]
            assert 0 <= auc["value"] <= 1 and 0 <= auc["p_value"] <= 1, (label, attack)
            assert 0 <= m[f"mia.{attack}.auc_raw"]["value"] <= 1
    assert rows["none"]["metrics"]["mia.loss.auc"]["value"] == 0.5  # calibrated against itself: scores all 0
    from PIL import Image

    for label in rows:
        folder = tmp_path / "run" / "generations" / label / "seed0"
        pngs = sorted(folder.glob("*.png"))
        assert len(pngs) == 2 and all(Image.open(p).size == (RES, RES) for p in pngs)
