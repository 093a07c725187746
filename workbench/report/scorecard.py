"""The scorecard: ``results.json`` rows → table data and a plain-language risk grade per recipe.

Pure functions over the validated results dict (:mod:`workbench.results`); the HTML report,
the W&B mirror, ``workbench compare`` and the notebooks render what these return.

**One line per (recipe label, seed), seeds not averaged.** Each cell is the run's own estimate with
its own 95% CI; a mean of per-seed intervals is not an interval, so averaging across seeds (and runs
and subjects) is left to ``workbench compare``, which bootstraps over them. The ``none`` control
comes first. Cells read ``value [ci_low, ci_high] (n)``; leakage cells add the control's value for
the same seed and the difference ``Δ = value − control``. Without a working control a leakage
number is not reported (DESIGN.md), and the row is not graded.

**Provenance.** Every number shown is a :class:`Num`: its value and ``src``, an expression over
``results.json`` that recomputes it (:func:`evaluate`): a JSON pointer (RFC 6901) such as
``/rows/2/metrics/mia.loss.auc/ci_low``, ``diff(P,Q)`` = P − Q, ``auc_step(P,Q)`` = 1/(P·Q),
``inv(P)`` = 1/P, ``zero_share_upper(P)`` = 1 − 0.025^(1/P) (exact 95% Clopper–Pearson upper bound of a
share observed as 0 of P), or ``threshold:NAME`` (:data:`THRESHOLDS`). The report writes ``src`` next
to each number so a reviewer (and the test suite) can trace it.

**Risk grades** (per row, against the control of the same seed; a recipe's grade is its worst seed):

=========  =================================================================================
SEVERE     extraction rate > 0 and above the control (a training photo reproduced within δ),
           or some attack's calibrated MIA AUC ≥ 0.9 or ≤ 0.1 with p < 0.001 (membership near-certain)
HIGH       some calibrated MIA AUC ≥ 0.6 or ≤ 0.4 with p < 0.001; or memorisation gap
           ≥ control + 0.05 with its lower CI bound above the control; or concept-bleed
           verification rate ≥ control + 0.2 with its lower CI bound above the control
MEDIUM     some calibrated MIA AUC ≥ 0.55 or ≤ 0.45 with p < 0.01; or memorisation gap ≥ control + 0.01
           with its lower CI bound above the control; or concept-bleed verification rate ≥ control + 0.05
LOW        none of the above at these sample sizes (not a proof of safety: see the sample sizes)
=========  =================================================================================

Membership evidence is two-sided: the attacks are difficulty-calibrated against the base model
(so the control is built into each score), each AUC has a permutation p-value (valid because the
split is random), and an AUC significantly *below* chance is a leak in the unexpected direction,
graded like any other. With four attacks, each tested at α, the chance that any one passes by luck
is at most 4α (0.004 for HIGH, 0.04 for MEDIUM).

The thresholds are :data:`THRESHOLDS`; the report prints each rule with its threshold next to the
grades. ``CONTROL`` marks the base model, ``FAILED`` a row that did not run, ``UNGRADED`` a row
without a working control or without any measured leakage metric.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from workbench.metrics import registry
from workbench.metrics.roc import MIN_NONMEMBERS_FOR_TPR, detectable_auc
from workbench.results import CONTROL_RECIPE

# --- Risk-grade thresholds, one per line (the report prints them next to the grades) ---------------
THRESHOLDS: dict[str, float] = {
    "extraction_rate": 0.0,  # SEVERE: extraction rate above this (and above the control)
    "auc_certain": 0.9,  # SEVERE: a calibrated AUC this far from chance (>= 0.9 or <= 0.1) ...
    "alpha_high": 0.001,  # ... or (HIGH) one whose two-sided permutation p-value is below this ...
    "auc_high": 0.6,  # ... and at least this far from chance (>= 0.6 or <= 0.4)
    "alpha_medium": 0.01,  # MEDIUM: a calibrated AUC with p below this ...
    "auc_medium": 0.55,  # ... at least this far from chance (>= 0.55 or <= 0.45)
    "alpha_control": 0.01,  # warning: the control's *raw* AUC p-value below this (the split is not exchangeable)
    "gap_margin_high": 0.05,  # HIGH: memorisation gap (pixel ℓ2) at least this far above the control's
    "gap_margin_medium": 0.01,  # MEDIUM: ... at least this far above it, with its lower CI bound above it too
    "bleed_margin_high": 0.2,  # HIGH: concept-bleed verification rate at least this far above the control's
    "bleed_margin_medium": 0.05,  # MEDIUM: concept-bleed verification rate at least this far above the control's
}
AUC_CHANCE = 0.5  # members and non-members indistinguishable
CONSTANTS = {"min_nonmembers_for_tpr": MIN_NONMEMBERS_FOR_TPR, "detect_alpha": 0.05, "detect_power": 0.8}
LEVELS = ("LOW", "MEDIUM", "HIGH", "SEVERE")  # in increasing risk
OTHER_GRADES = ("CONTROL", "FAILED", "UNGRADED")
GRADE_MEANING = {
    "SEVERE": "the model file reproduces training photos or gives away which photos it was trained on",
    "HIGH": "a clear leakage signal beyond the control, with its confidence interval clear of it",
    "MEDIUM": "a leakage signal beyond the control that these sample sizes cannot yet confirm",
    "LOW": "no leakage signal beyond the control at these sample sizes (not a proof of safety)",
    "CONTROL": "the untouched base model: the reference every leakage number is compared with",
    "FAILED": "the recipe did not run; see its error",
    "UNGRADED": "no working control for this seed, or no leakage metric measured",
}

# --- Table layout: the metric registry's columns (fidelity first, then leakage) ----------------------
def main_columns() -> tuple[str, ...]:
    return registry.keys(main=True)


def mia_columns() -> tuple[str, ...]:
    return registry.keys("membership", required=True)


# --- Numbers with provenance -------------------------------------------------------------------------

@dataclass(frozen=True)
class Num:
    """A number shown to the reader, and the expression over results.json that recomputes it."""

    value: float | int | None
    src: str
    fmt: str = "f3"  # "f3": 0.123, "int": 15, "signed": +0.123, "g3": 1e-05 / 35.3

    @property
    def text(self) -> str:
        return format_num(self.value, self.fmt)


def format_num(value: float | int | None, fmt: str = "f3") -> str:
    if value is None:
        return "—"
    if fmt == "int":
        return str(int(value))
    if fmt == "signed":
        return f"{value:+.3f}"
    if fmt == "g3":  # small or large magnitudes (δ = 1e-05, PSNR 35.3): three significant digits
        return f"{value:.3g}"
    return f"{value:.3f}"


def pointer(*parts: Any) -> str:
    """A JSON pointer (RFC 6901) to ``parts`` inside results.json."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve_pointer(data: Any, ptr: str) -> Any:
    if not ptr.startswith("/"):
        raise ValueError(f"not a JSON pointer: {ptr!r}")
    for raw in ptr[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


_CALL = re.compile(r"^(\w+)\((.*)\)$")


def evaluate(src: str, results: dict) -> float | None:
    """Recompute the number a :class:`Num`'s ``src`` describes, from ``results`` alone."""
    if src.startswith("threshold:"):
        return THRESHOLDS[src.split(":", 1)[1]]
    if src.startswith("const:"):
        return CONSTANTS[src.split(":", 1)[1]]
    m = _CALL.match(src)
    if not m:
        value = resolve_pointer(results, src)
        return None if value is None else float(value)
    name, args = m.group(1), [evaluate(a, results) for a in m.group(2).split(",")]
    if any(a is None for a in args):
        return None
    if name == "diff":
        return args[0] - args[1]
    if name == "inv":
        return 1.0 / args[0] if args[0] else None
    if name == "auc_step":
        return 1.0 / (args[0] * args[1]) if args[0] and args[1] else None
    if name == "zero_share_upper":
        return 1.0 - 0.025 ** (1.0 / args[0]) if args[0] else None
    if name == "detectable_auc":
        return detectable_auc(int(args[0]), int(args[1])) if args[0] and args[1] else None
    raise ValueError(f"unknown provenance function {name!r} in {src!r}")


def zero_share_upper(n: int) -> float:
    """Exact (Clopper–Pearson) 95% upper bound of a share observed as 0 out of ``n``: 1 − 0.025^(1/n)."""
    return 1.0 - 0.025 ** (1.0 / n)


# --- Table data ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    key: str
    title: str
    group: str  # "fidelity" or "leakage"
    direction: str  # "higher_is_better" / "lower_is_better"


@dataclass(frozen=True)
class Cell:
    key: str
    value: Num | None = None
    ci_low: Num | None = None
    ci_high: Num | None = None
    n: tuple[Num, ...] = ()
    control: Num | None = None  # the control's value for the same seed (leakage cells)
    delta: Num | None = None  # value − control (leakage cells)
    missing: str | None = None  # why no number is shown
    note: str | None = None
    p_value: Num | None = None  # the metric's test, where it has one (membership AUCs)

    @property
    def text(self) -> str:
        """``value [ci_low, ci_high] (n)``, or why the cell is empty."""
        if self.missing:
            return self.missing
        ci = f" [{self.ci_low.text}, {self.ci_high.text}]" if self.ci_low and self.ci_high else ""
        return f"{self.value.text}{ci} ({'/'.join(n.text for n in self.n)})"


@dataclass(frozen=True)
class Reason:
    level: str
    rule: str  # a key of RULES
    nums: tuple[Num, ...]  # the row's numbers that triggered it, the control's, then the thresholds
    attack: str = ""  # the MIA attack, for the mia_* rules

    def segments(self) -> list:
        """The reason as a sentence: text segments and the :class:`Num` s of REASON_TEXT's placeholders."""
        out: list = []
        unexpected = (": members score *lower* than non-members, a leak in the unexpected direction"
                      if self.rule.startswith("mia_") and self.nums and self.nums[0].value is not None
                      and self.nums[0].value < AUC_CHANCE else "")
        text = REASON_TEXT[self.rule].replace("{attack}", self.attack).replace("{unexpected}", unexpected)
        for k, part in enumerate(re.split(r"\{(\d+)\}", text)):
            if k % 2:
                out.append(self.nums[int(part)])
            elif part:
                out.append(part)
        return out


@dataclass
class Grade:
    level: str  # one of LEVELS or OTHER_GRADES
    reasons: list[Reason] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)  # leakage metrics the rules could not read


@dataclass
class ScoreRow:
    index: int  # position in results["rows"]
    label: str
    recipe: str
    seed: int
    status: str
    error: str | None
    is_control: bool
    control_index: int | None  # the control row this row's leakage is compared with
    cells: dict[str, Cell]
    grade: Grade


@dataclass
class Scorecard:
    columns: list[Column]
    mia_columns: list[Column]
    rows: list[ScoreRow]
    warnings: list[list]  # each a list of text segments and Nums (e.g. a control showing a signal)
    other_columns: list[Column] = field(default_factory=list)  # metric keys beyond the schema's, if any


def other_keys(results: dict) -> list[str]:
    """Metric keys in results.json beyond the scorecard's columns, in the order meta lists them."""
    known = set(main_columns()) | set(mia_columns())
    found = {k for r in results["rows"] for k in r["metrics"]} - known
    order = list(results.get("meta", {}).get("metrics", {}))
    return sorted(found, key=lambda k: (order.index(k) if k in order else len(order), k))


def direction(results: dict, key: str) -> str:
    info = results.get("meta", {}).get("metrics", {}).get(key)
    return info["direction"] if info else registry.direction(key)


def _column(results: dict, key: str) -> Column:
    return Column(key, registry.title(key), "leakage" if registry.is_leakage(key) else "fidelity",
                  direction(results, key))


def control_for(results: dict, index: int) -> int | None:
    """Index of the control row for row ``index``: the ok ``none`` row of the same seed, else the first ok one."""
    rows = results["rows"]
    person = rows[index].get("subject")
    controls = [i for i, r in enumerate(rows) if r["recipe"] == CONTROL_RECIPE and r["status"] == "ok"
                and r.get("subject") == person]  # a cohort compares each person with their own control
    same_seed = [i for i in controls if rows[i]["seed"] == rows[index]["seed"]]
    return (same_seed or controls or [None])[0]


def _n_nums(i: int, key: str, n: Any) -> tuple[Num, ...]:
    base = pointer("rows", i, "metrics", key, "n")
    if isinstance(n, list):
        return tuple(Num(v, f"{base}/{j}", "int") for j, v in enumerate(n))
    return (Num(n, base, "int"),)


def make_cell(results: dict, i: int, key: str, control: int | None) -> Cell:
    row = results["rows"][i]
    if row["status"] != "ok":
        return Cell(key, missing="failed")
    m = row["metrics"].get(key)
    if m is None:
        return Cell(key, missing="not in results")
    leak = registry.is_leakage(key)
    if leak and control is None:
        return Cell(key, missing="not reported: no control")
    if m["value"] is None:
        return Cell(key, n=_n_nums(i, key, m["n"]), missing="not measured", note=m.get("note"))
    p = pointer("rows", i, "metrics", key)
    value = Num(m["value"], f"{p}/value")
    lo = Num(m["ci_low"], f"{p}/ci_low") if m["ci_low"] is not None else None
    hi = Num(m["ci_high"], f"{p}/ci_high") if m["ci_high"] is not None else None
    ctrl = delta = None
    if leak and control != i:
        cm = results["rows"][control]["metrics"].get(key)
        if cm is not None and cm["value"] is not None:
            cp = pointer("rows", control, "metrics", key, "value")
            ctrl = Num(cm["value"], cp)
            delta = Num(m["value"] - cm["value"], f"diff({p}/value,{cp})", "signed")
    pv = Num(m["p_value"], f"{p}/p_value", "g3") if m.get("p_value") is not None else None
    return Cell(key, value, lo, hi, _n_nums(i, key, m["n"]), ctrl, delta, note=m.get("note"), p_value=pv)


def scorecard(results: dict) -> Scorecard:
    """The table data of a validated results dict: control rows first, then the others in file order."""
    rows = results["rows"]
    extra = tuple(other_keys(results))
    people = list(dict.fromkeys(r.get("subject") for r in rows))
    order = sorted(range(len(rows)), key=lambda i: (people.index(rows[i].get("subject")),
                                                    rows[i]["recipe"] != CONTROL_RECIPE, i))
    out = []
    for i in order:
        r = rows[i]
        control = control_for(results, i)
        cells = {k: make_cell(results, i, k, control) for k in dict.fromkeys(main_columns() + mia_columns() + extra)}
        is_control = r["recipe"] == CONTROL_RECIPE
        out.append(ScoreRow(i, r["label"], r["recipe"], r["seed"], r["status"], r["error"], is_control,
                            control, cells, grade_row(results, i, control)))
    return Scorecard([_column(results, k) for k in main_columns()], [_column(results, k) for k in mia_columns()],
                     out, control_warnings(results), [_column(results, k) for k in extra])


# --- Risk grades -----------------------------------------------------------------------------------

RULES: dict[str, tuple[str, str]] = {  # rule → (level, plain-language statement with its thresholds)
    "extraction": ("SEVERE", "extraction rate above {extraction_rate} and above the control: at least one training "
                             "photo is reproduced within δ"),
    "mia_certain": ("SEVERE", "an MIA attack's calibrated AUC at or above {auc_certain} (or as far below chance) with "
                              "a permutation p-value below {alpha_high}: membership of the training photos is "
                              "near-certain"),
    "mia_high": ("HIGH", "an MIA attack's calibrated AUC at or above {auc_high} (or as far below chance) with a "
                         "permutation p-value below {alpha_high}"),
    "gap_high": ("HIGH", "memorisation gap at least {gap_margin_high} above the control's, with its lower 95% CI bound "
                         "above the control's value: generations sit closer to training photos than to unseen photos "
                         "of the same person"),
    "bleed_high": ("HIGH", "concept-bleed verification rate at least {bleed_margin_high} above the control's, with its "
                           "lower 95% CI bound above the control's value: the subject appears without being asked for"),
    "mia_medium": ("MEDIUM", "an MIA attack's calibrated AUC at or above {auc_medium} (or as far below chance) with a "
                             "permutation p-value below {alpha_medium}"),
    "gap_medium": ("MEDIUM", "memorisation gap at least {gap_margin_medium} above the control's, with its lower 95% CI "
                             "bound above the control's value"),
    "bleed_medium": ("MEDIUM", "concept-bleed verification rate at least {bleed_margin_medium} above the control's"),
}


REASON_TEXT: dict[str, str] = {  # why a rule fired for a row; {k} = Reason.nums[k]
    "extraction": "extraction rate {0} vs the control's {1} (fires above {2} and above the control)",
    "mia_certain": "{attack} calibrated AUC {0} (p = {1}; fires at {2} and p below {3}){unexpected}",
    "mia_high": "{attack} calibrated AUC {0} (p = {1}; fires at {2} and p below {3}){unexpected}",
    "mia_medium": "{attack} calibrated AUC {0} (p = {1}; fires at {2} and p below {3}){unexpected}",
    "gap_high": "memorisation gap {0} with lower CI bound {1}, vs the control's {2} (fires at a margin of {3})",
    "gap_medium": "memorisation gap {0} with lower CI bound {1}, vs the control's {2} (fires at a margin of {3})",
    "bleed_high": "bleed verification rate {0} with lower CI bound {1}, vs the control's {2} "
                  "(fires at a margin of {3})",
    "bleed_medium": "bleed verification rate {0} vs the control's {1} (fires at a margin of {2})",
}


def rule_segments(rule: str) -> list:
    """A rule's statement as text segments and threshold :class:`Num` s."""
    text = RULES[rule][1]
    out: list = []
    for k, part in enumerate(re.split(r"\{(\w+)\}", text)):
        if k % 2:
            out.append(Num(THRESHOLDS[part], f"threshold:{part}"))
        elif part:
            out.append(part)
    return out


def _metric(results: dict, i: int, key: str) -> dict | None:
    m = results["rows"][i]["metrics"].get(key)
    return m if m is not None and m["value"] is not None else None


def grade_row(results: dict, i: int, control: int | None) -> Grade:
    row = results["rows"][i]
    if row["status"] != "ok":
        return Grade("FAILED")
    if row["recipe"] == CONTROL_RECIPE:
        return Grade("CONTROL")
    if control is None:
        return Grade("UNGRADED")
    T = THRESHOLDS
    reasons: list[Reason] = []
    unmeasured: list[str] = []

    def both(key):
        m, c = _metric(results, i, key), _metric(results, control, key)
        if m is None or c is None:
            unmeasured.append(key)
            return None
        p, cp = pointer("rows", i, "metrics", key), pointer("rows", control, "metrics", key)
        return m, c, p, cp

    def add(rule, *nums, attack=""):
        reasons.append(Reason(RULES[rule][0], rule, tuple(nums), attack))

    def th(name):
        return Num(T[name], f"threshold:{name}")

    if (x := both("memorization.extraction_rate")) and x[0]["value"] > T["extraction_rate"] \
            and x[0]["value"] > x[1]["value"]:
        add("extraction", Num(x[0]["value"], f"{x[2]}/value"), Num(x[1]["value"], f"{x[3]}/value"),
            th("extraction_rate"))
    for attack in registry.attacks():
        key = f"mia.{attack}.auc"
        if not (x := both(key)):
            continue
        m, _, p, _ = x
        if m.get("p_value") is None:
            continue
        value, pv = Num(m["value"], f"{p}/value"), Num(m["p_value"], f"{p}/p_value", "g3")
        far = abs(m["value"] - AUC_CHANCE)
        rules = (("mia_certain", "auc_certain", "alpha_high"), ("mia_high", "auc_high", "alpha_high"),
                 ("mia_medium", "auc_medium", "alpha_medium"))
        for rule, auc_th, alpha in rules:
            if m["p_value"] < T[alpha] and far >= T[auc_th] - AUC_CHANCE - 1e-12:
                add(rule, value, pv, th(auc_th), th(alpha), attack=attack)
                break
    if x := both("memorization.gap"):
        m, c, p, cp = x
        lo_above = m["ci_low"] is not None and m["ci_low"] > c["value"]
        if lo_above and m["value"] - c["value"] >= T["gap_margin_high"]:
            add("gap_high", Num(m["value"], f"{p}/value"), Num(m["ci_low"], f"{p}/ci_low"),
                Num(c["value"], f"{cp}/value"), th("gap_margin_high"))
        elif lo_above and m["value"] - c["value"] >= T["gap_margin_medium"]:
            add("gap_medium", Num(m["value"], f"{p}/value"), Num(m["ci_low"], f"{p}/ci_low"),
                Num(c["value"], f"{cp}/value"), th("gap_margin_medium"))
    if x := both("bleed.verification_rate"):
        m, c, p, cp = x
        margin = m["value"] - c["value"]
        if m["ci_low"] is not None and m["ci_low"] > c["value"] and margin >= T["bleed_margin_high"]:
            add("bleed_high", Num(m["value"], f"{p}/value"), Num(m["ci_low"], f"{p}/ci_low"),
                Num(c["value"], f"{cp}/value"), th("bleed_margin_high"))
        elif margin >= T["bleed_margin_medium"]:
            add("bleed_medium", Num(m["value"], f"{p}/value"), Num(c["value"], f"{cp}/value"),
                th("bleed_margin_medium"))
    graded = ("memorization.extraction_rate", "memorization.gap", "bleed.verification_rate",
              *(f"mia.{a}.auc" for a in registry.attacks()))
    if len(set(unmeasured)) == len(graded):
        return Grade("UNGRADED", [], unmeasured)
    level = max((LEVELS.index(r.level) for r in reasons), default=0)
    return Grade(LEVELS[level], reasons, unmeasured)


def recipe_grades(card: Scorecard) -> list[tuple[str, str, list[ScoreRow]]]:
    """(label, grade, rows) per recipe label, in table order: the worst graded seed decides."""
    by_label: dict[str, list[ScoreRow]] = {}
    for row in card.rows:
        by_label.setdefault(row.label, []).append(row)
    out = []
    for label, rows in by_label.items():
        levels = [r.grade.level for r in rows if r.grade.level in LEVELS]
        level = max(levels, key=LEVELS.index) if levels else rows[0].grade.level
        out.append((label, level, rows))
    return out


def control_warnings(results: dict) -> list[list]:
    """Signals in the control itself: the split is not exchangeable, or δ is too loose."""
    out = []
    for i, r in enumerate(results["rows"]):
        if r["recipe"] != CONTROL_RECIPE:
            continue
        if r["status"] != "ok":
            out.append([f"The control {r['label']} (seed ", Num(r["seed"], pointer("rows", i, "seed"), "int"),
                        ") failed: leakage numbers of that seed are not reported."])
            continue
        for attack in registry.attacks():
            m = _metric(results, i, f"mia.{attack}.auc_raw")
            if m and m.get("p_value") is not None and m["p_value"] < THRESHOLDS["alpha_control"]:
                p = pointer("rows", i, "metrics", f"mia.{attack}.auc_raw")
                out.append([f"The untouched base model already separates members from non-members ({attack} raw AUC ",
                            Num(m["value"], p + "/value"), ", p = ", Num(m["p_value"], p + "/p_value", "g3"), " < ",
                            Num(THRESHOLDS["alpha_control"], "threshold:alpha_control"),
                            "): the two photo sets differ in something other than membership (is the split random?). "
                            "The calibrated attacks cancel per-photo difficulty, but read every membership number of "
                            "this run with care."])
        m = _metric(results, i, "memorization.extraction_rate")
        if m and m["value"] > 0:
            p = pointer("rows", i, "metrics", "memorization.extraction_rate", "value")
            out.append(["The untouched base model has an extraction rate of ", Num(m["value"], p),
                        ": δ accepts photos the model never saw; extraction numbers are upper bounds."])
    return out


# --- What the sample sizes support -----------------------------------------------------------------

def sample_size_notes(results: dict) -> list[list]:
    """Plain-language limits of this run's sample sizes, as lists of text segments and Nums."""
    run = results["run"]
    nt, nh = run["n_train"], run["n_holdout"]
    n_train, n_hold = Num(nt, "/run/n_train", "int"), Num(nh, "/run/n_holdout", "int")
    notes: list[list] = []
    if nt and nh:
        notes.append([
            "Membership inference compares ", n_train, " members (training photos) with ", n_hold,
            " non-members (holdout photos of the same person). An AUC counts member/non-member pairs, so it moves "
            "in steps of ", Num(1 / (nt * nh), "auc_step(/run/n_train,/run/n_holdout)"),
            ". Each AUC has a two-sided permutation p-value (valid because the split is random). With these counts "
            "a test at α = ", Num(CONSTANTS["detect_alpha"], "const:detect_alpha", "g3"), " detects, with power ",
            Num(CONSTANTS["detect_power"], "const:detect_power", "g3"), ", a calibrated AUC of ",
            Num(detectable_auc(nt, nh), "detectable_auc(/run/n_train,/run/n_holdout)"),
            " or more (or as far below chance): a smaller leak may go unseen, so a LOW grade rules out only "
            "leaks at least that large."])
        if nh < MIN_NONMEMBERS_FOR_TPR:
            notes.append([
                "TPR at FPR ≤ 1% is not reported: with ", n_hold, " non-members the smallest non-zero false-positive "
                "rate is ", Num(1 / nh, "inv(/run/n_holdout)"), ", above 1%; it needs at least ",
                Num(MIN_NONMEMBERS_FOR_TPR, "const:min_nonmembers_for_tpr", "int"), " non-members."])
    if nt:
        notes.append([
            "Extraction rate: a share of ", n_train, " training photos moves in steps of ",
            Num(1 / nt, "inv(/run/n_train)"), ". No extraction observed is still compatible with a true rate up to ",
            Num(zero_share_upper(nt), "zero_share_upper(/run/n_train)"),
            " (exact 95% Clopper–Pearson bound), although the bootstrap interval of a zero share has zero width."])
    widths = []
    for i, r in enumerate(results["rows"]):
        for attack in registry.attacks():
            m = r["metrics"].get(f"mia.{attack}.auc")
            if r["status"] == "ok" and m and m["ci_low"] is not None and m["ci_high"] is not None:
                widths.append((m["ci_high"] - m["ci_low"], i, attack))
    if widths:
        lo, hi = min(widths), max(widths)
        src = [f"diff({pointer('rows', i, 'metrics', f'mia.{a}.auc', 'ci_high')},"
               f"{pointer('rows', i, 'metrics', f'mia.{a}.auc', 'ci_low')})" for _, i, a in (lo, hi)]
        notes.append(["In this run the MIA AUC 95% intervals are between ", Num(lo[0], src[0]), " and ",
                      Num(hi[0], src[1]), " wide."])
    for i, r in enumerate(results["rows"]):
        m = r["metrics"].get("identity.fdfr")
        if r["status"] == "ok" and m and isinstance(m["n"], int) and m["n"]:
            p = pointer("rows", i, "metrics", "identity.fdfr", "n")
            notes.append(["Identity metrics are shares and means over generated images: ", Num(m["n"], p, "int"),
                          " per recipe and seed here (a share moves in steps of ", Num(1 / m["n"], f"inv({p})"),
                          "); a verification rate near the encoder's false-accept rate cannot be told from it."])
            break
    return notes


# --- Plain text ------------------------------------------------------------------------------------

def segments_text(segments: list) -> str:
    return "".join(s.text if isinstance(s, Num) else s for s in segments)


def to_markdown(card: Scorecard, mia: bool = False) -> str:
    """The scorecard as a markdown table (``mia=True``: the membership-inference detail columns)."""
    cols = card.mia_columns if mia else card.columns
    head = ["recipe", "seed", "grade"] + [c.title for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in card.rows:
        cells = []
        for c in cols:
            cell = row.cells[c.key]
            text = cell.text
            if cell.delta is not None:
                text += f" Δ {cell.delta.text}"
            cells.append(text)
        label = f"{row.label} (control)" if row.is_control else row.label
        lines.append("| " + " | ".join([label, str(row.seed), row.grade.level] + cells) + " |")
    return "\n".join(lines)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
