"""Set-up files stay in sync with pyproject.toml and the lock, so `make demo` / `make test` work on a fresh
machine with the versions the tests passed with."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
TORCH = "torch==2.13.0"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def name_of(requirement: str) -> str:
    return canonical(re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0])


def pyproject_requirements(extra: str | None = None) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"][extra] if extra else project["dependencies"]


def all_pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [r for reqs in project["optional-dependencies"].values() for r in reqs]


def lock_pins() -> dict[str, str]:
    """requirements.lock as {canonical name: version}; every requirement line is `name==version`."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line.strip())
        assert match, f"requirements.lock: {line!r} is not a plain `name==version` pin"
        assert canonical(match[1]) not in pins, f"requirements.lock pins {match[1]} twice"
        pins[canonical(match[1])] = match[2]
    return pins


def pinned(lines: list[str]) -> dict[str, str]:
    """`name==version` (extras allowed) among requirement lines → {canonical name: version}."""
    out = {}
    for ln in lines:
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;]+)", ln.strip())
        if match:
            out[canonical(match[1])] = match[3]
    return out


def test_lock_is_fully_pinned_and_pins_the_makefiles_torch():
    pins = lock_pins()
    assert f"torch=={pins['torch']}" == TORCH  # uv keeps the installed CPU torch (2.13.0+cpu satisfies ==2.13.0)
    assert f"TORCH := {TORCH}" in (ROOT / "Makefile").read_text()
    lines = LOCK.read_text().splitlines()
    header = lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("#"))]
    assert any("make lock" in ln for ln in header)  # how to regenerate it, at its top


def test_lock_satisfies_every_range_of_pyproject():
    pins = lock_pins()
    for text in all_pyproject_requirements():
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonical(req.name)
        assert name in pins, f"{text} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {text}: run `make lock`"
        )


def locked_closure(root: str = "workbench", extras: frozenset[str] = frozenset({"dev"})) -> dict[str, str]:
    """Every distribution that `root[extras]` needs in this environment → its installed version."""
    versions, seen, todo = {}, {}, [(root, set(extras))]
    while todo:
        name, wanted = todo.pop()
        key = canonical(name)
        if key in seen and wanted <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | wanted
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            versions[key] = "not installed"
            continue
        versions[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in seen[key] | {""}):
                continue
            todo.append((req.name, set(req.extras)))
    versions.pop(canonical(root))
    return versions


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="checks the .venv that `make` installs"
)
def test_the_venv_holds_exactly_the_locked_versions_of_every_transitive_dependency():
    pins = lock_pins()
    installed = locked_closure()
    assert installed, "workbench[dev] has no installed dependencies?"
    missing = sorted(name for name in installed if name not in pins)
    assert not missing, f"installed but not in requirements.lock (run `make lock`): {missing}"
    differ = {
        name: (version, pins[name])
        for name, version in installed.items()
        if version == "not installed" or Version(version).public != Version(pins[name]).public
    }
    assert not differ, f"installed vs locked (run `make` to reinstall from the lock): {differ}"


def test_environment_yml_lists_every_dependency_pins_torch_and_takes_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-c requirements.lock" in pip  # every package, transitive ones included, at its locked version
    listed = {name_of(r) for r in pip if not r.startswith("-")}
    for req in pyproject_requirements() + pyproject_requirements("dev"):
        assert name_of(req) in listed, f"{req} missing from environment.yml"
    assert TORCH in pip
    pins = lock_pins()
    for name, version in pinned(pip).items():
        assert pins.get(name) == version, f"environment.yml pins {name}=={version}, the lock {pins.get(name)}"


def test_requirements_txt_lists_runtime_dependencies_except_torch_at_the_locked_versions():
    lines = [ln.split("  #")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    listed = {name_of(r) for r in reqs}
    for req in pyproject_requirements():
        if name_of(req) != "torch":
            assert name_of(req) in listed, f"{req} missing from requirements.txt"
    assert "torch" not in listed  # the Spaces platform provides torch
    assert "gradio[oauth]>=6.16" in reqs  # security floor (PRIVACY.md); [oauth]: the Spaces login button
    pins = lock_pins()
    for name, version in pinned(reqs).items():
        assert pins.get(name) == version, f"requirements.txt pins {name}=={version}, the lock {pins.get(name)}"
    # The Space runs the gradio of the README front matter's sdk_version: the one the tests passed with.
    sdk_version = re.search(r"^sdk_version:\s*(\S+)\s*$", (ROOT / "README.md").read_text(), re.M)
    assert sdk_version and sdk_version[1] == pins["gradio"], "README sdk_version differs from the lock's gradio"


def test_makefile_installs_pinned_torch_then_the_package_from_the_lock():
    text = (ROOT / "Makefile").read_text()
    assert f"TORCH := {TORCH}" in text
    assert "LOCK := requirements.lock" in text
    assert re.search(r"^\$\(STAMP\): pyproject\.toml \$\(LOCK\)", text, re.M)  # either change reinstalls
    torch_step = text.index("install $(TORCH_PIP_ARGS) '$(TORCH)'")
    uv_step = text.index("pip install -c $(LOCK) uv")
    package_step = text.index("-c $(LOCK) -e '.[dev]'")
    assert torch_step < uv_step < package_step
    for target in ("demo:", "test:", "test-slow:", "lint:", "clean:", ".venv:", "lock:"):
        assert re.search(rf"^{re.escape(target)}", text, re.M), target


def test_ci_script_is_executable_and_runs_make_test():
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "set -euo pipefail" in text and "make test" in text
