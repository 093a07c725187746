"""Concurrent writers (#14): Ray tasks, the app and the CLI append to one subject manifest and one audit
log at once. No line is lost or torn and the hash chain verifies; an erasure while a row of the same
subject is training stops the row and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.lifecycle import audit_log, manifest

WRITERS, EACH = 8, 40
SUBJECT = "subject-concurrent"

WRITER = r"""
import sys
from pathlib import Path
from workbench.lifecycle import manifest
w, each, folder = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
for i in range(each):
    f = folder / f"w{w}-{i}.bin"
    f.write_bytes(f"{w}-{i}".encode())
    manifest.register(sys.argv[4], "record", f)  # one manifest line and one audit line
    manifest._append(sys.argv[4], [{"type": "note", "writer": w, "i": i, "pad": "x" * 9000}])  # > PIPE_BUF
"""


def test_many_writer_processes_lose_no_line_tear_none_and_keep_the_audit_chain(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    folder = tmp_path / "files"
    folder.mkdir()
    env = os.environ | {"WORKBENCH_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(EACH), str(folder), SUBJECT], env=env)
             for w in range(WRITERS)]
    assert [p.wait(timeout=300) for p in procs] == [0] * WRITERS
    raw = manifest.manifest_path(SUBJECT).read_text(encoding="utf-8").splitlines()
    lines = [json.loads(line) for line in raw]  # every line whole: one torn line fails here
    assert len(lines) == 2 * WRITERS * EACH
    notes = {(x["writer"], x["i"]) for x in lines if x.get("type") == "note"}
    assert notes == {(w, i) for w in range(WRITERS) for i in range(EACH)}
    assert {Path(a.path).name for a in manifest.read(SUBJECT)} == {p.name for p in folder.iterdir()}
    ok, bad, why = audit_log.verify()
    assert ok, (bad, why)
    assert len(audit_log.read()) == WRITERS * EACH
    cli = subprocess.run([sys.executable, "-m", "workbench.cli", "audit-log", "verify"], env=env,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stdout + cli.stderr


def test_a_manifest_line_cut_by_a_killed_writer_stays_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    manifest._append(SUBJECT, [{"type": "note", "i": 0}])
    with open(manifest.manifest_path(SUBJECT), "a", encoding="utf-8") as fh:
        fh.write('{"type": "note", "i": 1, "cut')  # a writer killed mid-line
    manifest._append(SUBJECT, [{"type": "note", "i": 2}])
    assert [x["i"] for x in manifest.read_lines(SUBJECT)] == [0, 2]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from workbench.backbones.tiny_face import build_pipeline

    folder = tmp_path_factory.mktemp("base") / "tiny"
    build_pipeline(folder, seed=0)
    return folder


def test_erasure_while_a_row_of_the_subject_trains_stops_it_and_leaves_nothing(base, tmp_path, monkeypatch):
    """The row holds the subject's work lock; erase() asks it to stop (it stops at its next step, with a
    checkpoint), waits for it, then deletes: no file written by the row survives, and the run writes no
    results for the erased person."""
    from workbench import paths
    from workbench.errors import Interrupted
    from workbench.lifecycle.erasure import erase
    from workbench.lifecycle.verification import verify_erasure
    from workbench.spec import parse_spec

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    spec = parse_spec({
        "version": 1, "name": "erase-race", "subject": {"demo": "Naomi_Watts"}, "backbone": str(base),
        "device": "cpu", "recipes": [{"name": "none"}, {"name": "lora", "params": {"steps": 200}}],
        "prompts": {"with_identifier": ["a photo of {identifier} {class_noun}"],
                    "without_identifier": ["a photo of a {class_noun}"]},
        "images_per_prompt": 1, "sampling": {"steps": 2, "batch_size": 4},
        "tracking": {"wandb": "off"}, "metrics": {"encoders": ["sface"], "mia_attacks": ["loss"]},
    })
    sid = spec.subject.id
    failure = []

    def slow_steps():
        time.sleep(0.2)  # a long training, as at SD scale
        return False

    def run():
        try:
            run_experiment_local(spec, tmp_path / "run", should_stop=slow_steps)
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)

    from workbench.runner import run_experiment as run_experiment_local

    thread = threading.Thread(target=run)
    thread.start()
    models = paths.subject_dir(sid) / "models"
    deadline = time.time() + 240
    while not any(models.glob("lora-*/loss.jsonl")) and time.time() < deadline and thread.is_alive():
        time.sleep(0.2)
    assert any(models.glob("lora-*/loss.jsonl")), failure  # the lora row is training now
    receipt = erase(sid)  # asks the row to stop, waits for it, deletes
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert failure and isinstance(failure[0], Interrupted), failure
    assert receipt.verification["ok"] and verify_erasure(sid)["ok"]
    assert not paths.subject_dir(sid).exists()
    assert not (tmp_path / "run" / "results.json").exists()
    left = [p for p in (tmp_path / "run").rglob("*") if p.is_file()] if (tmp_path / "run").exists() else []
    assert not left, left
