"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on 2 shared cores, two threads can be many times slower (RUNBOOK.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def random_base(tmp_path_factory) -> Path:
    """A random-weights tiny-face pipeline folder (real diffusers classes; for fast, untrained tests)."""
    from workbench.backbones.tiny_face import build_pipeline

    folder = tmp_path_factory.mktemp("tiny-face-random")
    build_pipeline(folder, seed=0)
    return folder


LFW_FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "fixture"


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> list[Path]:
    """64×64 crops of four LFW fixture photos: centre 150 px of the 250 px image (training images)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("crops")
    out = []
    for src in sorted(LFW_FIXTURE.glob("*/*.jpg"))[:4]:
        with Image.open(src) as im:
            crop = im.convert("RGB").crop((50, 50, 200, 200)).resize((64, 64), Image.Resampling.BICUBIC)
        crop.save(folder / f"{src.stem}.png")
        out.append(folder / f"{src.stem}.png")
    assert len(out) == 4, f"no LFW fixture photos under {LFW_FIXTURE}"
    return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty $WORKBENCH_HOME for one test."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
