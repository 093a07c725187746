"""`workbench run`: intake → recipes → generation on a real (random-weights) tiny pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.backbones.tiny_face import build_pipeline
from workbench.cli import main
from workbench.generate import read_records
from workbench.lifecycle import manifest
from workbench.runner import run_experiment
from workbench.spec import parse_spec


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "tiny"
    build_pipeline(folder, seed=0)
    return folder


def _spec(base: Path, **over) -> dict:
    spec = {
        "version": 1, "name": "smoke", "subject": {"demo": "Naomi_Watts"}, "backbone": str(base),
        "device": "cpu",
        "recipes": [
            {"name": "none"},
            {"name": "lora", "params": {"steps": 2}},
            {"name": "textual_inversion", "params": {"steps": 2}},
        ],
        "prompts": {"with_identifier": ["a photo of {identifier} {class_noun}"],
                    "without_identifier": ["a photo of a {class_noun}"]},
        "images_per_prompt": 1, "sampling": {"steps": 2, "batch_size": 4},
        "tracking": {"wandb": "off"}, "metrics": {"encoders": ["sface"], "mia_attacks": ["loss"]},
    }
    spec.update(over)
    return spec


def test_run_trains_every_recipe_and_writes_generations_with_records(base, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    spec = parse_spec(_spec(base))
    outcome = run_experiment(spec, tmp_path / "run")
    assert outcome.ok, outcome.status
    assert set(outcome.status) == {"none/seed0", "lora/seed0", "textual_inversion/seed0"}
    for label in ("none", "lora", "textual_inversion"):
        records = read_records(tmp_path / "run" / "generations" / label / "seed0")
        assert {r.group for r in records} == {"identifier", "no_identifier"}
        for r in records:
            assert r.recipe == label and r.steps == 2 and len(r.sha256) == 64
            assert (tmp_path / "run" / "generations" / label / "seed0" / r.file).exists()
    # textual inversion prompts use its own placeholder token
    ti = read_records(tmp_path / "run" / "generations" / "textual_inversion" / "seed0")
    assert any("<sks>" in r.prompt for r in ti)
    # results.json: one row per recipe (control first), every metric with its interval and n
    from workbench.results import validate_results

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    validate_results(results)
    assert [r["label"] for r in results["rows"]][0] == "none"
    for row in results["rows"]:
        for key in ("identity.fdfr", "memorization.extraction_rate", "mia.loss.auc"):
            m = row["metrics"][key]
            assert set(m) >= {"value", "ci_low", "ci_high", "n"}
    assert (tmp_path / "run" / "report.html").stat().st_size > 1000
    resolved = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert resolved["recipes"][1]["params"]["steps"] == 2
    # every file in the run folder is registered for erasure
    registered = {a.path for a in manifest.read(outcome.subject_id)}
    home = tmp_path / "home"
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            rel = str(f.resolve().relative_to(home)) if f.resolve().is_relative_to(home) else str(f.resolve())
            assert rel in registered, f

    # a rerun (here from the command line) reuses models and images: nothing is retrained or regenerated;
    # it ends with the compact summary (recipe, fidelity, strongest leakage signal, grade) and the report path
    before = {f: f.stat().st_mtime_ns for f in (tmp_path / "run" / "generations").rglob("*.png")}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_spec(base)))
    assert main(["run", str(spec_file), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "strongest leakage signal" in out and "none (control)" in out and "CONTROL" in out
    assert f"report: {tmp_path / 'run' / 'report.html'}" in out
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "run" / "generations").rglob("*.png")} == before
    assert main(["run", str(spec_file), "--out", str(tmp_path / "run"), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["status"]) == set(outcome.status)


def test_failed_recipe_is_recorded_and_the_others_go_on(base, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    spec = parse_spec(_spec(base, recipes=[
        {"name": "none"}, {"name": "lora", "params": {"steps": 2}},
    ]))
    # a corrupted LoRA job folder (a different job already lives there) makes that recipe fail
    from workbench.recipes.engine import TrainJob
    from workbench.runner import prepare_subject
    subject, _, _ = prepare_subject(spec, 64)
    job = TrainJob(base=spec.backbone, train_images=subject.train, holdout_images=subject.holdout,
                   subject_id=subject.id, seed=0, resolution=subject.resolution)
    bad = job.in_store("lora", spec.recipes[1].typed_params()).out_dir
    bad.mkdir(parents=True)
    (bad / "job.json").write_text(json.dumps({"recipe": "dreambooth", "params": {}}))
    outcome = run_experiment(spec, tmp_path / "run")
    assert outcome.status["none/seed0"]["ok"]
    assert not outcome.status["lora/seed0"]["ok"] and outcome.status["lora/seed0"]["error"]
    assert (tmp_path / "run" / "errors.log").exists()


def test_privacy_recipes_report_epsilon_protection_and_training_options(base, tmp_path, monkeypatch):
    """The privacy-recipes experiment in miniature: DP-SGD LoRA, LoRA on protected photos, early stopping and
    a step cap; results carry the accountant's ε and the protection's cost, and the report shows both."""
    import numpy as np
    from PIL import Image
    from test_report import check_traceable

    from workbench.recipes import dp_lora
    from workbench.runner import prepare_subject, protect_photos

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    protection = {"method": "aspl", "epsilon": 0.05, "rounds": 2, "pgd_steps": 6, "surrogate_steps": 1}
    spec = parse_spec(_spec(base, subject={"demo": "Naomi_Watts", "protection": protection}, recipes=[
        {"name": "none"},
        {"name": "dp_lora", "params": {"steps": 3, "target_epsilon": 8.0}},
        {"name": "lora", "params": {"steps": 2}},
        {"name": "lora", "photos": "protected", "params": {"steps": 2}},
        {"name": "lora", "label": "lora-early", "params": {"steps": 4, "early_stopping_patience": 1, "eval_every": 1}},
        {"name": "lora", "label": "lora-capped", "params": {"steps": 50, "max_steps_per_photo": 0.25}},
    ]))
    outcome = run_experiment(spec, tmp_path / "run")
    assert outcome.ok, outcome.status
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    rows = {r["label"]: r for r in results["rows"]}
    privacy = rows["dp_lora"]["train"]["details"]["privacy"]
    n = results["run"]["n_train"]
    assert privacy["epsilon"] == pytest.approx(
        dp_lora.epsilon(privacy["noise_multiplier"], 4 / n, 3, 1e-5), abs=1e-4)
    assert privacy["epsilon"] <= 8.0
    prot = rows["lora-protected"]["train"]["details"]["protection"]
    assert rows["lora-protected"]["train"]["photos"] == "protected"
    assert set(prot["psnr_db"]) >= {"value", "ci_low", "ci_high", "n"} and prot["psnr_db"]["n"] == n
    assert prot["linf_levels"] <= prot["epsilon_levels"] == 6  # floor(0.05 × 127.5)
    # the base's loss on clean vs protected photos is reported (whether it rises is tested on the trained
    # tiny-face in test_intake.py: this random-weights base hardly depends on its input)
    assert np.isfinite(prot["base_loss_protected"]) and np.isfinite(prot["base_loss_clean"])
    early = rows["lora-early"]["train"]["details"]["early_stopping"]
    assert early["history"] and early["best_step"] >= 1
    assert rows["lora-capped"]["train"]["steps"] == int(0.25 * n)
    # the stored protected photos stay within the bound, pixel by pixel, and are registered for erasure
    subject, _, _ = prepare_subject(spec, 64)
    protected = protect_photos(spec, subject, "cpu")
    registered = {a.path for a in manifest.read(subject.id)}
    for clean, prot_path in zip(subject.train, protected.paths, strict=True):
        a = np.asarray(Image.open(clean).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(prot_path).convert("RGB"), dtype=np.int16)
        assert np.abs(a - b).max() <= 6 and (a != b).any()
        assert str(prot_path.relative_to(tmp_path / "home")) in registered
    # the report's training section shows all of it, every number traced to results.json
    text = (tmp_path / "run" / "report.html").read_text()
    assert "Training and defences" in text and "What it does not" in text
    check_traceable(text, results, json.loads((tmp_path / "run" / "spec.json").read_text()))
    # a protected row is compared with its clean twin (same recipe, params, seed) where both have an ISM
    # (the random-weights base draws no faces, so give both rows one here)
    from workbench.report.html import render_report

    for label, ism in (("lora", 0.30), ("lora-protected", 0.25)):
        rows[label]["metrics"]["identity.ism_holdout"] |= {"value": ism, "ci_low": ism - 0.05, "ci_high": ism + 0.05}
    text = render_report(results, tmp_path / "run")
    assert "vs <span" in text and "on clean photos" in text
    check_traceable(text, results)
    assert any("early stopping selects the model" in note for note in results["meta"]["notes"])


def test_bad_spec_fails_before_work_naming_the_field(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("version: 1\nname: x\nsubject: {demo: Naomi_Watts}\nrecipes:\n"
                    "  - name: none\n  - name: lora\n    params: {rank: eight}\n")
    res = subprocess.run([sys.executable, "-m", "workbench.cli", "run", str(spec)], capture_output=True,
                         text=True, env={"WORKBENCH_HOME": str(tmp_path / "home"), "PATH": "/usr/bin"})
    assert res.returncode == 2
    assert "recipes[1].params.rank" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "home" / "subjects").exists()  # nothing was started


def test_erasure_after_a_real_tiny_face_run_leaves_nothing_in_any_store(tmp_path, monkeypatch):
    """A quickstart-shaped run on the shipped tiny-face with W&B offline, then erase + verify."""
    from workbench.lifecycle.erasure import erase
    from workbench.lifecycle.stores import stores
    from workbench.lifecycle.verification import verify_erasure

    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.delenv(var, raising=False)
    spec = parse_spec(_spec("tiny-face", recipes=[{"name": "none"}, {"name": "lora", "params": {"steps": 2}}],
                            tracking={"wandb": "offline"}, metrics={"encoders": ["sface"], "mia_attacks": ["pia"]}))
    outcome = run_experiment(spec)  # default run folder, inside the data root
    assert outcome.ok, outcome.status
    wandb_files = [p for p in stores()["wandb"].rglob("*") if p.is_file()]
    assert wandb_files, "the offline W&B mirror wrote nothing"
    assert not any(p.suffix.lower() in (".png", ".jpg", ".jpeg") for p in wandb_files)
    erase(outcome.subject_id)
    check = verify_erasure(outcome.subject_id)
    assert check["ok"], check["residual"]
    assert not outcome.run_dir.exists()


def test_a_cohort_trains_one_model_per_person_and_pools_the_membership_evidence(base, tmp_path, monkeypatch):
    """Two LFW people (outside the demo list), random splits per person, one model per person per recipe;
    results.json pools the calibrated scores over people, the report shows the cohort first, and erasing one
    person deletes every run file that holds their data."""
    from workbench.lifecycle.erasure import erase
    from workbench.lifecycle.verification import verify_erasure

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    spec = parse_spec(_spec(base, subject=None, cohort={"people": ["Jason_Kidd", "Ian_Thorpe"], "members": 5},
                            recipes=[{"name": "none"}, {"name": "lora", "params": {"steps": 2}}],
                            metrics={"encoders": ["sface"], "mia_attacks": ["loss", "pia"]}))
    outcome = run_experiment(spec, tmp_path / "run")
    assert outcome.ok, outcome.status
    people = [s.id for s in spec.subjects()]
    assert set(outcome.status) == {f"{p}/{label}/seed0" for p in people for label in ("none", "lora")}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["run"]["subjects"] == people and {r["subject"] for r in results["rows"]} == set(people)
    splits = json.loads((tmp_path / "run" / "split.json").read_text())
    for person in people:
        assert splits[person]["members"] == 5 and splits[person]["method"] == "random"
        assert set(splits[person]["member_sha256"]).isdisjoint(splits[person]["non_member_sha256"])
    pooled = results["pooled"]["lora/seed0"]["metrics"]
    n_members = sum(splits[p]["members"] for p in people)
    n_non = sum(splits[p]["non_members"] for p in people)
    for attack in ("loss", "pia"):
        m = pooled[f"mia.{attack}.auc"]
        assert m["n"] == [n_members, n_non] and m["n_subjects"] == 2 and 0 < m["p_value"] <= 1
        assert m["ci_low"] <= m["value"] <= m["ci_high"]
    control = results["pooled"]["none/seed0"]["metrics"]["mia.loss.auc"]
    assert control["value"] == 0.5 and control["p_value"] == 1.0  # the base against itself: exactly chance
    text = (tmp_path / "run" / "report.html").read_text()
    assert text.index("Cohort: every person pooled") < text.index('id="scorecard"')
    erase(people[0])  # one person asks for erasure: every file holding their data goes
    assert verify_erasure(people[0])["ok"]
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "run" / "report.html").exists()
