"""Provider check (issue #15): assessment files, the ToS;DR grade, blockers, measured evidence, questions and
request letters, the CLI, provider.json and provider.html. Real files throughout: the shipped fictional
examples, real `workbench audit` output on LFW photos, a run folder's results.json, a bundle's card scores."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from metrics_helpers import OTHERS, SUBJECT, copies_of_train, crop, demo_photo, needs_lfw, write_pngs
from report_fixtures import fixture_run

from workbench.cli import main
from workbench.errors import SpecError
from workbench.provider.assessment import load_assessment, parse_assessment, template
from workbench.provider.check import PROVIDER_HTML, PROVIDER_JSON, check
from workbench.provider.criteria import BLOCKER_IDS, CRITERIA
from workbench.provider.evidence import load_evidence
from workbench.provider.grade import grade, tosdr_letter
from workbench.provider.requests import letters, one_month_after, questions

EXAMPLES = Path(__file__).resolve().parents[1] / "experiments" / "providers"
# What each fictional example's answers imply: (good, bad, blocker) points and the letter of the printed rule.
EXPECTED = {
    "eu_paid_service.yaml": (19, 1, 0, "B"),   # balance 18, one bad point (no model export)
    "free_app.yaml": (1, 10, 2, "E"),          # balance 1 - 10 - 6 = -15 < -10
    "us_no_consent.yaml": (18, 1, 1, "D"),     # balance 14, but a blocker (no explicit consent) caps at D
}


def rule_from_providers_md(good: int, bad: int, blocker: int) -> str:
    """PROVIDERS.md's statement of ToS;DR's rule, written out independently of workbench.provider.grade."""
    balance = good - bad - 3 * blocker
    if good == bad == blocker == 0:
        return "N/A"
    return ("E" if balance < -10 else "D" if blocker else "C" if balance < -4 else "B" if bad else "A")


def all_good() -> dict:
    """An assessment whose every answer meets its criterion."""
    answers = {cid: (c.good_answer if c.kind == "yes_no" else 7 if c.kind == "days" else "EU (Frankfurt)")
               for cid, c in CRITERIA.items()}
    return {"version": 1, "provider": "Good Example Ltd", "assessed_on": dt.date(2026, 11, 20), "answers": answers}


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_example_gets_the_grade_its_answers_imply(name):
    result = grade(load_assessment(EXAMPLES / name))
    good, bad, blocker, letter = EXPECTED[name]
    counted = [r.point for r in result.criteria]
    assert (counted.count("good"), counted.count("bad"), counted.count("blocker")) == (good, bad, blocker)
    assert result.grade == letter == rule_from_providers_md(good, bad, blocker)
    assert result.balance == good - bad - 3 * blocker
    assert "balance = good − bad − 3·blocker" in result.rule and "N/A" in result.rule
    assert "fictional" in result.provider


@pytest.mark.parametrize("good,bad,blocker,letter", [
    (0, 0, 0, "N/A"), (1, 0, 0, "A"), (5, 1, 0, "B"), (0, 4, 0, "B"), (0, 5, 0, "C"), (20, 0, 1, "D"),
    (0, 7, 1, "D"), (0, 8, 1, "E"), (0, 11, 0, "E")])
def test_tosdr_rule_at_its_boundaries(good, bad, blocker, letter):
    assert tosdr_letter(good, bad, blocker) == letter == rule_from_providers_md(good, bad, blocker)


def test_a_provider_meeting_everything_gets_an_a():
    result = grade(parse_assessment(all_good()))
    assert result.grade == "A" and result.points["good"] == len(CRITERIA) and not result.blockers
    assert not any(result.warnings.values()) and result.label is False


@pytest.mark.parametrize("cid", BLOCKER_IDS)
def test_a_blocker_caps_the_grade_whatever_else_is_good(cid):
    data = all_good()
    c = CRITERIA[cid]
    data["answers"][cid] = {"yes_no": "no" if c.good_answer == "yes" else "yes", "days": "no"}[c.kind]
    result = grade(parse_assessment(data))
    assert result.balance == len(CRITERIA) - 1 - 3 > 0  # 20 good points cannot lift it
    assert result.grade == "D" and [b.id for b in result.blockers] == [cid]
    assert result.label is True  # the Mozilla-style label for an egregious practice


def test_the_five_blockers_of_the_issue_are_registered():
    assert set(BLOCKER_IDS) == {"sells_or_shares_likeness", "perpetual_content_license", "trains_other_models",
                                "model_retention_days", "explicit_biometric_consent"}


def test_an_unknown_id_is_refused_with_the_list_of_valid_ones(tmp_path, capsys):
    path = tmp_path / "a.yaml"
    data = all_good() | {"answers": {"photo_retention": 7, "dpia": "yes"}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    rc, _, err = run_cli("provider", "assess", str(path), "--out", str(tmp_path / "o"), capsys=capsys)
    assert rc == 2 and "Traceback" not in err
    assert "answers.photo_retention: unknown criterion id; valid ids: " in err
    assert all(cid in err for cid in CRITERIA)
    assert not (tmp_path / "o").exists()


def test_a_wrong_answer_or_key_names_its_path():
    data = all_good()
    data["answers"] |= {"photo_retention_days": "soon", "dpia": "maybe",
                        "model_export": {"answer": "yes", "evidence": {"quote": "Download it."}}}
    data["colour"] = "red"
    with pytest.raises(SpecError) as exc:
        parse_assessment(data)
    msg = str(exc.value)
    assert "answers.photo_retention_days: expected a number of days" in msg and "'soon'" in msg
    assert "answers.dpia: expected yes, no or unknown; got 'maybe'" in msg
    assert "colour: unknown key; allowed keys here: version, provider" in msg
    data["answers"] |= {"photo_retention_days": 7, "dpia": "yes"}
    with pytest.raises(SpecError, match=r"answers\.model_export\.evidence\.source: required field is missing"):
        parse_assessment(data)


def test_a_missing_id_counts_as_unknown_and_yaml_booleans_are_yes_and_no():
    a = parse_assessment({"version": 1, "provider": "P", "assessed_on": "2026-11-20",
                          "answers": {"erasure_on_request": True, "trains_other_models": False}})
    result = {r.id: r for r in grade(a).criteria}
    assert result["erasure_on_request"].answer == "yes" and result["erasure_on_request"].verdict == "meets"
    assert result["trains_other_models"].answer == "no" and result["trains_other_models"].verdict == "meets"
    assert result["dpia"].answer == "unknown" and result["dpia"].verdict == "unknown" and result["dpia"].point is None


def test_the_template_round_trips_and_grades_as_not_applicable(tmp_path, capsys):
    rc, out, _ = run_cli("provider", "template", capsys=capsys)
    assert rc == 0
    assert out == template(dt.date.today())
    for cid in CRITERIA:  # every id, unknown, with its one-line explanation
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{cid}:"))
        assert line.split("#")[0].strip() == f"{cid}: unknown" and CRITERIA[cid].good in line
    path = tmp_path / "template.yaml"
    path.write_text(out, encoding="utf-8")
    result = grade(load_assessment(path))
    assert result.grade == "N/A" and result.points == {"good": 0, "bad": 0, "blocker": 0, "unknown": len(CRITERIA)}
    assert len(questions(result)) == len(CRITERIA)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_question_and_request_names_its_criterion(name):
    result = grade(load_assessment(EXAMPLES / name))
    asked = questions(result)
    assert {q.criterion for q in asked} == {r.id for r in result.criteria if r.verdict != "meets"}
    for q in asked:
        assert q.criterion in CRITERIA and f"[{q.criterion}]" in q.text and q.source == CRITERIA[q.criterion].source
    today = dt.date(2026, 1, 31)
    sent = letters(result.provider, today)
    assert [x.kind for x in sent] == ["access", "erasure", "portability"]
    for x in sent:
        assert x.criteria and set(x.criteria) <= set(CRITERIA)
        assert all(cid in x.text for cid in x.criteria)
        assert result.provider in x.text and "Date: 2026-01-31" in x.text
        assert x.due == "2026-02-28" and "by 2026-02-28 (GDPR Art. 12(3))" in x.text
    erasure = sent[1].text
    assert "Article 17" in erasure and "model file" in erasure and "photos" in erasure and "outputs" in erasure
    assert "Article 15" in sent[0].text and "Article 20" in sent[2].text


def test_one_month_is_the_same_day_next_month_or_its_last_day():
    assert one_month_after(dt.date(2026, 1, 31)) == dt.date(2026, 2, 28)
    assert one_month_after(dt.date(2028, 1, 30)) == dt.date(2028, 2, 29)
    assert one_month_after(dt.date(2026, 12, 15)) == dt.date(2027, 1, 15)


def test_assess_writes_provider_json_and_a_self_contained_html(tmp_path, capsys):
    out = tmp_path / "out"
    rc, text, _ = run_cli("provider", "assess", str(EXAMPLES / "free_app.yaml"), "--out", str(out), capsys=capsys)
    assert rc == 0 and "grade E" in text and "not legal advice" in text
    report = json.loads((out / PROVIDER_JSON).read_text(encoding="utf-8"))
    assert {"grade", "blockers", "criteria", "evidence", "questions", "requests", "rule"} <= set(report)
    assert report["grade"] == "E" and len(report["blockers"]) == 2
    assert all({"id", "answer", "verdict", "source"} <= set(c) for c in report["criteria"])
    page = (out / PROVIDER_HTML).read_text(encoding="utf-8")
    assert "<script" not in page and "http://" not in page.replace("https://selfiespark.example", "")
    assert "default-src 'none'" in page and "SelfieSpark (fictional)" in page and "not legal advice" in page
    assert all(cid in page for cid in CRITERIA)
    rc, text, _ = run_cli("provider", "assess", str(EXAMPLES / "free_app.yaml"), "--json", "--out", str(out),
                          capsys=capsys)
    assert json.loads(text)["grade"] == "E"


def test_compare_ranks_the_providers_in_one_table(capsys):
    files = [str(EXAMPLES / n) for n in ("free_app.yaml", "us_no_consent.yaml", "eu_paid_service.yaml")]
    rc, text, _ = run_cli("provider", "compare", *files, capsys=capsys)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "fictional" in line]
    assert rc == 0 and [r.split("|")[3].strip() for r in rows] == ["B", "D", "E"]
    assert rows[0].startswith("| 1 | Atelier Lumen") and "ToS;DR rule" in text


# --- measured evidence ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def leaky_audit(tmp_path_factory) -> Path:
    """Real `workbench audit --json` output: the provider's headshots are near-copies of the person's selfies,
    and the person appears for prompts without the trigger word (``no_identifier``)."""
    from workbench.metrics.audit import audit

    root = tmp_path_factory.mktemp("provider-audit")
    for folder, numbers in (("train", range(1, 7)), ("holdout", range(16, 19))):
        (root / folder).mkdir()
        for n in numbers:
            (root / folder / demo_photo(SUBJECT, n).name).write_bytes(demo_photo(SUBJECT, n).read_bytes())
    write_pngs(root / "generated" / "identifier", copies_of_train(range(1, 4)), prefix="copy")
    write_pngs(root / "generated" / "no_identifier", [crop(SUBJECT, n) for n in (7, 8, 9, 10)], prefix="bleed")
    result = audit(root / "train", root / "holdout", root / "generated", n_resamples=200, progress=False)
    path = root / "audit.json"
    path.write_text(json.dumps(result), encoding="utf-8")
    return path


@needs_lfw
def test_measured_leakage_adds_a_blocker_and_contradicts_the_stated_practice(leaky_audit, tmp_path, capsys):
    ms = {m.key: m for m in load_evidence(leaky_audit)}
    bleed = ms["bleed.verification_rate"]
    assert bleed.ci_low > 0 and bleed.n == 4  # every no-trigger generation verifies as the person
    out = tmp_path / "eu"
    rc, text, _ = run_cli("provider", "assess", str(EXAMPLES / "eu_paid_service.yaml"), "--evidence",
                          str(leaky_audit), "--json", "--out", str(out), capsys=capsys)
    report = json.loads(text)
    measured = [b for b in report["blockers"] if b["measured"]]
    assert rc == 0 and "measured_identity_without_trigger" in {b["id"] for b in measured}
    assert report["grade"] == "D"  # B on its answers alone: the measurement adds a blocker
    assert any("EDPB Opinion 28/2024" in c and "photo_retention_days is 7" in c for c in report["contradictions"])
    shown = {e["key"]: e for e in report["evidence"]}
    assert {"value", "ci_low", "ci_high", "n"} <= set(shown["bleed.verification_rate"])
    us = check(load_assessment(EXAMPLES / "us_no_consent.yaml"), list(ms.values()))
    assert any("model is anonymous" in c for c in us["contradictions"])  # claims.model_is_anonymous: yes


@needs_lfw
def test_evidence_never_removes_a_stated_blocker(tmp_path):
    """A clean audit (other people's faces, the person never appears) leaves the stated blockers and grade."""
    from workbench.metrics.audit import audit

    root = tmp_path
    for folder, numbers in (("train", range(1, 5)), ("holdout", range(16, 18))):
        (root / folder).mkdir()
        for n in numbers:
            (root / folder / demo_photo(SUBJECT, n).name).write_bytes(demo_photo(SUBJECT, n).read_bytes())
    write_pngs(root / "generated" / "no_identifier", [crop(p, 20) for p in OTHERS[:3]], prefix="other")
    path = root / "audit.json"
    path.write_text(json.dumps(audit(root / "train", root / "holdout", root / "generated", n_resamples=200,
                                     progress=False)), encoding="utf-8")
    evidence = load_evidence(path)
    assert {m.key: m.value for m in evidence}["bleed.verification_rate"] == 0
    a = load_assessment(EXAMPLES / "free_app.yaml")
    before, after = grade(a), grade(a, evidence)
    assert after.grade == before.grade == "E" and [b.id for b in after.blockers] == [b.id for b in before.blockers]


def test_a_run_folder_and_a_bundle_card_are_evidence_too(tmp_path, monkeypatch):
    """results.json of a run on the provider's model (the lora row extracts a photo) and the same scores as an
    exported bundle's card carries them (value and CI, no n); the control row is shown but never graded."""
    from workbench.lifecycle.bundle import leakage_scores

    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    run_dir, _ = fixture_run(home, recipes={"none": "none", "lora": "lora"})
    from_run = load_evidence(run_dir)
    assert any(m.control for m in from_run) and any(not m.control for m in from_run)
    extraction = next(m for m in from_run if m.key == "memorization.extraction_rate" and not m.control)
    assert extraction.value > 0 and extraction.n
    result = grade(load_assessment(EXAMPLES / "eu_paid_service.yaml"), from_run)
    assert "measured_extraction" in {b.id for b in result.blockers} and result.grade == "D"
    assert all(not f.measurement["control"] for f in result.findings)

    card = {"format": 1, "recipe": "lora", "param_hash": "0" * 64, "leakage": leakage_scores(run_dir, "lora")}
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "bundle.json").write_text(json.dumps(card), encoding="utf-8")
    from_card = {m.key: m for m in load_evidence(tmp_path / "bundle")}
    assert from_card["memorization.extraction_rate"].value == pytest.approx(extraction.value, rel=1e-3)
    assert from_card["memorization.extraction_rate"].n is None and "n = not recorded" in from_card[
        "memorization.extraction_rate"].text()


def test_unreadable_evidence_is_one_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}', encoding="utf-8")
    rc, _, err = run_cli("provider", "assess", str(EXAMPLES / "eu_paid_service.yaml"), "--evidence", str(bad),
                         "--out", str(tmp_path / "o"), capsys=capsys)
    assert rc == 2 and f"--evidence {bad}" in err and "Traceback" not in err
