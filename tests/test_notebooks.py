"""The notebooks are committed without outputs and run headless (papermill, this interpreter's kernel)
against a real tiny run: a random-weights tiny-face pipeline, 2 training steps, 2 sampling steps."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01_quickstart", "02_memorisation", "03_membership_inference")


def _outputs_text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            for mime, value in o.get("data", {}).items():
                out.append(f"<{mime}>" + (value if isinstance(value, str) else ""))
    return "\n".join(out)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs_and_takes_parameters(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "run_dir = None" in params[0].source
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 3  # a story, not just code
    # no logic lives only in a notebook: no function or class definitions
    assert not any(line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run of the quickstart spec (none + lora) on a random-weights tiny pipeline, plus results.json."""
    from report_fixtures import results_for_run, write_results

    from workbench.backbones.tiny_face import build_pipeline
    from workbench.report.explore import quick_spec
    from workbench.runner import run_experiment

    tmp = tmp_path_factory.mktemp("notebooks")
    overrides = {"backbone": str(tmp / "tiny"), "steps": 2, "sampling_steps": 2, "images_per_prompt": 1,
                 "recipes": ["none", "lora"], "tracking": "off"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(tmp / "home"))
        mp.setenv("WANDB_MODE", "offline")
        build_pipeline(tmp / "tiny", seed=0)
        spec = quick_spec(ROOT / "experiments" / "quickstart.yaml", **overrides)
        run_dir = tmp / "home" / "runs" / "quickstart"
        outcome = run_experiment(spec, run_dir)
        assert outcome.ok, outcome.status
        if not (run_dir / "results.json").exists():  # until the runner writes it: test data (report_fixtures.py)
            write_results(run_dir, results_for_run(run_dir, outcome.subject_id, spec))
        yield tmp, run_dir, overrides, mp


def _execute(name: str, out_dir: Path, parameters: dict):
    import papermill

    out = out_dir / f"{name}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
                               kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False, log_output=False,
                               request_save_on_cell_execute=False, execution_timeout=300)
    return nbformat.read(out, as_version=4)


def test_notebooks_run_headless_on_a_tiny_run(tiny_run, monkeypatch):
    tmp, run_dir, overrides, _ = tiny_run
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp / "home"))  # the kernel inherits this environment
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var, sub in (("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib"), ("JUPYTER_RUNTIME_DIR", "runtime")):
        monkeypatch.setenv(var, str(tmp / sub))  # nothing written to the home folder
    nb = _execute("01_quickstart", tmp, {**overrides, "run_dir": str(run_dir)})
    text = _outputs_text(nb)
    assert "report:" in text and "<text/html>" in text and "<image/png>" in text
    assert (run_dir / "report.html").exists()
    assert "lora:" in text.replace("**", "")

    nb = _execute("02_memorisation", tmp, {"run_dir": str(run_dir)})
    text = _outputs_text(nb)
    assert json.loads((run_dir / "results.json").read_text())["run"]["subject_id"] in text
    assert text.count("<image/png>") >= 2 and "median ℓ2 to train" in text
    assert "data:image/png;base64," in text  # the gallery of closest generations

    nb = _execute("03_membership_inference", tmp, {"run_dir": str(run_dir)})
    text = _outputs_text(nb)
    assert "<image/png>" in text and "queries per model" in text and "| lora | 0 | loss |" in text
