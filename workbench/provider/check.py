"""One call for the CLI and the app: an assessment plus evidence → the ``provider.json`` record, and the
files ``provider.json`` + ``provider.html`` in a folder.

``provider.json``: ``provider``, ``assessed_on``, ``grade``, ``balance``, ``points``, ``rule``, ``blockers``,
``criteria`` (id, answer, verdict, point, source, domain, evidence), ``warnings`` (per domain), ``label``,
``findings``, ``contradictions``, ``evidence`` (value, CI, n, source), ``questions``, ``requests``,
``not_legal_advice``. No face image and no file of the person is copied into it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path

from workbench.provider import requests
from workbench.provider.assessment import Assessment
from workbench.provider.evidence import Measurement
from workbench.provider.grade import grade

PROVIDER_JSON = "provider.json"
PROVIDER_HTML = "provider.html"


def check(assessment: Assessment, evidence: list[Measurement] | None = None, today: dt.date | None = None) -> dict:
    """The whole provider check as a JSON-ready dict."""
    result = grade(assessment, evidence)
    return result.to_dict() | requests.to_dict(result, today)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_outputs(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``provider.json`` and ``provider.html`` into ``out_dir`` (atomically); returns both paths."""
    from workbench.provider.html import render

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / PROVIDER_JSON, json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    _write(out / PROVIDER_HTML, render(report))
    return out / PROVIDER_JSON, out / PROVIDER_HTML
