"""The privacy-risk report: scorecard, grades and a self-contained report.html whose every number
traces back to results.json (test data: tests/report_fixtures.py)."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from statistics import NormalDist

import pytest
from report_fixtures import fixture_run

from workbench.cli import build_parser
from workbench.lifecycle import manifest
from workbench.metrics import registry
from workbench.report import scorecard
from workbench.report.html import render_report, resolve_image, write_report
from workbench.results import validate_results


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def run(home):
    return fixture_run(home)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One fixture run and its report, shared by the tests that only read them: (home, run_dir, results, html)."""
    home = tmp_path_factory.mktemp("report") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(home))
        run_dir, results = fixture_run(home)
        out = write_report(run_dir)
        yield home, run_dir, results, out.read_text(encoding="utf-8")


# --- An independent reading of the page ------------------------------------------------------------

class Page(HTMLParser):
    """Collects traced numbers/strings (class num / txt / key / json), free text, and every src/href."""

    TRACED = ("num", "txt", "key", "json")

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, str | None, str | None]] = []  # (tag, traced class, src)
        self.traced: list[tuple[str, str, str]] = []  # (class, src, text)
        self.free: list[str] = []
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[str] = []
        self.body = False
        self.buf = ""
        self.in_style = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            if name in a:
                self.links.append((tag, name, a[name]))
        if tag == "body":
            self.body = True
        if tag == "style":
            self.in_style = True
        classes = (a.get("class") or "").split()
        cls = next((c for c in self.TRACED if c in classes), None)
        if cls and not any(s[1] for s in self.stack):
            self.buf = ""
            self.stack.append((tag, cls, a.get("data-src")))
        else:
            self.stack.append((tag, None, None))

    def handle_endtag(self, tag):
        if tag == "style":
            self.in_style = False
        while self.stack:
            t, cls, src = self.stack.pop()
            if cls:
                self.traced.append((cls, src, self.buf))
            if t == tag:
                break

    def handle_data(self, data):
        if any(s[1] for s in self.stack):
            self.buf += data
        elif self.body and not self.in_style:
            self.free.append(data)


def parse(html_text: str) -> Page:
    page = Page()
    page.feed(html_text)
    return page


def lookup(data, ptr: str):
    for raw in ptr[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def recompute(src: str, results: dict):
    """The number ``src`` names, recomputed here without the report's own code."""
    if src.startswith("threshold:"):
        return scorecard.THRESHOLDS[src.split(":", 1)[1]]
    if src.startswith("const:"):
        return {"min_nonmembers_for_tpr": 100, "detect_alpha": 0.05, "detect_power": 0.8}[src[6:]]
    m = re.match(r"^(\w+)\((.*)\)$", src)
    if not m:
        return lookup(results, src)
    args = [recompute(a, results) for a in m.group(2).split(",")]
    z = NormalDist().inv_cdf  # Hanley & McNeil's null SE of the AUC, two-sided α = 0.05, power 0.8
    return {"diff": lambda a, b: a - b, "inv": lambda a: 1 / a, "auc_step": lambda a, b: 1 / (a * b),
            "zero_share_upper": lambda n: 1 - 0.025 ** (1 / n),
            "detectable_auc": lambda a, b: min(1.0, 0.5 + (z(0.975) + z(0.8)) * ((a + b + 1) / (12 * a * b)) ** 0.5),
            }[m.group(1)](*args)


def check_traceable(html_text: str, results: dict, spec: dict | None = None) -> Page:
    page = parse(html_text)
    assert page.traced, "no traced numbers at all"
    for cls, src, text in page.traced:
        assert src, f"{cls} element without data-src: {text!r}"
        if cls == "num":
            expected = recompute(src, results)
            if text == "—":
                assert expected is None, src
                continue
            shown = float(text)
            assert expected is not None, (src, text)
            decimals = len(text.split(".")[1]) if "." in text else 0
            assert abs(shown - expected) <= 0.5 * 10 ** -decimals + 1e-9, (src, text, expected)
        elif cls == "txt":
            if src.startswith("spec.json#"):
                assert text == str(lookup(spec, src.split("#", 1)[1])), src
            else:
                assert text == str(lookup(results, src)), (src, text)
        elif cls == "key":
            lookup(results, src)  # the key exists ...
            assert src.rsplit("/", 1)[1].replace("~1", "/").replace("~0", "~") == text  # ... and is the text
        elif cls == "json":
            assert json.loads(text) == lookup(results, src)
    # no other number anywhere in the visible text (prose: "95%", "1%", "ℓ2", "sha256" only)
    free = " ".join(page.free)
    for token in ("ℓ2", "sha256", "95%", "1%"):
        free = free.replace(token, " ")
    stray = re.findall(r".{0,30}\d.{0,30}", free)
    assert not stray, f"untraced digits in: {stray[:5]}"
    return page


# --- Tests ------------------------------------------------------------------------------------------

def test_report_renders_self_contained_with_every_number_traced_to_results(rendered):
    _, run_dir, results, text = rendered
    assert (run_dir / "report.html").read_text(encoding="utf-8") == text
    page = check_traceable(text, results, json.loads((run_dir / "spec.json").read_text())
                           if (run_dir / "spec.json").exists() else None)
    # self-contained: no scripts, no stylesheet links, every src an inline image, links only to anchors
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, attr, value in page.links:
        if attr == "src":
            assert tag == "img" and value.startswith("data:image/png;base64,"), value[:60]
        else:
            assert value.startswith("#"), value
    assert not re.search(r"https?://|//[a-z]", re.sub(r'src="data:[^"]+"', "", text), re.I)
    assert "url(" not in text and "@import" not in text
    # the gallery embeds both the generation and its nearest training photo
    assert sum(1 for t, a, v in page.links if t == "img") >= 3 + 2 * 3 * 3


def test_report_puts_the_control_first_and_states_grades_with_their_thresholds(rendered):
    _, _, results, text = rendered
    card = text[text.index('<table class="card">'):]
    first_row = card.index('<td class="rowhead">')
    assert card[first_row:first_row + 400].count("(control)") == 1
    for rule in scorecard.RULES:
        assert f"<code>{rule}</code>" in text
    for name in scorecard.THRESHOLDS:
        assert f'data-src="threshold:{name}"' in text
    # the lora fixture extracts a photo: SEVERE, with the numbers that made it so
    grades = dict((label, level) for label, level, _ in scorecard.recipe_grades(scorecard.scorecard(results)))
    assert grades == {"none": "CONTROL", "lora": "SEVERE", "ti": grades["ti"]}
    assert grades["ti"] in ("LOW", "MEDIUM", "HIGH")
    assert "extraction rate" in text and "What these sample sizes support" in text
    shown = {src: value for cls, src, value in parse(text).traced if cls == "num"}
    assert shown["zero_share_upper(/run/n_train)"] == "0.218"  # none of 15 photos extracted: up to ~0.2
    assert shown["auc_step(/run/n_train,/run/n_holdout)"] == "0.013"  # 15 x 5: steps of 1/75


def test_report_files_are_registered_for_erasure(rendered, monkeypatch):
    home, run_dir, results, _ = rendered
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    out = run_dir / "report.html"
    live = {a.path: a.kind for a in manifest.live(results["run"]["subject_id"])}
    assert live[str(out.relative_to(home))] == "report"
    for png in (run_dir / "plots").glob("*.png"):
        assert live[str(png.relative_to(home))] == "report"
    assert (run_dir / "plots" / "frontier.png").exists() and (run_dir / "plots" / "roc.png").exists()


def test_scorecard_rows_put_control_first_and_compare_leakage_with_it(rendered):
    _, _, results, _ = rendered
    reordered = copy.deepcopy(results)
    reordered["rows"] = reordered["rows"][1:] + reordered["rows"][:1]  # control last in the file
    card = scorecard.scorecard(validate_results(reordered))
    assert card.rows[0].is_control and card.rows[0].label == "none"
    assert [c.key for c in card.columns][:4] == list(registry.keys("identity", main=True))
    assert all(c.group == "leakage" for c in card.columns[4:])
    lora = next(r for r in card.rows if r.label == "lora")
    cell = lora.cells["mia.loss.auc"]
    ctrl = reordered["rows"][card.rows[0].index]["metrics"]["mia.loss.auc"]["value"]
    assert cell.control.value == ctrl and cell.delta.value == pytest.approx(cell.value.value - ctrl)
    assert lora.cells["identity.ism_holdout"].delta is None  # fidelity needs no control
    assert re.fullmatch(r"-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\] \(\d+/\d+\)", cell.text)


def test_leakage_is_not_reported_without_a_working_control(home):
    run_dir, results = fixture_run(home, failed=(("none", 0),))
    card = scorecard.scorecard(results)
    lora = next(r for r in card.rows if r.label == "lora")
    assert lora.grade.level == "UNGRADED"
    assert lora.cells["mia.loss.auc"].missing and lora.cells["mia.loss.auc"].value is None
    assert lora.cells["identity.ism_holdout"].value is not None
    text = write_report(run_dir).read_text(encoding="utf-8")
    check_traceable(text, results)
    assert "not reported: no control" in text and "fixture failure" in text


def test_seeds_get_one_line_each_and_distances_draw_histograms(home):
    run_dir, results = fixture_run(home, seeds=(0, 1), distances=True)
    card = scorecard.scorecard(results)
    assert [(r.label, r.seed) for r in card.rows][:2] == [("none", 0), ("none", 1)]
    assert len(card.rows) == 6
    text = write_report(run_dir).read_text(encoding="utf-8")
    check_traceable(text, results)


def test_gallery_never_embeds_files_outside_the_run_or_data_root(rendered, tmp_path, monkeypatch):
    home, run_dir, results, _ = rendered
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    outside = tmp_path / "outside.png"
    outside.write_bytes((run_dir / results["rows"][0]["nearest"][0]["generated"]).read_bytes())
    assert resolve_image("train", str(outside), run_dir) is None
    assert resolve_image("generated", "../../outside.png", run_dir) is None
    evil = copy.deepcopy(results)
    evil["rows"][0]["nearest"][0]["train"] = str(outside)
    text = render_report(evil, run_dir, figures={})
    assert "image not available" in text


def test_report_command_writes_the_page(run, capsys):
    run_dir, _ = run
    args = build_parser_with_report().parse_args(["report", str(run_dir)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "lora: SEVERE" in out and (run_dir / "report.html").exists()


def build_parser_with_report():
    """The CLI parser, with `report` added if cli.py does not list it yet."""
    import argparse

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "report" not in sub.choices:
        from workbench.report.commands import add_commands

        add_commands(sub)
    return parser
