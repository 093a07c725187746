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
    assert meta["hf_oauth"] is True  # the Space provides OAuth for gr.LoginButton
    assert (ROOT / meta["app_file"]).is_file()
    assert str(meta["sdk_version"]) == gradio.__version__
    assert str(meta["python_version"]).startswith("3.")


def test_app_py_does_no_work_at_import_beyond_building_the_ui():
    text = (ROOT / "app.py").read_text()
    assert "demo = build_ui()" in text and 'if __name__ == "__main__":' in text
    assert "share=True" not in text


def test_on_a_space_the_app_offers_the_hugging_face_login(tmp_path):
    """With the variables a Space with `hf_oauth: true` gets, the UI has gradio's login button and routes."""
    import os
    import subprocess
    import sys

    pytest.importorskip("authlib")  # gradio[oauth], as requirements.txt installs on the Space
    env = os.environ | {"SYSTEM": "spaces", "SPACE_ID": "someone/workbench", "OAUTH_CLIENT_ID": "id",
                        "OAUTH_CLIENT_SECRET": "secret", "OAUTH_SCOPES": "openid profile",
                        "OPENID_PROVIDER_URL": "https://huggingface.co", "WORKBENCH_HOME": str(tmp_path),
                        "HF_HUB_OFFLINE": "1"}
    code = ("from workbench.app.ui import build_ui\n"
            "demo = build_ui()\n"
            "button = any(type(b).__name__ == 'LoginButton' for b in demo.blocks.values())\n"
            "routes = sorted(r.path for r in demo.app.routes if 'login' in getattr(r, 'path', ''))\n"
            "print(demo.expects_oauth, button, routes)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("True True") and "/login/huggingface" in out.stdout, out.stdout
