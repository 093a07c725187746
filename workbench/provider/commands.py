"""CLI: ``workbench provider template | assess | compare``.

    workbench provider template > my-provider.yaml
    workbench provider assess FILE.yaml [--evidence PATH ...] [--json] [--out DIR]
    workbench provider compare A.yaml B.yaml ... [--evidence-for FILE.yaml=PATH ...] [--json]

``assess`` writes ``provider.json`` and ``provider.html`` into ``--out`` (default: ``provider-<FILE stem>``
in the current folder) and prints a summary (or the whole record with ``--json``). ``compare`` ranks
several providers by grade, then balance, in one table. An assessment aid, not legal advice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench.errors import UserError


def _template(args: argparse.Namespace) -> int:
    from workbench.provider.assessment import template

    sys.stdout.write(template())
    return 0


def summary(r: dict) -> str:
    """A short text summary of one ``provider.json`` record."""
    p = r["points"]
    lines = [f"{r['provider']} (assessed {r['assessed_on']}): grade {r['grade']} — balance {r['balance']} "
             f"= {p['good']} good − {p['bad']} bad − 3·{p['blocker']} blocker; {p['unknown']} unknown",
             f"rule: {r['rule']}"]
    lines += [f"BLOCKER {b['id']}: {b['text']} ({'measured' if b['measured'] else 'stated'}: {b['detail']})"
              for b in r["blockers"]]
    lines += [f"warning [{d}] {w}" for d, ws in r["warnings"].items() for w in ws]
    lines += [f"CONTRADICTION: {c}" for c in r["contradictions"]]
    lines += [f"measured {m['key']}: {m['text']} ({m['scope']})" for m in r["evidence"]]
    lines.append(f"{len(r['questions'])} questions to send and {len(r['requests'])} request letters "
                 "in provider.json / provider.html")
    lines.append(r["not_legal_advice"])
    return "\n".join(lines)


def _assess(args: argparse.Namespace) -> int:
    from workbench.provider.assessment import load_assessment
    from workbench.provider.check import check, write_outputs
    from workbench.provider.evidence import load_all

    report = check(load_assessment(args.file), load_all(args.evidence))
    out = args.out or Path(f"provider-{Path(args.file).stem}")
    json_path, html_path = write_outputs(report, out)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        print(summary(report))
        print(f"wrote {json_path} and {html_path}")
    return 0


def _evidence_for(items: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--evidence-for {item!r}: write FILE.yaml=PATH")
        out.setdefault(str(Path(name)), []).append(path)
    return out


def ranked(reports: list[dict]) -> list[dict]:
    """Best first: grade A…E, then N/A; within a grade the higher balance, then fewer unknowns."""
    from workbench.provider.grade import GRADE_ORDER

    return sorted(reports, key=lambda r: (GRADE_ORDER.index(r["grade"]), -r["balance"], r["points"]["unknown"]))


def compare_table(reports: list[dict]) -> str:
    rows = ["| rank | provider | grade | balance | good | bad | blockers | unknown | blocker reasons |",
            "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(ranked(reports), 1):
        p = r["points"]
        reasons = "; ".join(b["text"] for b in r["blockers"]) or "—"
        rows.append(f"| {i} | {r['provider']} | {r['grade']} | {r['balance']} | {p['good']} | {p['bad']} | "
                    f"{p['blocker']} | {p['unknown']} | {reasons} |")
    from workbench.provider.grade import RULE

    return "\n".join(rows) + f"\n\n{RULE}"


def _compare(args: argparse.Namespace) -> int:
    from workbench.provider.assessment import load_assessment
    from workbench.provider.check import check
    from workbench.provider.evidence import load_all

    extra = _evidence_for(args.evidence_for)
    unknown = sorted(set(extra) - {str(Path(f)) for f in args.files})
    if unknown:
        raise UserError(f"--evidence-for {unknown[0]}: not among the files compared")
    reports = [check(load_assessment(f), load_all(extra.get(str(Path(f))))) for f in args.files]
    print(json.dumps(ranked(reports), indent=1, ensure_ascii=False) if args.json else compare_table(reports))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("provider", help="grade a headshot provider's stated practice beside measured leakage",
                       description="Provider check (docs/PROVIDERS.md): grade what a headshot service states "
                                   "against GDPR-grade criteria, beside what its outputs and model file leak. "
                                   "An assessment aid, not legal advice.")
    ps = p.add_subparsers(dest="provider_command", required=True, metavar="ACTION")
    t = ps.add_parser("template", help="print an assessment file with every criterion unknown")
    t.set_defaults(func=_template)
    a = ps.add_parser("assess", help="grade one assessment file; write provider.json and provider.html")
    a.add_argument("file", type=Path, help="assessment YAML (see `workbench provider template`)")
    a.add_argument("--evidence", action="append", metavar="PATH",
                   help="output of `workbench audit --json`, `workbench mia --json`, a run folder (results.json) "
                        "or a model bundle (.tar); repeatable")
    a.add_argument("--json", action="store_true", help="print the whole provider.json record")
    a.add_argument("--out", type=Path, help="folder for provider.json and provider.html (default provider-<stem>)")
    a.set_defaults(func=_assess)
    c = ps.add_parser("compare", help="rank several providers side by side in one table")
    c.add_argument("files", type=Path, nargs="+", help="assessment YAML files")
    c.add_argument("--evidence-for", action="append", metavar="FILE.yaml=PATH",
                   help="evidence for one of the files (as assess --evidence); repeatable")
    c.add_argument("--json", action="store_true", help="print the ranked records as JSON")
    c.set_defaults(func=_compare)
