"""Generation: images and records on disk, registered, reproducible from the seed."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from workbench.generate import RECORDS, GenerationRecord, generate  # noqa: E402
from workbench.lifecycle import manifest  # noqa: E402

SUBJECT = "subject-gen"
PROMPTS = [("a photo of sks person", "identifier", 0), ("a photo of a person", "no_identifier", 0)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(random_base) -> Path:
    return random_base


@pytest.fixture(scope="module")
def pipe(base):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(pipe, out: Path, seeds=(0,), batch_size=3) -> list[GenerationRecord]:
    return generate(pipe, PROMPTS, list(seeds), images_per_prompt=2, steps=2, guidance_scale=5.0,
                    batch_size=batch_size, out_dir=out, subject_id=SUBJECT, recipe_label="none")


def test_generate_writes_images_and_records_with_the_expected_fields(pipe, tmp_path):
    records = run(pipe, tmp_path / "gen", seeds=(0, 1))
    assert len(records) == 2 * 2 * 2  # prompts × seeds × images
    lines = [json.loads(line) for line in (tmp_path / "gen" / RECORDS).read_text().splitlines()]
    by_file = {r["file"]: r for r in lines}
    assert by_file == {r.file: asdict(r) for r in records}
    assert set(lines[0]) >= {"file", "recipe", "prompt", "group", "seed", "steps", "guidance_scale", "sha256"}
    assert {r.group for r in records} == {"identifier", "no_identifier"}
    for r in records:
        path = tmp_path / "gen" / r.file
        assert manifest.sha256_file(path) == r.sha256
        with Image.open(path) as im:
            assert im.size == (64, 64) and im.format == "PNG"
    registered = {Path(a.path).name: a.kind for a in manifest.read(SUBJECT)}
    assert all(registered[r.file] == "generation" for r in records)
    assert registered[RECORDS] == "record"


def test_same_seed_gives_the_same_images_and_another_seed_does_not(pipe, tmp_path):
    first = run(pipe, tmp_path / "a")
    second = run(pipe, tmp_path / "b")
    other = run(pipe, tmp_path / "c", seeds=(1,))
    assert [r.sha256 for r in first] == [r.sha256 for r in second]
    assert not {r.sha256 for r in first} & {r.sha256 for r in other}
    assert len({r.sha256 for r in first}) == len(first)  # images of one prompt differ from each other


def test_an_image_does_not_depend_on_its_batch(pipe, tmp_path):
    one = run(pipe, tmp_path / "one", batch_size=1)
    four = run(pipe, tmp_path / "four", batch_size=4)
    for a, b in zip(one, four, strict=True):
        x = np.asarray(Image.open(tmp_path / "one" / a.file), dtype=np.int16)
        y = np.asarray(Image.open(tmp_path / "four" / b.file), dtype=np.int16)
        assert np.abs(x - y).max() <= 2  # same noise; only float rounding may differ


def test_a_rerun_reuses_images_already_generated(pipe, tmp_path):
    first = run(pipe, tmp_path / "gen")
    count = len(manifest.read(SUBJECT))
    again = run(pipe, tmp_path / "gen")
    assert again == first
    assert [a.kind for a in manifest.read(SUBJECT)[count:]] == ["record"]  # only records.jsonl rewritten


def test_generate_command_fills_the_identifier_from_the_artifact(base, tmp_path, capsys):
    from workbench.cli import main
    from workbench.recipes import registry
    from workbench.recipes.engine import TrainJob

    crop = tmp_path / "crop.png"
    Image.new("RGB", (64, 64), (120, 100, 90)).save(crop)
    job = TrainJob(base=str(base), train_images=[crop], subject_id=SUBJECT, out_dir=tmp_path / "run")
    registry.get_recipe("none").train(job, registry.get_recipe("none").params())
    code = main(["generate", "--recipe-dir", str(tmp_path / "run"), "--out", str(tmp_path / "gen"),
                 "--prompt", "a photo of {identifier} {class_noun}", "--prompt", "a photo of a {class_noun}",
                 "--n", "1", "--steps", "2", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "gen" / RECORDS).read_text().splitlines()]
    assert [(r["prompt"], r["group"], r["recipe"]) for r in records] == [
        ("a photo of sks person", "identifier", "none"), ("a photo of a person", "no_identifier", "none")]
