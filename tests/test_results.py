"""results.json as typed records (workbench/results.py): every problem named by its path, forward-compatible
extra keys, schema 1 files upgraded in memory and rendered by the report, newer schemas refused clearly."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
from report_fixtures import fixture_run

from workbench import results as results_schema
from workbench.errors import UserError
from workbench.lifecycle import manifest
from workbench.metrics import registry
from workbench.report.html import write_report
from workbench.results import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    Metric,
    Results,
    ResultsError,
    load_results,
    load_run,
    parse_results,
    validate_results,
)

PROTECTION = {"method": "anti_dreambooth_aspl", "params": {"epsilon": 0.05, "steps": 4}, "linf": 0.0498,
              "psnr_db": {"value": 31.5, "ci_low": 30.9, "ci_high": 32.1, "n": 15}, "base_loss": 0.21}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """One fixture run folder shared by the tests that only read it: (home, run_dir, results)."""
    home = tmp_path_factory.mktemp("results") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(home))
        run_dir, results = fixture_run(home)
    return home, run_dir, results


@pytest.fixture
def results(fixture) -> dict:
    return copy.deepcopy(fixture[2])


def problems_of(data) -> list[str]:
    with pytest.raises(ResultsError) as err:
        validate_results(data)
    return err.value.problems


def test_a_valid_file_passes_and_is_returned_as_the_same_dict(fixture, results):
    _, run_dir, _ = fixture
    assert results["schema"] == SCHEMA_VERSION == 2
    assert validate_results(results) is results  # the current schema: the same plain dict, unchanged
    loaded, spec = load_run(run_dir)
    assert loaded == results and spec is None
    typed = parse_results(results)
    assert isinstance(typed, Results) and typed.rows[0].recipe == results_schema.CONTROL_RECIPE == "none"
    assert isinstance(typed.rows[1].metrics["mia.loss.auc"], Metric)
    assert typed.rows[1].train.details["steps"] == {"planned": 2, "cap": None, "run": 2}
    assert set(registry.required_keys()) <= set(typed.rows[1].metrics)


def test_unknown_keys_are_allowed_where_the_schema_is_open(results):
    results["run"]["gpu"] = "H100"
    results["rows"][1]["raw_scores"] = {"loss": [0.1, 0.2]}
    results["rows"][1]["train"]["details"]["some_future_defence"] = {"strength": 3, "anything": [1, 2]}
    results["rows"][1]["train"]["lr_schedule"] = "cosine"
    results["rows"][1]["nearest"][0]["ssim"] = 0.4
    results["rows"][1]["metrics"]["extraction.finextract.rate"] = {"value": 0.1, "ci_low": 0.0, "ci_high": 0.3,
                                                                   "n": 15, "note": "FineXtract", "p_value": 0.04}
    results["meta"]["metrics"]["identity.fdfr"]["unit"] = "generations"
    results["meta"]["encoder"]["model_sha256"] = "ab" * 32
    results["meta"]["cohort"] = {"size": 3}
    results["rows"][0]["metrics"]["mia.loss.auc"] = {"value": None, "ci_low": None, "ci_high": None, "n": 0,
                                                     "note": "not measured"}
    results["rows"][1]["train"] = None  # a row that failed before training, or an untrained one
    assert validate_results(results) is results


# (mutation, expected problem): each kind of problem, named by its path
CASES = {
    "metric field type": (lambda d: d["rows"][1]["metrics"]["mia.loss.auc"].update(ci_low="x"),
                          "rows[1].metrics['mia.loss.auc'].ci_low: expected a number or null, got 'x'"),
    "missing required metric": (lambda d: d["rows"][2]["metrics"].pop("memorization.gap"),
                                "rows[2].metrics: missing 'memorization.gap' (a metric that was not measured"),
    "bad metric key": (lambda d: d["rows"][0]["metrics"].update({"Bad key": d["rows"][0]["metrics"]["identity.fdfr"]}),
                       "rows[0].metrics: 'Bad key' is not a metric key like 'mia.loss.auc'"),
    "null value with n > 0": (lambda d: d["rows"][0]["metrics"]["identity.fdfr"].update(value=None, n=4),
                              "rows[0].metrics['identity.fdfr'].value: is null but n = 4; a null value means "
                              "nothing was measured (n = 0)"),
    "interval upside down": (lambda d: d["rows"][0]["metrics"]["identity.fdfr"].update(ci_low=0.9, ci_high=0.1),
                             "rows[0].metrics['identity.fdfr']: ci_low 0.9 is above ci_high 0.1"),
    "bad n": (lambda d: d["rows"][0]["metrics"]["identity.fdfr"].update(n=-1),
              "rows[0].metrics['identity.fdfr'].n: expected a count ≥ 0 or [n_members, n_nonmembers], got -1"),
    "bad n pair": (lambda d: d["rows"][0]["metrics"]["mia.loss.auc"].update(n=[15, 5, 1]),
                   "rows[0].metrics['mia.loss.auc'].n: expected a count ≥ 0 or [n_members, n_nonmembers], "
                   "got [15, 5, 1]"),
    "infinite number": (lambda d: d["rows"][0]["metrics"]["identity.fdfr"].update(ci_high=float("inf")),
                        "rows[0].metrics['identity.fdfr'].ci_high: expected a number or null, got inf"),
    "unknown key in a metric": (lambda d: d["rows"][0]["metrics"]["identity.fdfr"].update(stderr=0.1),
                                "rows[0].metrics['identity.fdfr']: unknown key 'stderr'; expected value, ci_low, "
                                "ci_high, n, note, p_value"),
    "p-value out of range": (lambda d: d["rows"][0]["metrics"]["mia.loss.auc"].update(p_value=1.5),
                             "rows[0].metrics['mia.loss.auc'].p_value: expected a probability in [0, 1] or null"),
    "metric not an object": (lambda d: d["rows"][0]["metrics"].update({"identity.fdfr": 0.1}),
                             "rows[0].metrics['identity.fdfr']: expected an object with keys value, ci_low, "
                             "ci_high, n; got float"),
    "curve lengths": (lambda d: d["rows"][0]["roc"]["loss"].update(fpr=[0.0, 1.0], tpr=[1.0]),
                      "rows[0].roc.loss: fpr has 2 points but tpr has 1"),
    "curve range": (lambda d: d["rows"][0]["roc"]["loss"].update(fpr=[0.0, 2.0]),
                    "rows[0].roc.loss.fpr: expected a list of numbers in [0, 1], got [0.0, 2.0]"),
    "relative generation path": (lambda d: d["rows"][1]["nearest"][0].update(generated="../../etc/passwd"),
                                 "rows[1].nearest[0].generated: must be relative to the run folder, "
                                 "got '../../etc/passwd'"),
    "absolute generation path": (lambda d: d["rows"][1]["nearest"][0].update(generated="/etc/passwd"),
                                 "rows[1].nearest[0].generated: must be relative to the run folder"),
    "nearest l2": (lambda d: d["rows"][1]["nearest"][0].update(l2=None),
                   "rows[1].nearest[0].l2: expected a finite number, got None"),
    "duplicate row": (lambda d: d["rows"].append(copy.deepcopy(d["rows"][0])),
                      "rows[3]: label 'none' with seed 0 already in rows[0]"),
    "failed row without error": (lambda d: d["rows"][1].update(status="failed", error=""),
                                 "rows[1].error: a failed row says why (error is empty)"),
    "status": (lambda d: d["rows"][1].update(status="done"),
               "rows[1].status: expected one of ok, failed, got 'done'"),
    "seed": (lambda d: d["rows"][1].update(seed=True), "rows[1].seed: expected an integer, got True"),
    "missing row key": (lambda d: d["rows"][1].pop("nearest"), "rows[1]: missing key 'nearest'"),
    "train not an object": (lambda d: d["rows"][1].update(train=[2, 0.5]),
                            "rows[1].train: expected an object with keys steps, seconds, final_loss; got list"),
    "train number": (lambda d: d["rows"][1]["train"].update(seconds="fast"),
                     "rows[1].train.seconds: expected a number or null, got 'fast'"),
    "flat details (schema 1 layout)": (lambda d: d["rows"][1]["train"]["details"].update(steps_run=2),
                                       "rows[1].train.details.steps_run: expected an object (a training record "
                                       "of this kind), got 2"),
    "distances": (lambda d: d["rows"][1].update(distances={"train": [0.1, "far"], "holdout": []}),
                  "rows[1].distances.train: expected a list of numbers, got [0.1, 'far']"),
    "no control": (lambda d: d.update(rows=[r for r in d["rows"] if r["recipe"] != "none"]),
                   "rows: no row for the 'none' control"),
    "no rows": (lambda d: d.update(rows=[]), "rows: expected a non-empty list, one row per (recipe label, seed)"),
    "run key missing": (lambda d: d["run"].pop("device"), "run: missing key 'device'"),
    "created": (lambda d: d["run"].update(created="yesterday"),
                "run.created: expected an ISO 8601 time (e.g. 2026-11-26T10:00:00+00:00), got 'yesterday'"),
    "seeds": (lambda d: d["run"].update(seeds=[0, "1"]), "run.seeds: expected a list of integers, got [0, '1']"),
    "counts": (lambda d: d["run"].update(n_train=-3), "run.n_train: expected a count ≥ 0, got -3"),
    "versions": (lambda d: d["run"].update(versions="0.1"), "run.versions: expected an object, got '0.1'"),
    "direction": (lambda d: d["meta"]["metrics"]["identity.fdfr"].update(direction="up"),
                  "meta.metrics['identity.fdfr'].direction: expected one of higher_is_better, lower_is_better, "
                  "got 'up'"),
    "encoder": (lambda d: d["meta"]["encoder"].update(threshold="high"),
                "meta.encoder.threshold: expected a number or null, got 'high'"),
    "notes": (lambda d: d["meta"].update(notes="one note"), "meta.notes: expected a list of strings, got 'one note'"),
    "meta metrics": (lambda d: d["meta"].update(metrics=[]), "meta.metrics: expected an object, got []"),
    "top-level key": (lambda d: d.update(extra=1),
                      "(top level): unknown key 'extra'; expected schema, run, rows, meta"),
    "top-level key missing": (lambda d: d.pop("meta"), "(top level): missing key 'meta'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_of_problem_is_named_by_its_path(results, case):
    mutate, expected = CASES[case]
    mutate(results)
    found = problems_of(results)
    assert any(p.startswith(expected) for p in found), found


def test_several_problems_are_reported_together(results):
    bad = copy.deepcopy(results)
    bad["rows"][1]["metrics"]["mia.loss.auc"]["ci_low"] = "x"
    del bad["rows"][2]["metrics"]["memorization.gap"]
    bad["rows"][1]["nearest"][0]["generated"] = "../../etc/passwd"
    bad["run"]["created"] = "yesterday"
    bad["meta"]["metrics"]["identity.fdfr"]["direction"] = "up"
    bad["rows"].append(copy.deepcopy(bad["rows"][0]))  # a duplicate, beside rows with problems of their own
    with pytest.raises(ResultsError) as err:
        validate_results(bad, "runs/x/results.json")
    msg = str(err.value)
    assert msg.startswith("runs/x/results.json: 6 problems in results.json (schema 2, workbench/results.py)\n")
    assert "rows[1].metrics['mia.loss.auc'].ci_low: expected a number or null, got 'x'" in msg
    assert "rows[2].metrics: missing 'memorization.gap'" in msg
    assert "rows[1].nearest[0].generated: must be relative to the run folder" in msg
    assert "run.created" in msg and "meta.metrics['identity.fdfr'].direction" in msg
    assert "rows[3]: label 'none' with seed 0 already in rows[0]" in msg
    assert len(err.value.problems) == 6
    assert isinstance(err.value, UserError)  # the CLI shows the message, not a traceback


def test_path_format():
    path = results_schema.path
    assert path(("rows", 2, "metrics", "mia.loss.auc", "ci_low")) == "rows[2].metrics['mia.loss.auc'].ci_low"
    assert path(("rows", 0, "roc", "loss", "fpr")) == "rows[0].roc.loss.fpr"
    assert path(("rows", 0, "metrics", "Bad key", "[key]")) == "rows[0].metrics"
    assert path(()) == "(top level)"


def as_schema_1(results: dict, protected_row: int) -> dict:
    """The same results as a schema-1 file: flat step counts in details, protection beside them."""
    v1 = copy.deepcopy(results)
    v1["schema"] = 1
    for row in v1["rows"]:
        if row["train"]:
            steps = row["train"]["details"].pop("steps")
            row["train"]["details"] |= {"steps_planned": steps["planned"], "steps_cap": steps["cap"],
                                        "steps_run": steps["run"]}
    v1["rows"][protected_row]["train"]["photos"] = "protected"
    v1["rows"][protected_row]["train"]["protection"] = copy.deepcopy(PROTECTION)
    v1["rows"][protected_row]["train"]["details"]["early_stopping"] = {
        "patience": 2, "eval_every": 1, "best_step": 1, "best_holdout_loss": 0.2, "stopped_at": 2,
        "stopped_early": False, "history": [[1, 0.2], [2, 0.25]]}
    return v1


def test_a_schema_1_file_is_upgraded_in_memory(results):
    v1 = as_schema_1(results, protected_row=1)
    before = copy.deepcopy(v1)
    up = validate_results(v1, "old/results.json")
    assert v1 == before  # the caller's data is not changed
    assert up["schema"] == SCHEMA_VERSION
    train = up["rows"][1]["train"]
    assert "protection" not in train and train["details"]["protection"] == PROTECTION
    assert train["details"]["steps"] == {"planned": 2, "cap": None, "run": 2}
    assert not {"steps_planned", "steps_cap", "steps_run"} & set(train["details"])
    assert train["details"]["early_stopping"] == before["rows"][1]["train"]["details"]["early_stopping"]
    assert up["rows"][0]["train"]["details"] == {"steps": {"planned": 0, "cap": None, "run": 0}}
    for old, new in zip(before["rows"], up["rows"], strict=True):  # everything else unchanged
        assert {k: v for k, v in old.items() if k != "train"} == {k: v for k, v in new.items() if k != "train"}
    assert {k: v for k, v in before.items() if k not in ("rows", "schema")} == \
        {k: v for k, v in up.items() if k not in ("rows", "schema")}


def test_a_schema_1_run_folder_is_read_and_rendered_by_the_report(tmp_path, monkeypatch, caplog):
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    run_dir, results = fixture_run(home, subject_id="subject-v1")
    v1 = as_schema_1(results, protected_row=1)
    file = Path(run_dir) / RESULTS_FILE
    manifest.write_bytes("subject-v1", "record", file, (json.dumps(v1, indent=1) + "\n").encode())
    on_disk = file.read_bytes()
    with caplog.at_level(logging.INFO, logger="workbench.results"):
        loaded = load_results(run_dir)
    assert loaded["schema"] == SCHEMA_VERSION and loaded["rows"][1]["train"]["details"]["protection"] == PROTECTION
    assert any("schema 1" in r.getMessage() and f"read as schema {SCHEMA_VERSION}" in r.getMessage()
               for r in caplog.records)
    text = write_report(run_dir).read_text(encoding="utf-8")
    assert file.read_bytes() == on_disk  # reading never rewrites the run folder
    assert "anti_dreambooth_aspl" in text and 'data-src="/rows/1/train/details/protection/linf"' in text
    assert 'data-src="/rows/1/train/details/steps/run"' in text
    assert 'data-src="/rows/1/train/details/early_stopping/best_step"' in text


def test_a_schema_1_file_with_problems_says_it_was_read_as_schema_2(results):
    v1 = as_schema_1(results, protected_row=1)
    v1["rows"][1]["metrics"]["mia.loss.auc"]["ci_low"] = "x"
    with pytest.raises(ResultsError, match=r"1 problem in results.json \(schema 1, read as schema 2"):
        validate_results(v1)


def test_a_newer_schema_fails_clearly(fixture, results, tmp_path):
    results["schema"] = 99
    with pytest.raises(ResultsError) as err:
        validate_results(results, "runs/new/results.json")
    msg = str(err.value)
    assert "schema 99" in msg and "newer workbench" in msg and f"schemas 1 to {SCHEMA_VERSION}" in msg
    assert "Install a newer workbench" in msg
    (tmp_path / RESULTS_FILE).write_text(json.dumps(results))
    with pytest.raises(ResultsError, match="schema 99, written by a newer workbench"):
        load_results(tmp_path)


def test_a_file_without_schema_or_with_a_bad_one_fails_clearly(results):
    del results["schema"]
    with pytest.raises(ResultsError, match="has no 'schema' key, so its version is unknown"):
        validate_results(results)
    for version in ("2", 0, None, True):
        results["schema"] = version
        with pytest.raises(ResultsError, match=f"unsupported schema {version!r}; this workbench reads schemas 1 to"):
            validate_results(results)
    assert problems_of([1, 2]) == ["(top level): expected an object with keys schema, run, rows, meta; got list"]


def test_missing_or_unreadable_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_results(tmp_path)
    (tmp_path / RESULTS_FILE).write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        load_results(tmp_path)
