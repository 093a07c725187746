"""`workbench compare`: recipes aggregated across runs, subjects and seeds, with intervals over units."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from report_fixtures import fixture_run

from workbench import compare
from workbench.lifecycle import manifest


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _entry(agg, label, metric):
    return next(e for e in agg["table"] if e["label"] == label and e["metric"] == metric)


def test_one_subject_aggregates_over_run_and_seed_rows(home):
    _, results = fixture_run(home, seeds=(0, 1))
    agg = compare.aggregate([results], n_resamples=200)
    e = _entry(agg, "lora", "mia.loss.auc")
    values = [r["metrics"]["mia.loss.auc"]["value"] for r in results["rows"] if r["label"] == "lora"]
    assert e["unit"] == "run-seed" and e["n"] == 2 and e["n_rows"] == 2
    assert e["mean"] == pytest.approx(np.mean(values), abs=1e-6)
    assert e["ci_low"] <= e["mean"] <= e["ci_high"]
    controls = [r["metrics"]["mia.loss.auc"]["value"] for r in results["rows"] if r["label"] == "none"]
    assert e["delta_vs_none"]["mean"] == pytest.approx(np.mean(values) - np.mean(controls), abs=1e-6)
    assert "delta_vs_none" not in _entry(agg, "lora", "identity.ism_holdout")
    assert list(agg["recipes"])[0] == "none"  # the control first


def test_several_subjects_make_the_subject_the_unit(home):
    runs = [fixture_run(home, subject_id=f"subject-{k}", seeds=(0, 1))[1] for k in range(3)]
    agg = compare.aggregate(runs, n_resamples=200)
    e = _entry(agg, "lora", "identity.ism_holdout")
    assert e["unit"] == "subject" and e["n"] == 3 and e["n_rows"] == 6
    assert agg["recipes"]["lora"]["subjects"] == 3


def test_failed_rows_and_unmeasured_values_are_left_out_and_counted(home):
    _, results = fixture_run(home, failed=(("ti", 0),))
    agg = compare.aggregate([results], n_resamples=200)
    assert agg["recipes"]["ti"]["failed"] == 1
    e = _entry(agg, "ti", "mia.loss.auc")
    assert e["mean"] is None and e["n"] == 0
    single = _entry(agg, "lora", "mia.loss.auc")
    assert single["n"] == 1 and single["ci_low"] is None  # one unit: no interval, never a zero-width one


def test_outputs_markdown_json_and_a_self_contained_page_registered_with_each_subject(home, capsys):
    a, _ = fixture_run(home, subject_id="subject-a")
    b, _ = fixture_run(home, subject_id="subject-b")
    out = home / "runs" / "comparison.html"
    parser = _parser()
    args = parser.parse_args(["compare", str(a), str(b), "--out", str(out), "--resamples", "100"])
    assert args.func(args) == 0
    md = capsys.readouterr().out
    assert md.startswith("| metric | none | lora | ti |") and "MIA AUC (loss)" in md and "Δ" in md
    page = out.read_text()
    assert "<script" not in page and not re.search(r"(src|href)=", page) and "https://" not in page
    for sid in ("subject-a", "subject-b"):
        assert str(out.relative_to(home)) in {x.path for x in manifest.live(sid)}
    args = parser.parse_args(["compare", str(a), "--json", "--resamples", "100"])
    args.func(args)
    data = json.loads(capsys.readouterr().out)
    assert {e["metric"] for e in data["table"]} >= {"mia.loss.auc", "identity.fdfr"}


def _parser():
    from workbench.cli import build_parser

    return build_parser()
