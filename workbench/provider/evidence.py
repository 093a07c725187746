"""Measured evidence about a provider: numbers from the workbench's own outputs, read without re-running.

Readers (a registry; each recognises its input by content, never by file name):

- ``audit``: the JSON of ``workbench audit --json`` (the provider's headshots against the person's selfies;
  headshots in a ``no_identifier/`` sub-folder are generations the person did not ask for: concept bleed);
- ``run``: a run folder's ``results.json`` (:func:`workbench.results.load_results`), e.g. of a
  ``workbench run`` on the provider's exported model file; every row that finished (the ``none`` control's
  numbers are marked ``control``: shown beside the others, never graded);
- ``mia``: the JSON of ``workbench mia --json`` on the provider's model file;
- ``bundle``: an exported/imported model bundle (``.tar``, or a folder with ``bundle.json``): the leakage
  scores of its model card (``workbench.lifecycle.bundle``), which carry value and CI but not n;
- ``inspect``: the JSON of ``workbench inspect --json`` on the provider's model file: one measurement per kind
  of finding (``modelfile.<kind>``: how many, out of n files inspected), e.g. ``modelfile.training_photo``
  when the file holds a copy of one of the person's photos (:mod:`workbench.modelfile.findings`).

Each number is a :class:`Measurement` with its value, 95% CI and n, under the metric keys of
``workbench/metrics/registry.py`` (``bleed.verification_rate``, ``memorization.extraction_rate``,
``mia.<attack>.auc``, ``identity.*``). A folder is read as a run folder (``results.json``), a bundle folder
(``bundle.json``), or else every ``*.json`` in it.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.errors import UserError

MAX_JSON_BYTES = 64 << 20
BUNDLE_META = "bundle.json"  # as workbench.lifecycle.bundle.META
_CI_TEXT = re.compile(r"^\s*(-?[\d.eE+-]+)(?:\s*\[(-?[\d.eE+-]+),\s*(-?[\d.eE+-]+)\])?")


@dataclass(frozen=True)
class Measurement:
    key: str                    # metric key, e.g. bleed.verification_rate
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | list | None        # None: the source does not record it (bundle model cards)
    source: str                 # the file it was read from
    scope: str                  # what was measured (e.g. "audit of the provider's headshots", a run row)
    control: bool = False       # measured on the untouched base (a control), not on the provider's model

    def text(self) -> str:
        if self.value is None:
            return "not measured"
        if self.key.startswith("modelfile."):
            return f"{int(self.value)} finding(s) among {self.n} file(s) of the model file"
        ci = f" [{self.ci_low:.3f}, {self.ci_high:.3f}]" if self.ci_low is not None and self.ci_high is not None else ""
        return f"{self.value:.3f}{ci}, n = {self.n if self.n is not None else 'not recorded'}"

    def to_dict(self) -> dict:
        return asdict(self) | {"text": self.text()}


def _metric(key: str, m: object, source: str, scope: str, control: bool = False) -> Measurement | None:
    if not isinstance(m, dict) or "value" not in m:
        return None
    f = {k: (float(m[k]) if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool) else None)
         for k in ("value", "ci_low", "ci_high")}
    return Measurement(key, f["value"], f["ci_low"], f["ci_high"], m.get("n"), source, scope, control)


def _from_audit(data: dict, source: str) -> list[Measurement]:
    scope = "audit of the provider's headshots against the person's photos"
    ident, memo = data.get("identity", {}), data.get("memorization", {})
    pairs = [(f"identity.{k}", ident.get(k)) for k in ("verification_rate", "ism_holdout", "fdfr")]
    pairs += [(f"bleed.{k}", ident.get("concept_bleed", {}).get(k)) for k in ("verification_rate", "ism_holdout")]
    pairs += [("memorization.extraction_rate", memo.get("extraction_rate")), ("memorization.gap", memo.get("gap"))]
    return [m for k, v in pairs if (m := _metric(k, v, source, scope))]


def _from_results(data: dict, source: str) -> list[Measurement]:
    from workbench.results import CONTROL_RECIPE, validate_results

    validate_results(data, source)
    out = []
    for row in data["rows"]:
        if row["status"] != "ok":
            continue
        control = row["recipe"] == CONTROL_RECIPE
        scope = f"run row {row['label']} (seed {row['seed']})" + (" — the untouched base (control)" if control else "")
        out += [m for k, v in row["metrics"].items() if (m := _metric(k, v, source, scope, control))]
    return out


def _from_mia(data: dict, source: str) -> list[Measurement]:
    out = []
    for key, scope in (("attacks", f"membership inference on model {data.get('recipe', '?')}"),
                       ("base_control", "membership inference on the untouched base (control)")):
        for attack, r in (data.get(key) or {}).items():
            out += [m for k in ("auc", "advantage")
                    if (m := _metric(f"mia.{attack}.{k}", r.get(k), source, scope, key == "base_control"))]
    return out


def _parse_card_value(text: object) -> dict | None:
    match = _CI_TEXT.match(text) if isinstance(text, str) else None
    if not match:
        return None
    lo, hi = match.group(2), match.group(3)
    return {"value": float(match.group(1)), "ci_low": float(lo) if lo else None,
            "ci_high": float(hi) if hi else None, "n": None}


def _from_bundle(data: dict, source: str) -> list[Measurement]:
    leakage = data.get("leakage")
    if not isinstance(leakage, dict):
        return []
    scope = f"model card of exported model {data.get('recipe', '?')} ({str(data.get('param_hash', ''))[:12]})"
    return [m for k, v in leakage.items() if isinstance(v, dict)
            and (m := _metric(k, _parse_card_value(v.get("value")), source, scope))]


def _from_inspect(data: dict, source: str) -> list[Measurement]:
    scope = f"inspection of the provider's model file ({data.get('container', '?')}, grade {data.get('grade', '?')})"
    counts: dict[str, int] = {}
    for f in data.get("findings") or []:
        if isinstance(f, dict) and isinstance(f.get("kind"), str):
            counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    n = len(data.get("entries") or [])
    return [Measurement(f"modelfile.{kind}", float(c), None, None, n, source, scope)
            for kind, c in sorted(counts.items())]


@dataclass(frozen=True)
class Reader:
    kind: str
    recognises: Callable[[dict], bool]
    read: Callable[[dict, str], list[Measurement]]


READERS: tuple[Reader, ...] = (
    Reader("run", lambda d: "rows" in d and "schema" in d, _from_results),
    Reader("audit", lambda d: "identity" in d and "memorization" in d, _from_audit),
    Reader("mia", lambda d: "attacks" in d, _from_mia),
    Reader("bundle", lambda d: "leakage" in d and "param_hash" in d, _from_bundle),
    Reader("inspect", lambda d: "findings" in d and "grade_meaning" in d and "entries" in d, _from_inspect),
)


def read_data(data: object, source: str) -> list[Measurement]:
    """Measurements from one JSON document, by whichever reader recognises it."""
    for reader in READERS:
        if isinstance(data, dict) and reader.recognises(data):
            return reader.read(data, source)
    raise UserError(f"--evidence {source}: not the JSON of `workbench audit --json`, `workbench mia --json`, "
                    "`workbench inspect --json`, a run's results.json or a bundle's bundle.json")


def _json(path: Path) -> object:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise UserError(f"--evidence {path}: larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"--evidence {path}: not valid JSON ({exc})") from None


def _bundle_tar(path: Path) -> object:
    """``bundle.json`` of a bundle, read alone (the tar is not extracted; its size is limited)."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            member = tar.getmember(BUNDLE_META)
            if not member.isfile() or member.size > MAX_JSON_BYTES:
                raise KeyError(BUNDLE_META)
            return json.loads(tar.extractfile(member).read())
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise UserError(f"--evidence {path}: not a workbench model bundle with a {BUNDLE_META} ({exc})") from None


def load_evidence(path: str | Path) -> list[Measurement]:
    """Measurements from one ``--evidence`` path (file or folder; see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        if (path / "results.json").is_file():
            from workbench.results import load_results

            return _from_results(load_results(path), str(path / "results.json"))
        if (path / BUNDLE_META).is_file():
            return read_data(_json(path / BUNDLE_META), str(path / BUNDLE_META))
        files = sorted(path.glob("*.json"))
        if not files:
            raise UserError(f"--evidence {path}: the folder holds no results.json, {BUNDLE_META} or *.json")
        return [m for f in files for m in read_data(_json(f), str(f))]
    if not path.is_file():
        raise UserError(f"--evidence {path}: no such file or folder")
    if tarfile.is_tarfile(path):
        return read_data(_bundle_tar(path), str(path))
    return read_data(_json(path), str(path))


def load_all(paths: list[str | Path] | None) -> list[Measurement]:
    return [m for p in paths or [] for m in load_evidence(p)]
