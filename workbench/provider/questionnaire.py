"""The app's Provider tab as plain data: the questionnaire's fields, the assessment its answers make, and
the texts the tab shows. No gradio here; :mod:`workbench.app.callbacks` calls these.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from workbench.provider.assessment import UNKNOWN, Assessment, parse_assessment
from workbench.provider.criteria import CRITERIA, KIND_HINT

ELEM_PREFIX = "provider-answer-"


@dataclass(frozen=True)
class Field:
    id: str
    label: str
    choices: tuple[str, ...] | None     # a yes/no radio; None: free text (days or a value)
    info: str


def fields() -> list[Field]:
    """One form field per criterion, in the registry's order; every default is ``unknown``."""
    return [Field(c.id, c.id.replace("_", " "), ("unknown", "yes", "no") if c.kind == "yes_no" else None,
                  f"{c.good} ({KIND_HINT[c.kind]})") for c in CRITERIA.values()]


def _value(cid: str, raw: object) -> object:
    text = str(raw if raw is not None else "").strip() or UNKNOWN
    return int(text) if CRITERIA[cid].kind == "days" and text.isdigit() else text


def assessment_from_form(provider: str, answers: dict[str, object], today: dt.date | None = None) -> Assessment:
    """The assessment the form's answers make (empty answers are ``unknown``); raises SpecError naming the id."""
    return parse_assessment({"version": 1, "provider": (provider or "").strip() or "the provider",
                             "assessed_on": today or dt.date.today(),
                             "answers": {cid: _value(cid, v) for cid, v in answers.items()}}, "questionnaire")


def summary_markdown(r: dict) -> str:
    """Grade, points with the rule, blockers, contradictions and measured numbers, as markdown."""
    p = r["points"]
    lines = [f"## Grade {r['grade']}",
             f"Balance {p['good']} good − {p['bad']} bad − 3 × {p['blocker']} blocker = **{r['balance']}**; "
             f"{p['unknown']} unknown.", "", f"*{r['rule']}*", ""]
    lines += [f"- **Blocker** `{b['id']}`: {b['text']} ({'measured' if b['measured'] else 'stated'}: {b['detail']})"
              for b in r["blockers"]]
    lines += [f"- **Contradiction**: {c}" for c in r["contradictions"]]
    lines += [f"- **{d}** warning: {w}" for d, ws in r["warnings"].items() for w in ws]
    lines += [f"- measured `{m['key']}`: {m['text']} ({m['scope']})" for m in r["evidence"] if not m["control"]]
    return "\n".join(lines + ["", f"_{r['not_legal_advice']}_"])


def questions_text(r: dict) -> str:
    return "\n".join(f"{q['text']}" for q in r["questions"]) or "Nothing left to ask."


def letters_text(r: dict) -> str:
    return "\n\n-----\n\n".join(x["text"] for x in r["requests"])
