"""The assessment file: one versioned YAML per provider, validated like an experiment spec.

    version: 1
    provider: Example Portraits GmbH          # the provider's name, as it appears in request letters
    assessed_on: 2026-11-20                   # the day the answers were collected
    sources:                                  # what the answers were read from, with the date read
      - {source: https://example.invalid/privacy, read_on: 2026-11-20}
    claims:                                   # optional: statements the measurements can contradict
      model_is_anonymous: yes
    answers:                                  # criterion id -> yes | no | unknown | a value
      photo_retention_days: 7
      erasure_on_request:
        answer: yes
        evidence: {quote: "Delete your data from Settings at any time.", source: privacy policy §5}

Every model forbids unknown keys; an unknown criterion id is refused with the list of valid ones; a missing
id counts as ``unknown``. Each answer is checked against its criterion's kind (:mod:`.criteria`). Errors
raise :class:`~workbench.errors.SpecError` naming each problem by its path, e.g.
``answers.photo_retention_days: expected a number of days ≥ 0, 'no' or 'unknown'; got 'soon'``.
YAML 1.1 reads an unquoted ``yes``/``no`` as a boolean; both spellings are accepted.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.errors import SpecError
from workbench.provider.criteria import CLAIMS, CRITERIA, KIND_HINT

ASSESSMENT_VERSION = 1
UNKNOWN = "unknown"
Value = int | str


def _yes_no(v: Any) -> Any:
    return {True: "yes", False: "no"}.get(v, v) if isinstance(v, bool) else v


def _as_answer(v: Any) -> Any:
    return v if isinstance(v, dict) else {"answer": v}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(Strict):
    source: str = Field(min_length=1)       # a URL or a document's name
    read_on: dt.date                        # the day it was read


class Evidence(Strict):
    quote: str = Field(min_length=1)        # the provider's words
    source: str = Field(min_length=1)       # where they are (URL, document and section)


class Answer(Strict):
    answer: Annotated[Value, BeforeValidator(_yes_no)]
    evidence: Evidence | None = None


def _check_answer(cid: str, value: Any) -> str | None:
    """None when ``value`` fits criterion ``cid``'s kind, else what is expected."""
    kind = CRITERIA[cid].kind
    if not isinstance(value, (int, str)):
        return f"expected {KIND_HINT[kind]}; got {value!r}"
    if isinstance(value, str) and not value.strip():
        return f"expected {KIND_HINT[kind]}; got an empty string"
    if value == UNKNOWN:
        return None
    if kind == "yes_no" and value not in ("yes", "no"):
        return f"expected yes, no or unknown; got {value!r}"
    if kind == "days" and not (value == "no" or (isinstance(value, int) and value >= 0)):
        return f"expected a number of days ≥ 0, 'no' (no published period) or 'unknown'; got {value!r}"
    if kind == "text" and not isinstance(value, str):
        return f"expected a value such as a region or mechanism (text), 'no' or 'unknown'; got {value!r}"
    return None


class Assessment(Strict):
    version: int                                            # this file format's version (1)
    provider: str = Field(min_length=1)                     # the provider's name
    assessed_on: dt.date                                    # when the answers were collected
    sources: list[Source] = []                              # what was read, and when
    claims: dict[str, Annotated[str, BeforeValidator(_yes_no)]] = {}   # claim id -> yes | no | unknown
    answers: dict[str, Annotated[Answer, BeforeValidator(_as_answer)]] = {}

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != ASSESSMENT_VERSION:
            raise ValueError(f"unsupported version {v}; this workbench reads version {ASSESSMENT_VERSION}")
        return v

    @field_validator("answers", mode="before")
    @classmethod
    def _known_ids_and_kinds(cls, v: Any) -> Any:
        """Every unknown id and every answer of the wrong kind, reported together."""
        if not isinstance(v, dict):
            return v
        problems = []
        for cid, raw in v.items():
            value = _yes_no(raw.get("answer") if isinstance(raw, dict) else raw)
            if cid not in CRITERIA:
                problems.append(f"answers.{cid}: unknown criterion id; valid ids: {', '.join(CRITERIA)}")
            elif (msg := _check_answer(cid, value)) is not None:
                problems.append(f"answers.{cid}: {msg}")
        if problems:
            raise ValueError("\n".join(problems))
        return v

    @field_validator("claims")
    @classmethod
    def _known_claims(cls, v: dict[str, str]) -> dict[str, str]:
        for k, value in v.items():
            if k not in CLAIMS:
                raise ValueError(f"unknown claim {k!r}; valid claims: {', '.join(CLAIMS)}")
            if value not in ("yes", "no", UNKNOWN):
                raise ValueError(f"claims.{k}: expected yes, no or unknown; got {value!r}")
        return v

    @model_validator(mode="after")
    def _answers_fit_their_kind(self) -> Assessment:
        problems = [f"answers.{cid}: {msg}" for cid, a in self.answers.items()
                    if (msg := _check_answer(cid, a.answer)) is not None]  # e.g. a float parsed as days
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def answer(self, cid: str) -> Answer:
        """The answer for criterion ``cid``; a missing id is ``unknown``."""
        return self.answers.get(cid) or Answer(answer=UNKNOWN)

    def claim(self, claim_id: str) -> str:
        return self.claims.get(claim_id, UNKNOWN)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys allowed at ``loc`` (top level, a source, an answer, an answer's evidence)."""
    shape = tuple("[]" if isinstance(p, int) else "*" if i == 1 and loc[0] in ("answers", "claims") else p
                  for i, p in enumerate(loc))
    models = {(): Assessment, ("sources", "[]"): Source, ("answers", "*"): Answer,
              ("answers", "*", "evidence"): Evidence}
    return list(models[shape].model_fields) if shape in models else []


def _describe(exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        loc = tuple(p for p in e["loc"] if p not in ("function-before[_as_answer(), Answer]",))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys here: {', '.join(_allowed_keys(loc[:-1]))}"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] not in ("value_error",):
            msg = f"{msg}, got {e['input']!r}"[:200]
        where = _path(loc)
        out.extend(line if not where or line.startswith(f"{where}.") else f"{where}: {line}"
                   for line in msg.splitlines())
    return out


def parse_assessment(data: Any, source: str = "assessment") -> Assessment:
    """Validate a mapping; raise :class:`SpecError` listing every problem by its path."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with provider, assessed_on, sources, answers; "
                        f"got {type(data).__name__}")
    try:
        return Assessment.model_validate(data)
    except ValidationError as exc:
        problems = _describe(exc)
        raise SpecError(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems)) from None


def load_assessment(path: str | Path) -> Assessment:
    """Read and validate an assessment YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such assessment file (`workbench provider template > {path.name}` makes one)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from None
    return parse_assessment(data, str(path))


def template(today: dt.date | None = None) -> str:
    """A complete assessment file: every criterion id ``unknown``, with a one-line explanation each."""
    today = today or dt.date.today()
    lines = [
        "# Provider assessment (workbench provider assess FILE.yaml). Criteria and sources: docs/PROVIDERS.md.",
        "# Answer each id with yes, no, unknown or a value; add `evidence: {quote, source}` where you can:",
        "#   erasure_on_request: {answer: yes, evidence: {quote: \"...\", source: privacy policy §5}}",
        "# An assessment aid, not legal advice.",
        f"version: {ASSESSMENT_VERSION}",
        "provider: Name of the provider",
        f"assessed_on: {today.isoformat()}",
        "sources: []   # e.g. - {source: https://provider.example/privacy, read_on: " + today.isoformat() + "}",
        "claims:       # statements the workbench's measurements can contradict",
    ]
    lines += [f"  {c.id}: unknown   # {c.text}" for c in CLAIMS.values()]
    lines.append("answers:")
    meets = {"yes_no": lambda c: f"meets: {c.good_answer}", "days": lambda c: f"meets: ≤ {c.max_days} days",
             "text": lambda c: "meets: a value"}
    for c in CRITERIA.values():
        lines.append(f"  {c.id}: unknown   # {c.good} [{KIND_HINT[c.kind]}; {meets[c.kind](c)}]")
    return "\n".join(lines) + "\n"
