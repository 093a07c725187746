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
