"""Every registered recipe trains a few steps on a random tiny-face pipeline, and its artifact loads
the way a vanilla diffusers user would load it; runs resume; every file is in the manifest."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.errors import UserError  # noqa: E402
from workbench.lifecycle import manifest  # noqa: E402
from workbench.lifecycle.stores import is_bookkeeping  # noqa: E402
from workbench.recipes import engine, registry  # noqa: E402
from workbench.recipes.artifacts import load_personalised, read_done  # noqa: E402

SUBJECT = "subject-test"
# Tiny settings per recipe: a few steps at batch 2 (DreamBooth: 2 class images of 2 denoising steps).
FAST = {
    "none": {},
    "lora": {"steps": 3, "batch_size": 2},
    "dreambooth": {"steps": 3, "batch_size": 2, "num_class_images": 2, "class_image_steps": 2},
    "textual_inversion": {"steps": 3, "batch_size": 2},
    "pivotal": {"steps": 3, "batch_size": 2},
    "dp_lora": {"steps": 3, "batch_size": 2, "noise_multiplier": 1.0, "seeded_noise": True},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(random_base) -> str:
    return str(random_base)


def make_job(base, crops, out: Path, **kw) -> engine.TrainJob:
    return engine.TrainJob(base=base, train_images=crops, subject_id=SUBJECT, out_dir=out, device="cpu",
                           checkpoint_every=2, **kw)


def train(name: str, base, crops, out: Path, stop_after=None, **overrides):
    recipe = registry.get_recipe(name)
    params = recipe.params(**(FAST[name] | overrides))
    loop = {} if stop_after is None else {"stop_after": stop_after}
    return recipe.train(make_job(base, crops, out), params, **loop)


def sample(pipe, prompt: str, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(seed),
                output_type="np").images


def unregistered_files(*roots: Path) -> list[Path]:
    known = {Path(a.path) if Path(a.path).is_absolute() else Path(os.environ["WORKBENCH_HOME"]) / a.path
             for a in manifest.read(SUBJECT)}
    files = [p.resolve() for root in roots for p in root.rglob("*") if p.is_file()]
    return [p for p in files if p not in known and not is_bookkeeping(p)]  # audit log, manifest, ...


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_recipe_trains_loads_and_registers_every_file(name, base, crops, tmp_path, home):
    assert set(FAST) == set(registry.load_all()), "add the new recipe to FAST"
    result = train(name, base, crops, tmp_path / "run")
    done = read_done(result.artifact_dir)
    assert done["recipe"] == name and done["steps"] == FAST[name].get("steps", 0)
    assert done["identifier"] == result.identifier and done["subject_id"] == SUBJECT
    assert set(done) >= {"seconds", "final_loss", "base", "param_hash", "files", "params"}
    assert not (tmp_path / "run" / "checkpoint").exists(), "checkpoints must go once the artifact exists"
    if done["steps"]:
        rows = (tmp_path / "run" / "loss.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in rows]
        assert steps == list(range(1, done["steps"] + 1))
    pipe = load_personalised(base, result.artifact_dir, "cpu")
    assert sample(pipe, done["instance_prompt"]).shape == (1, 64, 64, 3)
    assert unregistered_files(tmp_path / "run", home) == []


def test_lora_file_holds_only_lora_keys_and_changes_the_output(base, crops, tmp_path, home):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    result = train("lora", base, crops, tmp_path / "run", lr=2e-2)
    with safe_open(result.artifact_dir / "pytorch_lora_weights.safetensors", "pt") as fh:
        keys = list(fh.keys())
    assert keys and all(k.startswith("unet.") and ".lora." in k for k in keys)

    plain = StableDiffusionPipeline.from_pretrained(base)
    tuned = StableDiffusionPipeline.from_pretrained(base)
    tuned.load_lora_weights(result.artifact_dir)
    before, after = sample(plain, "a photo of sks person"), sample(tuned, "a photo of sks person")
    assert np.abs(before - after).max() > 1e-3


def test_lora_on_the_text_encoder_is_saved_and_loaded(base, crops, tmp_path, home):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    result = train("lora", base, crops, tmp_path / "run", train_text_encoder=True)
    with safe_open(result.artifact_dir / "pytorch_lora_weights.safetensors", "pt") as fh:
        prefixes = {k.split(".")[0] for k in fh.keys()}
    assert prefixes == {"unet", "text_encoder"}
    pipe = StableDiffusionPipeline.from_pretrained(base)
    pipe.load_lora_weights(result.artifact_dir)
    assert any("lora" in n for n, _ in pipe.text_encoder.named_parameters())


def test_textual_inversion_token_loads_as_one_new_id(base, crops, tmp_path, home):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    result = train("textual_inversion", base, crops, tmp_path / "run", lr=1e-1)
    assert result.identifier == "<sks>"
    learned = load_file(result.artifact_dir / "learned_embeds.safetensors")
    assert list(learned) == ["<sks>"] and learned["<sks>"].shape == (1, 64)

    pipe = StableDiffusionPipeline.from_pretrained(base)
    vocab = len(pipe.tokenizer)
    person_id = pipe.tokenizer.convert_tokens_to_ids("person</w>")
    person = pipe.text_encoder.get_input_embeddings().weight[person_id].detach().clone()
    pipe.load_textual_inversion(result.artifact_dir)
    ids = pipe.tokenizer("a photo of <sks> person", add_special_tokens=False).input_ids
    assert ids.count(vocab) == 1 and len(pipe.tokenizer) == vocab + 1
    row = pipe.text_encoder.get_input_embeddings().weight[vocab]
    assert torch.equal(row, learned["<sks>"][0])
    assert not torch.allclose(row, person), "the token must have moved away from its initializer"


def test_textual_inversion_changes_only_the_new_row(base):
    from diffusers import StableDiffusionPipeline

    from workbench.recipes.textual_inversion import add_token

    pipe = StableDiffusionPipeline.from_pretrained(base)
    weight, token_id = add_token(pipe.tokenizer, pipe.text_encoder, "<sks>", "person")
    before = weight.detach().clone()
    opt = torch.optim.AdamW([weight], lr=1e-1, weight_decay=0.0)
    ids = pipe.tokenizer("<sks> person photo", return_tensors="pt").input_ids
    pipe.text_encoder(ids)[0].square().mean().backward()
    opt.step()
    changed = (weight.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [token_id]


def test_dreambooth_folder_loads_and_class_images_are_reused(base, crops, tmp_path, home):
    from diffusers import StableDiffusionPipeline

    result = train("dreambooth", base, crops, tmp_path / "run")
    pipe = StableDiffusionPipeline.from_pretrained(result.artifact_dir)
    plain = StableDiffusionPipeline.from_pretrained(base)
    assert not torch.equal(pipe.unet.conv_in.weight, plain.unet.conv_in.weight)
    class_images = [a for a in manifest.read(SUBJECT) if a.kind == "class_image"]
    assert len(class_images) == 2

    train("dreambooth", base, crops, tmp_path / "again", lr=2e-4)  # another run, same class images
    assert [a for a in manifest.read(SUBJECT) if a.kind == "class_image"] == class_images


def test_dreambooth_with_the_text_encoder_saves_both(base, crops, tmp_path, home):
    from diffusers import StableDiffusionPipeline

    result = train("dreambooth", base, crops, tmp_path / "run", train_text_encoder=True, prior_preservation=False)
    pipe = StableDiffusionPipeline.from_pretrained(result.artifact_dir)
    plain = StableDiffusionPipeline.from_pretrained(base)
    weight = "text_model.encoder.layers.0.self_attn.q_proj.weight"
    trained, original = pipe.text_encoder.state_dict(), plain.text_encoder.state_dict()
    key = weight if weight in trained else weight.removeprefix("text_model.")
    assert not torch.equal(trained[key], original[key])


def test_pivotal_loads_token_and_lora(base, crops, tmp_path, home):
    from diffusers import StableDiffusionPipeline

    result = train("pivotal", base, crops, tmp_path / "run")
    pipe = StableDiffusionPipeline.from_pretrained(base)
    pipe.load_textual_inversion(result.artifact_dir)
    pipe.load_lora_weights(result.artifact_dir)
    assert len(pipe.tokenizer("<sks>", add_special_tokens=False).input_ids) == 1
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())


@pytest.mark.parametrize("name", ["lora", "textual_inversion", "pivotal", "dreambooth", "dp_lora"])
def test_a_stopped_run_resumes_and_matches_an_uninterrupted_one(name, base, crops, tmp_path, home):
    straight = train(name, base, crops, tmp_path / "straight", steps=4)
    with pytest.raises(engine.Stopped):
        train(name, base, crops, tmp_path / "resumed", steps=4, stop_after=2)
    run = tmp_path / "resumed"
    assert [p.name for p in (run / "checkpoint").iterdir()] == ["step-000002"]
    assert not (run / "artifact").exists()
    resumed = train(name, base, crops, run, steps=4)
    assert resumed.steps == 4
    steps = [json.loads(line)["step"] for line in (run / "loss.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert resumed.param_hash == straight.param_hash, "resuming must continue the same trajectory"
    assert unregistered_files(run, home) == []


def test_a_finished_run_is_reused_and_a_different_job_is_refused(base, crops, tmp_path, home):
    first = train("lora", base, crops, tmp_path / "run")
    again = train("lora", base, crops, tmp_path / "run")
    assert again == first
    with pytest.raises(UserError, match="different job"):
        train("lora", base, crops, tmp_path / "run", rank=8)


def test_bad_recipe_parameters_fail_before_training_with_the_field_name(tmp_path, capsys):
    from workbench.cli import main
    from workbench.recipes.commands import parse_params

    with pytest.raises(UserError, match="rnk: unknown parameter"):
        parse_params("lora", ["rnk=4"])
    with pytest.raises(UserError, match="rank"):
        parse_params("lora", ["rank=four"])
    assert parse_params("lora", ["rank=8", "train_text_encoder=true"]).rank == 8
    code = main(["train", "--subject", SUBJECT, "--recipe", "lora", "--set", "lr=-1", "--out", str(tmp_path)])
    assert code == 2 and "lr" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_recipes_command_lists_every_recipe_with_its_defaults():
    from workbench.recipes.commands import describe_recipes

    text = describe_recipes()
    for name in registry.load_all():
        assert f"{name}: " in text
    assert "rank = 4  # LoRA rank r" in text
    assert "steps = 300  # optimiser steps" in text  # textual inversion's own default


def test_a_job_without_images_is_refused(tmp_path):
    with pytest.raises(UserError, match="no training images"):
        engine.TrainJob(base="tiny-face", train_images=[], subject_id=SUBJECT, out_dir=tmp_path)


# --- Leakage-aware options: a step cap per photo, early stopping on the holdout loss, prior preservation


def test_max_steps_per_photo_caps_the_steps(base, crops, tmp_path, home):
    result = train("lora", base, crops, tmp_path / "run", steps=50, max_steps_per_photo=1.5)
    details = read_done(result.artifact_dir)["details"]
    assert result.steps == 6 == details["steps"]["run"] == details["steps"]["cap"]  # 1.5 × 4 photos
    assert details["steps"]["planned"] == 50


def early_job(base, crops, out):
    return engine.TrainJob(base=base, train_images=crops[:2], holdout_images=crops[2:], subject_id=SUBJECT,
                           out_dir=out, device="cpu", checkpoint_every=2)


def test_early_stopping_keeps_the_weights_of_the_best_holdout_evaluation(base, crops, tmp_path, home):
    recipe = registry.get_recipe("lora")
    params = recipe.params(steps=12, batch_size=2, lr=0.3, early_stopping_patience=1, eval_every=2)
    stopped = recipe.train(early_job(base, crops, tmp_path / "early"), params)
    early = read_done(stopped.artifact_dir)["details"]["early_stopping"]
    history = dict(early["history"])
    assert early["best_step"] == min(history, key=history.get)
    assert early["stopped_early"], history  # the holdout loss rises again within 12 steps (seeded)
    assert stopped.steps == early["best_step"] + 2 < 12
    rows = [json.loads(x) for x in (tmp_path / "early" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "holdout_loss" in r] == sorted(history)
    # The kept weights are the best evaluation's: a plain run of that many steps ends on the same ones.
    plain = recipe.train(early_job(base, crops, tmp_path / "plain"),
                         recipe.params(steps=early["best_step"], batch_size=2, lr=0.3))
    assert plain.param_hash == stopped.param_hash


def test_early_stopping_resumes_and_needs_holdout_photos(base, crops, tmp_path, home):
    recipe = registry.get_recipe("lora")
    params = recipe.params(steps=6, batch_size=2, early_stopping_patience=5, eval_every=1)
    straight = recipe.train(early_job(base, crops, tmp_path / "straight"), params)
    with pytest.raises(engine.Stopped):
        recipe.train(early_job(base, crops, tmp_path / "resumed"), params, stop_after=4)
    resumed = recipe.train(early_job(base, crops, tmp_path / "resumed"), params)
    assert resumed.param_hash == straight.param_hash
    assert resumed.details["early_stopping"]["history"] == straight.details["early_stopping"]["history"]
    with pytest.raises(UserError, match="holdout"):
        recipe.train(make_job(base, crops, tmp_path / "no-holdout"), params)


def test_lora_with_prior_preservation_trains_on_class_images_too(base, crops, tmp_path, home):
    train("lora", base, crops, tmp_path / "run", prior_preservation=True, num_class_images=2, class_image_steps=2)
    rows = [json.loads(x) for x in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert all("extra_loss" in r for r in rows)
    assert len([a for a in manifest.read(SUBJECT) if a.kind == "class_image"]) == 2


def test_should_stop_checkpoints_at_that_step_and_the_rerun_resumes(base, crops, tmp_path, home):
    straight = train("lora", base, crops, tmp_path / "straight", steps=5)
    calls = []
    with pytest.raises(engine.Stopped):  # e.g. the app's Cancel button, polled after every step
        registry.get_recipe("lora").train(make_job(base, crops, tmp_path / "run"),
                                          registry.get_recipe("lora").params(**(FAST["lora"] | {"steps": 5})),
                                          should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert [p.name for p in (tmp_path / "run" / "checkpoint").iterdir()] == ["step-000003"]
    assert train("lora", base, crops, tmp_path / "run", steps=5).param_hash == straight.param_hash


def test_a_backbone_rebuilt_in_place_with_other_weights_is_a_new_job(tmp_path, crops, home):
    """The job key covers the base model's weights, not its name or path: rebuilding a local backbone
    folder in place (here: other random weights) makes the next run train again instead of reusing a
    model trained on the old weights."""
    from workbench.backbones.tiny_face import build_pipeline

    folder = tmp_path / "my-backbone"
    build_pipeline(folder, seed=0)
    recipe = registry.get_recipe("lora")
    params = recipe.params(**FAST["lora"])
    job = engine.TrainJob(base=str(folder), train_images=crops, subject_id=SUBJECT, device="cpu")
    first = recipe.train(job.in_store("lora", params), params)
    again = recipe.train(job.in_store("lora", params), params)
    assert again.artifact_dir == first.artifact_dir and again.param_hash == first.param_hash  # reused

    build_pipeline(folder, seed=1)  # the same folder, other weights
    rebuilt = job.in_store("lora", params)
    old_weights = json.loads((first.artifact_dir.parent / engine.JOB).read_text())["base_weights"]
    assert rebuilt.record("lora", params)["base_weights"] != old_weights
    second = recipe.train(rebuilt, params)
    assert second.artifact_dir != first.artifact_dir
    assert second.param_hash != first.param_hash  # trained again, on the new weights
    assert read_done(second.artifact_dir)["base_sha256"] != read_done(first.artifact_dir)["base_sha256"]
