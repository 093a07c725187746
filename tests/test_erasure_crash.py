"""An erasure killed half-way (SIGKILL of a real process) completes on the next start.

The erasing process runs with the documented test hook (``WORKBENCH_TEST_HOOKS=1`` +
``WORKBENCH_TEST_ERASE_DELAY``: a pause after each deletion) so that the kill lands mid-way; the next
process calls :func:`workbench.lifecycle.startup`, as every workbench command does at start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench import paths
from workbench.errors import UserError
from workbench.lifecycle import audit_log, keys, manifest
from workbench.lifecycle.verification import verify_erasure

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "fixture"
SUBJECT = "subject-crash"
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"no LFW fixture at {FIXTURE}")


def _python(code: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_killed_erasure_completes_on_next_start(tmp_path, monkeypatch):
    from workbench.subjects.intake import intake

    stores = {"WORKBENCH_HOME": tmp_path / "home", "WANDB_DIR": tmp_path / "wandb",
              "GRADIO_TEMP_DIR": tmp_path / "gradio"}
    for name, value in stores.items():
        monkeypatch.setenv(name, str(value))
    report = intake(sorted((FIXTURE / "Junichiro_Koizumi").glob("*.jpg")), SUBJECT, resolution=64)
    assert report.accepted
    run = paths.runs_root() / "exp-crash" / "generations" / "lora" / "seed0"
    for i in range(24):  # enough files for the kill to land half-way
        manifest.write_bytes(SUBJECT, "generation", run / f"identifier-00-seed0-{i:02d}.png", os.urandom(256))
    photo = paths.subject_dir(SUBJECT) / "photos" / f"{report.accepted[0].sha256}.png"
    copy = tmp_path / "gradio" / "tmpab12" / "photo.png"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(photo, copy)
    manifest.register_external(SUBJECT, "app_temp", copy)
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "stray.png").write_bytes(photo.read_bytes())  # an unregistered copy
    keys.ensure_key(SUBJECT)
    registered = {manifest.resolve(a.path) for a in manifest.read(SUBJECT)}

    env = os.environ | {k: str(v) for k, v in stores.items()}
    hooked = env | {"WORKBENCH_TEST_HOOKS": "1", "WORKBENCH_TEST_ERASE_DELAY": "0.2"}
    proc = _python(f"from workbench.lifecycle.erasure import erase; erase({SUBJECT!r})", hooked)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        gone = sum(not p.exists() for p in registered)
        if paths.erasure_journal(SUBJECT).exists() and gone >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"erase ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    left = [p for p in registered if p.exists()]
    assert paths.erasure_journal(SUBJECT).exists() and 0 < len(left) < len(registered)
    receipt_id = json.loads(paths.erasure_journal(SUBJECT).read_text())["receipt_id"]
    assert not verify_erasure(SUBJECT)["ok"]
    with pytest.raises(UserError, match="being erased"):  # nothing is added to a subject half-erased
        manifest.write_bytes(SUBJECT, "crop", paths.subject_dir(SUBJECT) / "crops" / "new.png", b"new")

    start = _python("import json; from workbench.lifecycle import startup; "
                    "print(json.dumps([r.receipt_id for r in startup()]))", env)
    out, err = start.communicate(timeout=120)
    assert start.returncode == 0, err
    assert json.loads(out) == [receipt_id]
    assert not paths.erasure_journal(SUBJECT).exists() and not any(p.exists() for p in registered)
    assert not copy.exists() and not (tmp_path / "wandb" / "stray.png").exists()
    result = verify_erasure(SUBJECT)
    assert result["ok"], result["residual"]
    receipt = json.loads((paths.home() / "receipts" / f"{receipt_id}.json").read_text())
    assert receipt["resumed"] and receipt["verification"]["ok"] and receipt["key_destroyed"]
    assert receipt["counts"]["generation"] == 24 and receipt["counts"]["copy"] == 1
    assert audit_log.verify()[0]
    assert _python("from workbench.lifecycle import startup; assert startup() == []", env).wait(timeout=60) == 0
