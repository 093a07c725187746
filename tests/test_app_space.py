"""The Hugging Face Space's front matter (README.md) is valid and names the gradio this project runs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_front_matter_parses_and_sdk_version_matches_installed_gradio():
    gradio = pytest.importorskip("gradio")
    repocard = pytest.importorskip("huggingface_hub.repocard")
    meta = repocard.metadata_load(ROOT / "README.md")
    card = repocard.RepoCard.load(ROOT / "README.md")
    assert meta == card.data.to_dict()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert (ROOT / meta["app_file"]).is_file()
    assert str(meta["sdk_version"]) == gradio.__version__
    assert str(meta["python_version"]).startswith("3.")


def test_app_py_does_no_work_at_import_beyond_building_the_ui():
    text = (ROOT / "app.py").read_text()
    assert "demo = build_ui()" in text and 'if __name__ == "__main__":' in text
    assert "share=True" not in text
