"""The ``workbench`` command line: sub-commands are listed, bad input never shows a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_help_lists_the_sub_commands(tmp_path):
    result = run_cli("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("intake", "pretrain-base", "backbones", "recipes", "train", "generate"):
        assert name in result.stdout, f"{name!r} missing from `workbench --help`"
