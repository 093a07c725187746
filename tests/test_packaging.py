"""Set-up files stay in sync with pyproject.toml, so `make demo` / `make test` work on a fresh machine."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parent.parent


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_requirements(extra: str | None = None) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"][extra] if extra else project["dependencies"]


def test_environment_yml_lists_every_dependency_and_pins_torch():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {name_of(r) for r in pip}
    for req in pyproject_requirements() + pyproject_requirements("dev"):
        assert name_of(req) in listed, f"{req} missing from environment.yml"
    assert "torch==2.13.0" in pip


def test_requirements_txt_lists_runtime_dependencies_except_torch():
    lines = [ln.split("  #")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    listed = {name_of(r) for r in reqs}
    for req in pyproject_requirements():
        if name_of(req) != "torch":
            assert name_of(req) in listed, f"{req} missing from requirements.txt"
    assert "torch" not in listed  # the Spaces platform provides torch
    assert "gradio[oauth]>=6.16" in reqs  # security floor (PRIVACY.md); [oauth]: the Spaces login button


def test_makefile_installs_pinned_torch_before_the_package():
    text = (ROOT / "Makefile").read_text()
    assert "TORCH := torch==2.13.0" in text
    assert text.index("'$(TORCH)'") < text.index("pip install -e '.[dev]'")
    for target in ("demo:", "test:", "test-slow:", "lint:", "clean:", ".venv:"):
        assert re.search(rf"^{re.escape(target)}", text, re.M), target


def test_ci_script_is_executable_and_runs_make_test():
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "set -euo pipefail" in text and "make test" in text
