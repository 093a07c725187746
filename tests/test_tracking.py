"""The W&B mirror: an offline run holds the metrics and nothing private (read back from its .wandb log)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from report_fixtures import fixture_run
from wandb_helpers import offline_paths_outside_staging, read_offline_run, strings_in

from workbench.lifecycle import manifest
from workbench.report.scorecard import scorecard
from workbench.spec import TrackingSpec, parse_spec
from workbench.tracking import WANDB_ENV_DIRS, flat_metrics, safe_config

NAME = "Naomi_Watts"  # the demo person: must never reach W&B
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


@pytest.fixture
def run(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    for var in WANDB_ENV_DIRS:  # the mirror must pick its own folders under $WORKBENCH_HOME/wandb
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    # a run of the demo person, with a local backbone folder whose path holds the name
    backbone = str(home / "models" / f"{NAME}-tiny")
    run_dir, results = fixture_run(home, backbone=backbone)
    spec = parse_spec({"version": 1, "name": "fixture", "subject": {"demo": NAME, "id": "subject-fixture"},
                       "backbone": backbone,
                       "recipes": [{"name": "none"}, {"name": "lora", "params": {"steps": 2}}],
                       "tracking": {"wandb": "offline"}})
    manifest.write_bytes("subject-fixture", "record", run_dir / "spec.json", json.dumps(spec.resolved()).encode())
    return home, run_dir, results, spec


def _values(records: list[dict]) -> dict[str, object]:
    out = {}
    for rec in records:
        for part in ("history", "summary"):
            for item in rec.get(part, {}).get("item", []) + rec.get(part, {}).get("update", []):
                key = "/".join(item["nestedKey"]) if "nestedKey" in item else item.get("key")
                out[key] = json.loads(item["valueJson"])
    return out


def _keys(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | set().union(*(_keys(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_keys(v) for v in obj)) if obj else set()
    return set()


def test_offline_run_holds_metrics_and_no_images_names_paths_or_code(run):
    from workbench.tracking import mirror_to_wandb

    home, run_dir, results, spec = run
    folder = Path(mirror_to_wandb(run_dir, spec))
    assert folder.is_dir() and folder.is_relative_to(home / "wandb")
    records = read_offline_run(folder)
    values = _values(records)
    # every metric of every row, with its interval and sample size
    for row in results["rows"]:
        for key, m in row["metrics"].items():
            prefix = f"{row['label']}/seed{row['seed']}/{key}"
            if m["value"] is None:  # not measured (e.g. TPR at 1% FPR with < 100 non-members): nothing to log
                assert prefix not in values
                continue
            assert values[prefix] == pytest.approx(m["value"]), prefix
            assert values[f"{prefix}/ci_low"] == pytest.approx(m["ci_low"])
    auc = [r["metrics"]["mia.loss.auc"]["value"] for r in results["rows"][:2]]  # none, lora
    lora_auc = auc[1] - auc[0]
    assert values["lora/seed0/mia.loss.auc/delta_vs_none"] == pytest.approx(lora_auc)
    assert values["lora/seed0/risk_grade"] == "SEVERE"
    assert any(r.get("artifact", {}).get("name", "").endswith("-scorecard") for r in records)  # the W&B Table
    # no image files, no media/images folder, no code
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    assert not (folder / "files" / "media" / "images").exists()
    assert not (folder / "files" / "code").exists() and not (folder / "files" / "diff.patch").exists()
    assert not (folder / "files" / "wandb-metadata.json").exists()
    assert not (folder / "files" / "requirements.txt").exists()
    raw = next(folder.glob("run-*.wandb")).read_bytes()
    assert b"codeSaved" not in raw and b"codePath" not in raw
    assert not {"git", "remoteUrl", "commit", "username", "email", "program", "codePath"} & _keys(records)
    assert socket.gethostname() not in {text for _, text in strings_in(records)}  # host is recorded as "workbench"
    # no name and no path: in the log's records (artifact staging paths aside, see tracking.py) ...
    assert offline_paths_outside_staging(records, [home, home.resolve(), Path.home()]) == []
    for key, text in strings_in(records):
        assert "naomi" not in text.lower() and "watts" not in text.lower(), (key, text)
    assert b"Naomi" not in raw and b"naomi" not in raw
    # ... and in every file a sync uploads
    for p in (folder / "files").rglob("*"):
        if p.is_file():
            body = p.read_text(errors="replace")
            assert "naomi" not in body.lower() and str(home) not in body, p
    config = {r["key"] if "key" in r else "/".join(r["nestedKey"]): json.loads(r["valueJson"])
              for rec in records if "run" in rec for r in rec["run"]["config"]["update"]}
    assert config["backbone"].startswith("local-folder-") and config["subject"]["source"] == "demo"
    assert "demo" not in config["subject"] and "photos" not in config["subject"]


def test_every_file_the_mirror_writes_is_registered_and_erased_with_the_subject(run):
    from workbench.tracking import mirror_to_wandb

    home, run_dir, results, spec = run
    folder = Path(mirror_to_wandb(run_dir, spec.tracking))
    sid = results["run"]["subject_id"]
    registered = {manifest.resolve(a.path) for a in manifest.live(sid)}
    for root in (home / "wandb",):
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                assert p.resolve() in registered, p
    assert any(line["path"] == str(folder.relative_to(home)) for line in manifest.folders(sid))
    pointer = json.loads((run_dir / "wandb.json").read_text())
    assert pointer["mode"] == "offline" and pointer["run_id"] in folder.name
    assert manifest.resolve(str((run_dir / "wandb.json").relative_to(home))) in registered
    # and erasure of the subject removes the W&B run with everything else, verifiably
    from workbench.lifecycle.erasure import erase

    receipt = erase(sid)
    assert receipt.verification["ok"], receipt.verification
    assert not folder.exists() and not (run_dir / "wandb.json").exists()
    assert not [p for p in (home / "wandb").rglob("*") if p.is_file() and not p.is_symlink()]


def test_tracking_off_writes_nothing(run):
    from workbench.tracking import mirror_to_wandb

    home, run_dir, _, _ = run
    assert mirror_to_wandb(run_dir, TrackingSpec(wandb="off")) is None
    assert not (home / "wandb").exists() and not (run_dir / "wandb.json").exists()


def test_images_go_to_wandb_only_when_the_spec_opts_in(run):
    from workbench.report.html import write_report
    from workbench.tracking import mirror_to_wandb

    home, run_dir, results, _ = run
    write_report(run_dir)  # the figures are logged too when images are allowed
    folder = Path(mirror_to_wandb(run_dir, TrackingSpec(wandb="offline", log_images=True)))
    images = [p for p in (folder / "files" / "media" / "images").rglob("*") if p.suffix == ".png"]
    assert len(images) >= 3 * 3  # the closest generations of each row (+ the figures)
    raw = next(folder.glob("run-*.wandb")).read_bytes()
    assert str(home).encode() not in raw.replace(str(home / "wandb" / "data").encode(), b"")


def test_config_and_flat_metrics_are_pure_functions_of_the_run_folder(run):
    _, run_dir, results, spec = run
    cfg = safe_config(results, spec.resolved())
    assert cfg["subject_id"] == "subject-fixture" and cfg["n_train"] == 15
    assert "Naomi" not in json.dumps(cfg)
    flat = flat_metrics(results)
    card = scorecard(results)
    assert {k.split("/")[0] for k in flat} == {r.label for r in card.rows}
    assert flat["none/seed0/risk_grade"] == "CONTROL"
