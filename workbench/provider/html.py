"""``provider.html``: the provider check as one self-contained page, in the style of ``report.html``
(:mod:`workbench.report.html`'s CSS; inline styles, no script, no external request).

Pictures first: the grade on the A–E scale and one card per Mozilla-style domain, then blockers, what was
measured beside what is stated, every criterion with its answer, verdict and source, the questions to send,
and the request letters to copy. Rendered from the ``provider.json`` record (:mod:`.check`) only.
"""

from __future__ import annotations

import html

from workbench.provider.grade import GRADE_ORDER
from workbench.report.html import CSS as REPORT_CSS

CSS = REPORT_CSS + """
.scale{display:flex;gap:4px;margin:10px 0}.scale span{width:44px;height:44px;border-radius:6px;display:flex;
align-items:center;justify-content:center;font-weight:700;font-size:20px;color:#fff;opacity:.25}
.scale span.on{opacity:1;outline:3px solid #1d2330}.s-A{background:#2e7d32}.s-B{background:#7cb342}
.s-C{background:#c98a00}.s-D{background:#d84315}.s-E{background:#8e0000}.s-NA{background:#9e9e9e}
.v-meets{color:#2e7d32;font-weight:600}.v-falls{color:#b71c1c;font-weight:600}.v-unknown{color:#8a8f99}
.ok{background:#eef7ee;border-left:4px solid #2e7d32;padding:8px 12px;margin:8px 0}
pre.letter{white-space:pre-wrap;background:#f7f8fa;border:1px solid #dde1e6;padding:10px;font-size:12px;max-width:900px}
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _scale(letter: str) -> str:
    cells = "".join(f'<span class="s-{g.replace("/", "")}{" on" if g == letter else ""}">{esc(g)}</span>'
                    for g in GRADE_ORDER)
    return f'<div class="scale" aria-label="grade {esc(letter)}">{cells}</div>'


def _domains(r: dict) -> str:
    cards = []
    for domain, items in r["warnings"].items():
        body = "<ul>" + ("".join(f"<li>{esc(i)}</li>" for i in items) or "<li>no warning</li>") + "</ul>"
        badge = "g-HIGH" if items else "g-LOW"
        cards.append(f'<div class="gradecard"><span class="lbl">{esc(domain)}</span>'
                     f'<span class="grade {badge}">{"WARNING" if items else "OK"}</span>{body}</div>')
    label = ('<p class="warn"><b>The label applies.</b> ' if r["label"] else '<p class="muted">No label. ')
    return f'<div class="gradebox">{"".join(cards)}</div>{label}{esc(r["label_rule"])}</p>'


def _blockers(r: dict) -> str:
    if not r["blockers"]:
        return '<p class="ok">No blocker.</p>'
    rows = "".join(f"<tr><td><code>{esc(b['id'])}</code></td><td>{esc(b['text'])}</td><td>"
                   f"{'measured' if b['measured'] else 'stated'}: {esc(b['detail'])}</td>"
                   f"<td>{esc(b['source'])}</td></tr>" for b in r["blockers"])
    return f"<table><tr><th>id</th><th>blocker</th><th>from</th><th>source</th></tr>{rows}</table>"


def _evidence(r: dict) -> str:
    if not r["evidence"]:
        return ('<p class="muted">No measurement given. Audit the provider\'s headshots against your selfies '
                "(<code>workbench audit --json</code>) or its model file (<code>workbench run</code>, "
                "<code>workbench mia --json</code>) and pass the output with <code>--evidence</code>.</p>")
    contra = "".join(f'<p class="warn"><b>Contradiction.</b> {esc(c)}</p>' for c in r["contradictions"])
    rows = "".join(f"<tr><td><code>{esc(m['key'])}</code></td><td>{esc(m['text'])}</td><td>{esc(m['scope'])}</td>"
                   f"<td><code>{esc(m['source'])}</code></td></tr>" for m in r["evidence"])
    return (contra + "<table><tr><th>metric</th><th>value [95% CI], n</th><th>measured on</th><th>file</th></tr>"
            f"{rows}</table>")


def _criteria(r: dict) -> str:
    rows = []
    for c in r["criteria"]:
        cls = {"meets": "v-meets", "falls short": "v-falls"}.get(c["verdict"], "v-unknown")
        ev = c.get("evidence")
        quote = f"“{esc(ev['quote'])}” <span class=\"muted\">({esc(ev['source'])})</span>" if ev else ""
        rows.append(f"<tr><td><code>{esc(c['id'])}</code><span class=\"dir\">{esc(c['good'])}</span></td>"
                    f"<td>{esc(c['answer'])}</td><td class=\"{cls}\">{esc(c['verdict'])}"
                    f"{' (blocker)' if c['point'] == 'blocker' else ''}</td><td>{quote}</td>"
                    f"<td class=\"muted\">{esc(c['source'])}</td></tr>")
    return ("<table class=\"card\"><tr><th>criterion</th><th>answer</th><th>verdict</th><th>evidence</th>"
            f"<th>source</th></tr>{''.join(rows)}</table>")


def render(r: dict) -> str:
    """The page for one ``provider.json`` record."""
    p = r["points"]
    sources = ("".join(f"<li>{esc(s['source'])} (read {esc(s['read_on'])})</li>" for s in r["sources"])
               or "<li>none given</li>")
    questions = "".join(f"<li><code>{esc(q['criterion'])}</code> — {esc(q['text'])} <span class=\"muted\">"
                        f"({esc(q['why'])})</span></li>" for q in r["questions"]) or "<li>nothing left to ask</li>"
    letters = "".join(f"<h3>{esc(x['article'])}: {esc(x['kind'])} (answer due {esc(x['due'])})</h3>"
                      f'<pre class="letter">{esc(x["text"])}</pre>' for x in r["requests"])
    body = (f"<h1>Provider check: {esc(r['provider'])}</h1>"
            f"<p class=\"muted\">Assessed on {esc(r['assessed_on'])}. {esc(r['not_legal_advice'])}</p>"
            f"{_scale(r['grade'])}"
            f"<p><b>Grade {esc(r['grade'])}</b>: balance {p['good']} good − {p['bad']} bad − 3 × {p['blocker']} "
            f"blocker = <b>{r['balance']}</b>; {p['unknown']} unknown (no point).</p>"
            f"<p class=\"muted\">{esc(r['rule'])}</p>"
            f"<h2>Warnings by domain</h2>{_domains(r)}"
            f"<h2>Blockers</h2>{_blockers(r)}"
            f"<h2>Measured beside stated</h2>{_evidence(r)}"
            f"<h2>Criteria</h2><div class=\"scroll\">{_criteria(r)}</div>"
            f"<h2>What to ask the provider</h2><ul class=\"notes\">{questions}</ul>"
            f"<h2>Requests to send</h2>{letters}"
            f"<h2>Sources read</h2><ul>{sources}</ul>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
            "style-src 'unsafe-inline'\">"
            f"<title>Provider check: {esc(r['provider'])}</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")
