"""The Gradio app end to end: launched in-process on loopback, driven by gradio_client like a browser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from app_helpers import running_app  # noqa: E402

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

DEMO = "Naomi_Watts"


@pytest.fixture(scope="module")
def app_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-home")


@pytest.fixture(scope="module")
def app_scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-scratch")  # plaintext working copies of the encrypted subjects


@pytest.fixture(scope="module")
def app_url(app_home, app_scratch):
    yield from running_app(app_home, {"WANDB_MODE": "offline", "WANDB_DIR": str(app_home / "wandb"),
                                      "WORKBENCH_SCRATCH": str(app_scratch)})


def client(url: str, tmp_path: Path, name: str):
    return gradio_client.Client(url, verbose=False, download_files=str(tmp_path / name))


def run_args(recipes: list[str], steps: int = 2, **overrides) -> dict:
    """The Run button's inputs, cheap: one prompt of each kind, one image each, 2 sampling steps."""
    return {"recipes": recipes, "params_text": "\n".join(f"{r}: {{steps: {steps}}}" for r in recipes),
            "backbone": "tiny-face", "with_identifier": "a photo of {identifier} {class_noun}",
            "without_identifier": "a photo of a {class_noun}", "images_per_prompt": 1, "sampling_steps": 2,
            "encoders": ["sface"], "mia_attacks": ["loss"], "wandb": "offline", "photos": "clean",
            "protect_epsilon": 0.05, "protect_rounds": 1, "api_name": "/run"} | overrides


def test_launch_settings_keep_data_private(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "h" / "gradio"))
    from workbench.app.ui import launch_options

    opts = launch_options()
    assert opts["share"] is False and opts["allowed_paths"] == [] and opts["max_file_size"]
    from workbench.app.ui import DELETE_CACHE

    assert DELETE_CACHE[1] <= 7 * 86400
    blocked = {Path(p).name for p in opts["blocked_paths"]}
    assert {"subjects", "runs", "keys"} <= blocked and "gradio" not in blocked


def test_consent_is_required(app_url, tmp_path):
    c = client(app_url, tmp_path, "c")
    with pytest.raises(Exception, match="consent"):
        c.predict(files=[], demo=DEMO, consent=False, retention_days=30, api_name="/intake")


def test_minimal_comparison_end_to_end_and_sessions_are_isolated(app_url, tmp_path, monkeypatch):
    a, b = client(app_url, tmp_path, "a"), client(app_url, tmp_path, "b")
    summary, crops, rejected = a.predict(files=[], demo=DEMO, consent=True, retention_days=7, api_name="/intake")
    assert "accepted" in summary and len(crops) >= 10, summary
    sid = summary.split("`")[1]
    assert sid.startswith("app-") and DEMO not in sid

    # B sees nothing of A's subject, and cannot run on it
    text_b, rows_b = b.predict(api_name="/data")
    assert "Nothing is stored" in text_b and sid not in text_b
    with pytest.raises(Exception, match="no subject yet"):
        b.predict(**run_args(["lora"]))

    # one recipe fails (forced here): its error is shown, the others go on
    import workbench.runner as runner

    real_train = runner.train_recipe

    def train(spec, entry, *args, **kw):
        if entry.name == "textual_inversion":
            raise RuntimeError("forced failure for the test")
        return real_train(spec, entry, *args, **kw)

    monkeypatch.setattr(runner, "train_recipe", train)
    t0 = time.time()
    job = a.submit(**run_args(["lora", "textual_inversion"]))
    stages = set()
    while not job.done():
        stages |= {p.desc for p in job.status().progress_data or [] if p.desc}
        time.sleep(0.2)
    status = job.result()
    print(f"\nminimal in-app comparison (none + lora, 2 steps): {time.time() - t0:.1f} s; progress: {sorted(stages)}")
    assert "none/seed0`: ok" in status and "lora/seed0`: ok" in status, status
    assert "textual_inversion/seed0`: **failed**: RuntimeError: forced failure for the test" in status
    assert stages, "no progress reached the client"

    table, figures = a.predict(api_name="/results")
    assert "| none (control)" in table and "| lora" in table and "FAILED" in table
    assert figures and all(Path(f["image"]).is_file() for f in figures)
    files, wandb_note = a.predict(api_name="/report")
    assert sorted(Path(f).name for f in files) == ["report.html", "results.json"]
    assert "offline" in wandb_note and "stays on the server" in wandb_note, wandb_note
    assert "$WORKBENCH_HOME" not in wandb_note and "wandb sync" not in wandb_note, wandb_note

    text_a, rows_a = a.predict(api_name="/data")
    kinds = {r[0] for r in rows_a["data"]} if isinstance(rows_a, dict) else {r[0] for r in rows_a}
    assert {"upload", "crop", "generation"} <= kinds, kinds
    text_b, _ = b.predict(api_name="/data")
    assert "Nothing is stored" in text_b
    with pytest.raises(Exception, match="no results yet"):
        b.predict(api_name="/results")
    nothing, _ = b.predict(api_name="/erase")  # a web user is told there is nothing, not a shell command
    assert nothing.startswith("Nothing to erase") and "WORKBENCH_HOME" not in nothing, nothing

    erased, receipt = a.predict(api_name="/erase")
    assert "Verification: **ok**" in erased and receipt["verify_ok"] is True, erased
    text_a, _ = a.predict(api_name="/data")
    assert "Nothing is stored" in text_a


def test_uploads_are_taken_in_or_rejected_with_a_reason_and_erased_from_the_temp_store(app_url, tmp_path):
    from workbench.subjects.demo import demo_photos

    photos = [p for p, _ in demo_photos("Colin_Powell")[:2]]
    junk = tmp_path / "broken.png"
    junk.write_bytes(b"not an image at all")
    c = client(app_url, tmp_path, "u")
    summary, crops, rejected = c.predict(
        files=[gradio_client.handle_file(str(p)) for p in [*photos, junk]], demo=None, consent=True,
        retention_days=1, api_name="/intake")
    assert "2 accepted, 1 rejected" in summary, summary
    rows = rejected["data"] if isinstance(rejected, dict) else rejected
    assert rows[0][0] == "broken.png" and "not a JPEG, PNG or WEBP image" in rows[0][1]
    _, stored = c.predict(api_name="/data")
    stored = stored["data"] if isinstance(stored, dict) else stored
    counts = {r[0]: r[1] for r in stored}
    assert counts["upload"] == 2 and counts["app_temp"] >= 3  # the 3 uploaded copies and 2 crop thumbnails
    with pytest.raises(Exception, match="one subject per session"):
        c.predict(files=[], demo=DEMO, consent=True, retention_days=1, api_name="/intake")
    erased, receipt = c.predict(api_name="/erase")
    assert receipt["verify_ok"] is True, erased
    assert receipt["counts"].get("app_temp", 0) >= 3


def test_app_command_defaults_to_loopback_and_checks_auth():
    import argparse

    from workbench.app.commands import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["app"])
    assert args.host == "127.0.0.1" and args.port is None and args.auth is None
    assert parser.parse_args(["app", "--auth", "ana:s3cret"]).auth == ("ana", "s3cret")
    with pytest.raises(SystemExit):
        parser.parse_args(["app", "--auth", "nopassword"])


def test_bad_recipe_parameters_fail_naming_the_field(app_url, tmp_path):
    c = client(app_url, tmp_path, "p")
    c.predict(files=[], demo=DEMO, consent=True, retention_days=1, api_name="/intake")
    with pytest.raises(Exception, match=r"recipes\[1\] \(lora\)\.params\.rank: Input should be a valid integer"):
        c.predict(**run_args(["lora"], params_text="lora: {rank: eight}"))
    with pytest.raises(Exception, match="unknown recipe 'lorra'"):
        c.predict(**run_args(["lora"], params_text='{"lorra": {"rank": 2}}'))
    with pytest.raises(Exception, match=r"prompts\.with_identifier\[0\].*must contain \{identifier\}"):
        c.predict(**run_args([], with_identifier="a photo of a {class_noun}"))
    c.predict(api_name="/erase")


def test_cancel_stops_a_running_comparison_and_a_later_run_works(app_url, app_home, app_scratch, tmp_path):
    from workbench.lifecycle import sealed

    c = client(app_url, tmp_path, "x")
    summary, _, _ = c.predict(files=[], demo=DEMO, consent=True, retention_days=1, api_name="/intake")
    sid = summary.split("`")[1]
    assert c.predict(api_name="/cancel_run") == "No comparison of yours is running."
    job = c.submit(**run_args(["lora"], steps=400))  # far longer than the test waits
    models = app_home / "subjects" / sid / "models"

    def lora_steps() -> int:  # the app encrypts at rest: the running training writes its plaintext working copy
        logs = list(app_scratch.glob(f"*/*/{sid}/models/lora-*/loss.jsonl"))
        return len(logs[0].read_text().splitlines()) if logs else 0

    while lora_steps() < 3:  # cancel in the middle of LoRA training
        assert not job.done(), job.result()
        time.sleep(0.1)
    assert "Cancelling" in c.predict(api_name="/cancel_run")
    status = job.result(timeout=120)
    assert status.startswith("**Cancelled** during"), status
    lora = next(models.glob("lora-*"))
    assert all(sealed.is_sealed(f) for f in lora.rglob("*") if f.is_file())  # ciphertext at rest
    steps = len(sealed.decrypt_bytes(sid, lora / "loss.jsonl").splitlines())
    assert 3 <= steps < 400 and not (lora / "artifact").exists(), "training went on after the cancel"
    assert list((lora / "checkpoint").glob("step-*")), "a cancelled training keeps a checkpoint to resume from"
    with pytest.raises(Exception, match="no results yet"):  # nothing of the cancelled run is shown as a result
        c.predict(api_name="/results")
    status = c.predict(**run_args([], wandb="off"))  # the control alone: a new run in the same session works
    assert "Run finished" in status and "none/seed0`: ok" in status, status
    table, _ = c.predict(api_name="/results")
    assert "| none (control)" in table and "| lora" not in table
    c.predict(api_name="/erase")


def test_a_recipe_trains_on_anti_dreambooth_protected_photos(app_url, tmp_path):
    c = client(app_url, tmp_path, "protected")
    c.predict(files=[], demo=DEMO, consent=True, retention_days=1, api_name="/intake")
    status = c.predict(**run_args(["lora"], photos="protected", protect_epsilon=0.04, wandb="off"))
    assert "lora-protected/seed0`: ok" in status and "`lora/seed0`" not in status, status
    table, _ = c.predict(api_name="/results")
    assert "| lora-protected" in table
    c.predict(api_name="/erase")


def test_closing_an_anonymous_session_erases_its_subject_with_a_receipt(app_url, app_home, tmp_path):
    from workbench.lifecycle import audit_log, verification

    c = client(app_url, tmp_path, "gone")
    sid = c.predict(api_name="/whoami").split("`")[1]
    assert sid.startswith("app-s-")
    c.predict(files=[], demo=DEMO, consent=True, retention_days=30, api_name="/intake")
    assert (app_home / "subjects" / sid).is_dir()
    c.close()  # like closing the browser tab: the heartbeat stops, gradio runs demo.unload
    deadline = time.time() + 60
    while (app_home / "subjects" / sid).exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not (app_home / "subjects" / sid).exists()
    erased = [e for e in audit_log.read() if e["action"] == "erase" and e.get("subject") == sid]
    assert erased and erased[-1]["actor"] == sid and erased[-1]["ok"] == 1
    receipts = verification.receipts_for(sid)
    assert receipts and receipts[-1]["receipt_id"] == erased[-1]["receipt"]


def test_the_run_tab_runs_on_ray_with_the_same_rows(app_url, tmp_path):
    """Run on: ray — a local Ray on 127.0.0.1 runs one task per row; the status names its final counts and the
    rows are those of a local run (the same recipes, each ok)."""
    pytest.importorskip("ray")
    c = client(app_url, tmp_path, "ray")
    summary, _, _ = c.predict(files=[], demo=DEMO, consent=True, retention_days=1, api_name="/intake")
    assert "accepted" in summary, summary
    status = c.predict(**run_args(["lora"], executor="ray"))
    assert "all ok" in status and "On ray: rows: 2 done, 0 running, 0 failed, 0 left (of 2)" in status, status
    assert "`none/seed0`: ok" in status and "`lora/seed0`: ok" in status, status
    erased, receipt = c.predict(api_name="/erase")
    assert receipt["verify_ok"] is True and receipt["key_destroyed"] is True, erased
