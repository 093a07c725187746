"""Grade a provider: per-criterion verdicts, blockers, the ToS;DR letter, Mozilla-style warnings, and the
measured evidence beside the stated practice.

1. **Verdict** per criterion (:data:`VERDICTS`, by the criterion's kind): ``meets``, ``falls short`` or
   ``unknown``. yes/no: the good answer meets; days: a number up to ``max_days`` meets, a longer period or
   ``no`` (no published period) falls short; text: a value meets, ``no`` falls short.
2. **Points** as ToS;DR counts them (tosdr/edit.tosdr.org ``app/models/service.rb``): ``meets`` is a good
   point, ``falls short`` a bad point, or a **blocker** where the criterion is one of the five blockers of
   :mod:`.criteria`; ``unknown`` is no point (neutral).
3. **Measured evidence** (:mod:`.evidence`) can add blockers (:data:`LEAKAGE_RULES`: the model or its outputs
   verify as the person without the trigger word, significantly above 0; a training photo is extracted; the
   model file itself holds the person's photos or identifiers, per ``workbench inspect --json``)
   and flags contradictions with the stated practice (:data:`CONTRADICTIONS`). It never removes a stated
   blocker: a clean measurement does not turn a bad answer good.
4. **Letter** with ToS;DR's published rule, :data:`RULE` (printed with every result).
5. **Warnings** per Mozilla *Privacy Not Included* domain (data use, control, security, AI, track record);
   the overall label where :data:`LABEL_RULE` says so.
An assessment aid, not legal advice (:data:`workbench.provider.NOT_LEGAL_ADVICE`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from workbench.provider import NOT_LEGAL_ADVICE
from workbench.provider.assessment import UNKNOWN, Assessment, Value
from workbench.provider.criteria import CLAIMS, CRITERIA, DOMAINS, Criterion
from workbench.provider.evidence import Measurement

Verdict = Literal["meets", "falls short", "unknown"]
RULE = ("ToS;DR rule (tosdr/edit.tosdr.org, app/models/service.rb): balance = good − bad − 3·blocker; "
        "E if balance < −10, else D if any blocker, else C if balance < −4, else B if any bad point, else A; "
        "N/A with no scored point. Here a criterion that is met is a good point, one that falls short a bad "
        "point (a blocker for the five blocker criteria), an unknown answer no point; measured leakage adds "
        "blockers.")
LABEL_RULE = ("Mozilla Privacy Not Included-style label: warnings in 3 or more of the 5 domains, or any blocker "
              "(an egregious practice).")
GRADE_ORDER = ("A", "B", "C", "D", "E", "N/A")


def tosdr_letter(good: int, bad: int, blocker: int) -> str:
    """ToS;DR's ``service_rating_get``, verbatim in Python; N/A with no scored point."""
    if good + bad + blocker == 0:
        return "N/A"
    balance = good - bad - 3 * blocker
    if balance < -10:
        return "E"
    if blocker > 0:
        return "D"
    if balance < -4:
        return "C"
    if bad > 0:
        return "B"
    return "A"


def _yes_no(c: Criterion, v: Value) -> Verdict:
    return "meets" if v == c.good_answer else "falls short"


def _days(c: Criterion, v: Value) -> Verdict:
    return "meets" if isinstance(v, int) and (c.max_days is None or v <= c.max_days) else "falls short"


def _text(c: Criterion, v: Value) -> Verdict:
    return "falls short" if v == "no" else "meets"


VERDICTS: dict[str, Callable[[Criterion, Value], Verdict]] = {"yes_no": _yes_no, "days": _days, "text": _text}


def verdict(c: Criterion, value: Value) -> Verdict:
    return "unknown" if value == UNKNOWN else VERDICTS[c.kind](c, value)


@dataclass(frozen=True)
class CriterionResult:
    id: str
    answer: Value
    verdict: Verdict
    point: str | None       # good | bad | blocker | None (unknown: no point)
    good: str
    source: str
    domain: str
    evidence: dict | None


@dataclass(frozen=True)
class Blocker:
    id: str                 # the criterion id, or the leakage rule's id for a measured blocker
    text: str
    source: str
    measured: bool
    detail: str = ""


@dataclass(frozen=True)
class LeakageRule:
    id: str
    applies: Callable[[str], bool]          # to a metric key
    leaks: Callable[[Measurement], bool]
    text: str
    source: str
    blocker: bool
    contradicts: tuple[str, ...]            # claim ids this finding contradicts


_IDENTIFYING = {f"modelfile.{k}" for k in ("photo_of_person", "face_photo", "email", "gps")}
_DESCRIBING = {f"modelfile.{k}" for k in ("captions", "dataset_names", "tag_frequency", "training_hashes", "exif",
                                          "user_id", "image_text")}


def _above_zero(m: Measurement) -> bool:
    """Significantly above 0: the CI's lower end is above 0 (the point value where no CI was recorded)."""
    return (m.ci_low if m.ci_low is not None else m.value or 0.0) > 0


def _above_chance(m: Measurement) -> bool:
    return m.ci_low is not None and m.ci_low > 0.5


LEAKAGE_RULES: tuple[LeakageRule, ...] = (
    LeakageRule("measured_identity_without_trigger", lambda k: k == "bleed.verification_rate", _above_zero,
                "the model or its outputs verify as the person without the trigger word (concept bleed)",
                "EDPB Opinion 28/2024; concept bleed, docs/METRICS.md", True,
                ("model_is_anonymous",)),
    LeakageRule("measured_extraction", lambda k: k == "memorization.extraction_rate", lambda m: (m.value or 0) > 0,
                "a generation is a near-copy of a training photo (extraction)",
                "Carlini et al., USENIX Security 2023, Definition 1; EDPB Opinion 28/2024", True,
                ("model_is_anonymous", "outputs_are_new_images")),
    LeakageRule("measured_membership", lambda k: k.startswith("mia.") and k.endswith(".auc"), _above_chance,
                "membership inference tells the training photos from others above chance (AUC CI above 0.5)",
                "EDPB Opinion 28/2024 (membership inference among the attacks to resist)", False,
                ("model_is_anonymous",)),
    # the model file itself (`workbench inspect --json`, workbench/modelfile/findings.py): what it carries
    LeakageRule("file_holds_training_photos", lambda k: k == "modelfile.training_photo", _above_zero,
                "the model file holds copies of the person's photos (same identity and within the extraction δ)",
                "GDPR Art. 4(14), 9 (biometric data); Carlini et al., USENIX Security 2023, Definition 1", True,
                ("model_is_anonymous",)),
    LeakageRule("file_identifies_people", lambda k: k in _IDENTIFYING, _above_zero,
                "the model file carries face photos, e-mail addresses or GPS coordinates",
                "GDPR Art. 4(1), 4(14); EDPB Opinion 28/2024", True, ("model_is_anonymous",)),
    LeakageRule("file_describes_training_data", lambda k: k in _DESCRIBING, _above_zero,
                "the model file carries captions, dataset or file names, photo hashes, EXIF or user ids",
                "GDPR Art. 4(1) (information relating to an identifiable person); kohya-ss ss_* metadata", False,
                ("model_is_anonymous",)),
)


@dataclass(frozen=True)
class Finding:
    rule: str
    text: str
    source: str
    blocker: bool
    measurement: dict
    contradicts: tuple[str, ...]


def findings(evidence: list[Measurement]) -> list[Finding]:
    """What the evidence shows leaking (the provider's model and outputs; controls are shown, not graded)."""
    return [Finding(r.id, r.text, r.source, r.blocker, m.to_dict(), r.contradicts)
            for m in evidence if not m.control for r in LEAKAGE_RULES if r.applies(m.key) and r.leaks(m)]


def _claims_contradicted(a: Assessment, found: list[Finding]) -> list[str]:
    return [f"{CLAIMS[c].text} (claims.{c}), but measured: {f.text}: {f.measurement['text']}"
            for f in found for c in f.contradicts if a.claim(c) == "yes"]


def _model_outlives_photos(a: Assessment, found: list[Finding]) -> list[str]:
    photo, model = a.answer("photo_retention_days").answer, a.answer("model_retention_days").answer
    if not found or not isinstance(photo, int) or model == UNKNOWN or (isinstance(model, int) and model <= photo):
        return []
    kept = f"{model} days" if isinstance(model, int) else "with no published period"
    return [f"photo_retention_days is {photo} but model_retention_days is {kept}, and the model measurably "
            f"carries the person ({found[0].text}): keeping the model keeps the personal data "
            "(EDPB Opinion 28/2024)"]


CONTRADICTIONS: tuple[Callable[[Assessment, list[Finding]], list[str]], ...] = (
    _claims_contradicted, _model_outlives_photos)


@dataclass
class ProviderGrade:
    provider: str
    assessed_on: str
    grade: str
    balance: int
    points: dict[str, int]
    rule: str
    blockers: list[Blocker]
    criteria: list[CriterionResult]
    warnings: dict[str, list[str]]
    label: bool
    label_rule: str
    findings: list[Finding]
    contradictions: list[str]
    evidence: list[Measurement] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    not_legal_advice: str = NOT_LEGAL_ADVICE

    def to_dict(self) -> dict:
        out = asdict(self)
        out["evidence"] = [m.to_dict() for m in self.evidence]
        return out


def _result(c: Criterion, a: Assessment) -> CriterionResult:
    ans = a.answer(c.id)
    v = verdict(c, ans.answer)
    point = {"meets": "good", "falls short": "blocker" if c.blocker else "bad"}.get(v)
    return CriterionResult(c.id, ans.answer, v, point, c.good, c.source, c.domain,
                           ans.evidence.model_dump() if ans.evidence else None)


def grade(a: Assessment, evidence: list[Measurement] | None = None) -> ProviderGrade:
    """Grade assessment ``a``, with measured ``evidence`` beside it (see the module docstring)."""
    evidence = list(evidence or [])
    results = [_result(c, a) for c in CRITERIA.values()]
    found = findings(evidence)
    blockers = [Blocker(r.id, CRITERIA[r.id].blocker, r.source, False, f"answer: {r.answer}")
                for r in results if r.point == "blocker"]
    blockers += [Blocker(f.rule, f.text, f.source, True, f.measurement["text"]) for f in found if f.blocker]
    good = sum(r.point == "good" for r in results)
    bad = sum(r.point == "bad" for r in results)
    warnings: dict[str, list[str]] = {d: [] for d in DOMAINS}
    for r in results:
        if r.verdict == "falls short":
            warnings[r.domain].append(f"{r.id}: {r.answer} (a good provider: {r.good})")
    for f in found:
        warnings["AI"].append(f"measured: {f.text} ({f.measurement['text']})")
    contradictions = [line for check in CONTRADICTIONS for line in check(a, found)]
    return ProviderGrade(
        provider=a.provider, assessed_on=a.assessed_on.isoformat(),
        grade=tosdr_letter(good, bad, len(blockers)), balance=good - bad - 3 * len(blockers),
        points={"good": good, "bad": bad, "blocker": len(blockers),
                "unknown": sum(r.verdict == "unknown" for r in results)},
        rule=RULE, blockers=blockers, criteria=results, warnings=warnings,
        label=bool(blockers) or sum(bool(w) for w in warnings.values()) >= 3, label_rule=LABEL_RULE,
        findings=found, contradictions=contradictions, evidence=evidence,
        sources=[s.model_dump(mode="json") for s in a.sources])
