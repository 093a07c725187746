"""``report.html``: one self-contained page a privacy reviewer can read, from ``results.json``.

:func:`write_report` reads ``run_dir/results.json`` (validated, :mod:`workbench.results`) and
``spec.json`` (prompts), draws the figures (:mod:`workbench.report.plots`, also written to
``run_dir/plots/*.png``) and writes ``run_dir/report.html``: inline CSS, images as base64 data URIs,
no script, no external request. Every file is registered in the subject's manifest (kind ``report``)
so erasure finds it; the page holds face images (generations and their nearest training photos), so
it is personal data like the photos themselves.

Sections: header (run, pseudonymous subject id, backbone, sample sizes), risk grades with the rules
and thresholds that produced them, the scorecard, the fidelity–leakage frontier, the gallery of
closest generations beside their nearest training photo, distance distributions, MIA ROC curves,
what these sample sizes support, and methods (each metric's paper, equation, direction, control).

Provenance: every number is rendered as ``<span class="num" data-src="SRC">`` where SRC recomputes it
from results.json (:func:`workbench.report.scorecard.evaluate`); every string taken from results.json
or spec.json as ``<span class="txt" data-src="POINTER">``. ``tests/test_report.py`` parses the page and
checks each one, and that no other number appears.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path

from workbench import paths, records
from workbench.lifecycle import manifest, sealed
from workbench.metrics import registry
from workbench.report import plots
from workbench.report.extraction import extraction_html
from workbench.report.scorecard import (
    GRADE_MEANING,
    LEVELS,
    OTHER_GRADES,
    RULES,
    THRESHOLDS,
    Cell,
    Num,
    Scorecard,
    pointer,
    recipe_grades,
    rule_segments,
    sample_size_notes,
    scorecard,
)
from workbench.results import load_run

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
THUMB_SIDE = 160  # gallery thumbnails are at most this many pixels a side (original size if smaller)
IMAGE_FORMATS = ["PNG", "JPEG", "WEBP"]

CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#1d2330;margin:0;
background:#f4f5f7}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:34px 0 10px;border-bottom:2px solid #e3e6ea;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}p{margin:6px 0 10px;max-width:980px}.muted{color:#5b6474}
nav a{margin-right:14px;color:#2456a6;text-decoration:none;font-size:13px}
table{border-collapse:collapse;margin:8px 0 14px}th,td{border:1px solid #dde1e6;padding:5px 7px;vertical-align:top}
th{background:#f0f2f5;font-weight:600;text-align:left}
table.facts td:first-child{color:#5b6474;white-space:nowrap}
.scroll{overflow-x:auto}table.card{font-size:12px;width:100%}table.card td,table.card th{padding:4px 5px}
table.card th{font-size:11.5px}
th.group{text-align:center;background:#e5e9f0}th.fid{background:#e8f1fb}th.leak{background:#fbeeee}
td.rowhead{white-space:nowrap;font-weight:600}td.rowhead .grade{margin-top:3px}tr.control td{background:#f7f7f7}
.v{font-weight:600;font-size:13px}.ci,.n,.ctl{color:#5b6474;font-size:11px;display:block;white-space:nowrap}
.dir{font-weight:400;color:#5b6474;font-size:11px;display:block}
.missing{color:#8a8f99;font-style:italic}
.grade{display:inline-block;padding:1px 8px;border-radius:10px;font-size:11px;font-weight:700;color:#fff;
letter-spacing:.03em}
.g-LOW{background:#2e7d32}.g-MEDIUM{background:#c98a00}.g-HIGH{background:#d84315}.g-SEVERE{background:#8e0000}
.g-CONTROL{background:#555}.g-FAILED{background:#777}.g-UNGRADED{background:#9e9e9e}
.gradebox{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 12px;align-items:flex-start}
.gradecard{border:1px solid #dde1e6;border-radius:6px;padding:8px 12px;min-width:190px;max-width:380px}
.gradecard .lbl{font-weight:700;margin-right:6px}.gradecard ul{margin:6px 0 0 16px;padding:0;font-size:12px}
.warn{background:#fff5e0;border-left:4px solid #c98a00;padding:8px 12px;margin:8px 0}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
.pair{border:1px solid #dde1e6;border-radius:6px;padding:6px;font-size:11px}
.pair .imgs{display:flex;gap:4px}.pair figure{margin:0;text-align:center}
.pair img{width:112px;height:112px;image-rendering:pixelated;border-radius:3px;background:#eee;display:block}
.noimg{width:112px;height:112px;display:flex;align-items:center;justify-content:center;background:#eee;color:#777;
font-size:10px;text-align:center;border-radius:3px}
img.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
code,.json{font-family:"DejaVu Sans Mono",Menlo,monospace;font-size:11px}.error{color:#8e0000}
ul.notes li{margin:4px 0}
"""


# --- Small rendering helpers -----------------------------------------------------------------------

def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def num(n: Num | None) -> str:
    if n is None:
        return '<span class="missing">—</span>'
    return f'<span class="num" data-src="{esc(n.src)}" title="{esc(n.src)}">{esc(n.text)}</span>'


def txt(text: object, src: str, tag: str = "span", cls: str = "txt") -> str:
    """A string taken from results.json (``src``: JSON pointer) or spec.json (``spec.json#POINTER``);
    ``cls="key"``: the text is the last key of the pointer (an object key, not a value)."""
    return f'<{tag} class="{cls}" data-src="{esc(src)}">{esc(text)}</{tag}>'


def segments(parts: list) -> str:
    return "".join(num(p) if isinstance(p, Num) else esc(p) for p in parts)


def grade_badge(level: str) -> str:
    return f'<span class="grade g-{esc(level)}">{esc(level)}</span>'


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def resolve_image(kind: str, ref: str, run_dir: Path) -> Path | None:
    """The file behind a ``nearest`` path, or None when it is missing or outside its folder.

    ``generated`` paths are relative to the run folder; ``train`` paths are absolute or relative to the
    data root and must lie inside it (a results.json can never make the report embed other files)."""
    root = Path(run_dir).resolve() if kind == "generated" else paths.home()
    path = Path(ref)
    path = (root / path).resolve() if not path.is_absolute() else path.resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return sealed.working(path)  # an encrypted subject's photo: its working copy while the report is written


def thumbnail_uri(path: Path, side: int = THUMB_SIDE) -> str | None:
    from PIL import Image

    try:
        with Image.open(path, formats=IMAGE_FORMATS) as im:
            im = im.convert("RGB")
            if max(im.size) > side:
                im.thumbnail((side, side), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except (OSError, ValueError) as exc:
        log.warning("gallery: cannot read %s (%s)", path.name, exc)
        return None
    return data_uri(buf.getvalue())


# --- Sections --------------------------------------------------------------------------------------

def header_html(results: dict) -> str:
    run = results["run"]
    seeds = ", ".join(num(Num(s, pointer("run", "seeds", k), "int")) for k, s in enumerate(run["seeds"]))
    facts = [
        ("Run", txt(run["name"], "/run/name")),
        ("Subject (pseudonymous id)", txt(run["subject_id"], "/run/subject_id")),
        ("Backbone", txt(run["backbone"], "/run/backbone")),
        ("Device", txt(run["device"], "/run/device")),
        ("Seeds", seeds),
        ("Members (training photos)", num(Num(run["n_train"], "/run/n_train", "int"))),
        ("Non-members (holdout photos of the same person)", num(Num(run["n_holdout"], "/run/n_holdout", "int"))),
        ("Created", txt(run["created"], "/run/created")),
        ("Spec sha256", "<code>" + txt(run["spec_sha256"], "/run/spec_sha256") + "</code>"),
    ]
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in facts)
    return (f"<h1>Privacy-risk report: {txt(run['name'], '/run/name')}</h1>"
            '<p class="muted">Identity fidelity and leakage of personalised fine-tuning recipes, each against the '
            "untouched base model (<code>none</code>). Every number on this page comes from this run's "
            "<code>results.json</code>; hover a number to see which entry.</p>"
            f'<table class="facts">{rows}</table>')


def grades_html(card: Scorecard, results: dict) -> str:
    cards = []
    for label, level, rows in recipe_grades(card):
        items = []
        for row in rows:
            seed = num(Num(row.seed, pointer("rows", row.index, "seed"), "int"))
            if row.grade.level == "FAILED":
                err = txt(row.error, pointer("rows", row.index, "error"), cls="txt error")
                items.append(f"<li>seed {seed}: failed: {err}</li>")
            for reason in row.grade.reasons:
                items.append(f"<li>seed {seed}: {grade_badge(reason.level)} {segments(reason.segments())}</li>")
            if row.grade.unmeasured and row.grade.level in LEVELS:
                items.append(f"<li>seed {seed}: not measured, so not graded on: "
                             f"{esc(', '.join(sorted(set(row.grade.unmeasured))))}</li>")
        name = txt(label, pointer("rows", rows[0].index, "label"))
        cards.append(f'<div class="gradecard"><span class="lbl">{name}</span>{grade_badge(level)}'
                     f'<div class="muted">{esc(GRADE_MEANING[level])}</div><ul>{"".join(items)}</ul></div>')
    rules = "".join(f"<tr><td>{grade_badge(level)}</td><td><code>{esc(rule)}</code></td>"
                    f"<td>{segments(rule_segments(rule))}</td></tr>" for rule, (level, _) in RULES.items())
    meanings = "".join(f"<tr><td>{grade_badge(g)}</td><td>{esc(GRADE_MEANING[g])}</td></tr>"
                       for g in LEVELS[::-1] + OTHER_GRADES)
    warnings = "".join(f'<div class="warn">{segments(w)}</div>' for w in card.warnings)
    return (
        '<h2 id="grades">Risk grades</h2>'
        "<p>Each recipe is graded on its leakage against the control of the same seed; with several seeds the "
        "worst seed decides. A grade is the highest level of any rule below that fires; under each recipe, the rules "
        "that fired and the numbers that made them fire.</p>"
        f'<div class="gradebox">{"".join(cards)}</div>{warnings}'
        "<h3>Rules and thresholds</h3>"
        f'<table class="rules"><tr><th>grade</th><th>rule</th><th>fires when</th></tr>{rules}</table>'
        "<p>The control is checked too: a warning is shown when the untouched base model's <em>raw</em> AUC has a "
        f"permutation p-value below {num(Num(THRESHOLDS['alpha_control'], 'threshold:alpha_control', 'g3'))} "
        "(its members and non-members differ before any training).</p>"
        f'<table class="rules"><tr><th>grade</th><th>meaning</th></tr>{meanings}</table>')


def _cell_html(cell: Cell) -> str:
    if cell.missing:
        note = f' title="{esc(cell.note)}"' if cell.note else ""
        return f'<td><span class="missing"{note}>{esc(cell.missing)}</span></td>'
    out = f'<span class="v">{num(cell.value)}</span>'
    if cell.ci_low is not None and cell.ci_high is not None:
        out += f'<span class="ci">[{num(cell.ci_low)}, {num(cell.ci_high)}]</span>'
    out += '<span class="n">n = ' + " / ".join(num(n) for n in cell.n) + "</span>"
    if cell.p_value is not None:
        out += f'<span class="n">p = {num(cell.p_value)}</span>'
    if cell.delta is not None:
        out += f'<span class="ctl">none {num(cell.control)}</span><span class="ctl">Δ {num(cell.delta)}</span>'
    return f"<td>{out}</td>"


def _title(column, results: dict) -> str:
    """A column's title; a metric key the scorecard does not name is shown as the key, traced to a row."""
    if column.title != column.key:
        return esc(column.title)
    i = next(i for i, r in enumerate(results["rows"]) if column.key in r["metrics"])
    return txt(column.key, pointer("rows", i, "metrics", column.key), cls="key")


def _table_html(card: Scorecard, columns, results: dict, groups: bool) -> str:
    head1 = ""
    if groups:
        n_fid = sum(c.group == "fidelity" for c in columns)
        head1 = (f'<tr><th></th><th class="group fid" colspan="{n_fid}">Identity fidelity</th>'
                 f'<th class="group leak" colspan="{len(columns) - n_fid}">Leakage (vs the none control)</th></tr>')
    heads = "".join(
        f'<th class="{"fid" if c.group == "fidelity" else "leak"}">{_title(c, results)}<span class="dir">'
        f'{"↑ higher is better" if c.direction == "higher_is_better" else "↓ lower is better"}</span></th>'
        for c in columns)
    body = []
    for row in card.rows:
        label = txt(row.label, pointer("rows", row.index, "label"))
        if row.is_control:
            label += ' <span class="muted">(control)</span>'
        seed = num(Num(row.seed, pointer("rows", row.index, "seed"), "int"))
        if results["run"].get("subjects"):  # a cohort: whose row this is
            seed += " · " + txt(results["rows"][row.index]["subject"], pointer("rows", row.index, "subject"))
        head = (f'<td class="rowhead">{label}<span class="n">seed {seed}</span>{grade_badge(row.grade.level)}</td>')
        if row.status != "ok":
            err = txt(row.error, pointer("rows", row.index, "error"), cls="txt error")
            body.append(f'<tr>{head}<td colspan="{len(columns)}">failed: {err}</td></tr>')
            continue
        cells = "".join(_cell_html(row.cells[c.key]) for c in columns)
        body.append(f'<tr class="{"control" if row.is_control else ""}">{head}{cells}</tr>')
    return (f'<div class="scroll"><table class="card">{head1}<tr><th>recipe</th>{heads}</tr>'
            f'{"".join(body)}</table></div>')


def scorecard_html(results: dict, card: Scorecard | None = None, with_style: bool = False) -> str:
    """The scorecard tables (also for notebooks: ``IPython.display.HTML(scorecard_html(results, with_style=True))``)."""
    card = card or scorecard(results)
    style = f"<style>{CSS}</style>" if with_style else ""
    return (style + '<h2 id="scorecard">Scorecard</h2>'
            "<p>One line per recipe and seed; seeds are <b>not averaged</b> (a mean of per-seed intervals is not an "
            "interval: <code>workbench compare</code> aggregates seeds, runs and subjects with a bootstrap over them). "
            "Each cell: the value, its 95% bootstrap interval [low, high] and the sample size n (for membership "
            "inference: members / non-members). Leakage cells also show the control's value for the same seed and "
            "the difference Δ.</p>"
            + _table_html(card, card.columns, results, groups=True)
            + "<h3>Membership inference detail</h3><p>AUC is difficulty-calibrated (each photo's score on the model "
              "minus its score on the untouched base, same noise: Watson et al.'s difficulty calibration), raw "
              "AUC is not; p is the two-sided permutation p-value of the AUC. Attacker advantage is the signed "
              "max(TPR − FPR) (Yeom et al.); TPR at FPR ≤ 1% is the TPR at the largest FPR not above 1% "
              "(ml_privacy_meter's definition), reported only with at least "
              f"{num(Num(100, 'const:min_nonmembers_for_tpr', 'int'))} non-members.</p>"
            + _table_html(card, card.mia_columns, results, groups=False)
            + (("<h3>Other measurements</h3><p>Further metrics recorded in results.json (see Methods for each one's "
                "definition and direction); leakage-type metrics are again shown next to the control.</p>"
                + _table_html(card, card.other_columns, results, groups=False)) if card.other_columns else ""))


def _clean_twin(i: int, rows: list[dict]) -> int | None:
    """The row that ran the same recipe, parameters and seed on the clean photos (for a protected row)."""
    row = rows[i]
    for j, other in enumerate(rows):
        if (j != i and other["status"] == "ok" and other["train"] and other["recipe"] == row["recipe"]
                and other["params"] == row["params"] and other["seed"] == row["seed"]
                and "protection" not in (other["train"].get("details") or {})):
            return j
    return None


def _fidelity_change(i: int, rows: list[dict]) -> str:
    """ISM holdout of a protected row minus its clean twin's: how far protection cut identity fidelity."""
    j = _clean_twin(i, rows)
    key = "identity.ism_holdout"
    if j is None or rows[i]["metrics"].get(key, {}).get("value") is None \
            or rows[j]["metrics"].get(key, {}).get("value") is None:
        return ""
    mine, theirs = pointer("rows", i, "metrics", key, "value"), pointer("rows", j, "metrics", key, "value")
    delta = rows[i]["metrics"][key]["value"] - rows[j]["metrics"][key]["value"]
    return (f'<span class="n">ISM holdout {num(Num(delta, f"diff({mine},{theirs})", "signed"))} vs '
            f'{txt(rows[j]["label"], pointer("rows", j, "label"))} on clean photos</span>')


def _parts_html(parts: list, base: str) -> str:
    """A record's description (:mod:`workbench.records`): text, and values traced to ``base`` + their path."""
    out = []
    for p in parts:
        if isinstance(p, records.Value):
            out.append(txt(p.value, base + p.path) if p.fmt == "text" else num(Num(p.value, base + p.path, p.fmt)))
        else:
            out.append(esc(p))
    return "".join(out)


def training_html(results: dict) -> str:
    """How each model was trained: one column per kind of training record the rows carry (protected photos,
    steps, early stopping, DP accounting, ...), each rendered by the record itself."""
    rows = [(i, r) for i, r in enumerate(results["rows"]) if r["status"] == "ok" and r["train"]]
    parsed = {i: records.parse(r["train"].get("details") or {}) for i, r in rows}
    kinds = [c for c in records.record_types() if any(c.KIND in p for p in parsed.values())]
    if not rows or not kinds:
        return ""
    body, statements = [], {}
    for i, row in rows:
        label = txt(row["label"], pointer("rows", i, "label"))
        seed = num(Num(row["seed"], pointer("rows", i, "seed"), "int"))
        cells = []
        for cls in kinds:
            rec = parsed[i].get(cls.KIND)
            base = pointer("rows", i, "train", "details", cls.KIND)
            cell = _parts_html(rec.describe(), base) if rec else esc(cls.ABSENT)
            if cls.KIND == "protection" and rec:
                cell += _fidelity_change(i, results["rows"])
            if rec and rec.statement() and cls.KIND not in statements:
                statements[cls.KIND] = "<p>" + _parts_html(rec.statement(), base) + "</p>"
            cells.append(f"<td>{cell}</td>")
        body.append(f'<tr><td class="rowhead">{label}<span class="n">seed {seed}</span></td>{"".join(cells)}</tr>')
    heads = ["recipe"] + [cls.COLUMN for cls in kinds]
    return ('<h2 id="training">Training and defences</h2>'
            "<p>What each model was trained on and how: protected photos (an Anti-DreamBooth perturbation within ε "
            "in the model's pixel scale; PSNR against the originals, higher = less visible), the steps run, the "
            "leakage-aware options (a cap on steps per photo, early stopping on the holdout denoising loss), and, for "
            "DP-SGD recipes, the privacy accountant's ε at δ with the noise multiplier σ, sampling rate q and "
            "clipping bound C.</p>" + "".join(statements.values())
            + '<div class="scroll"><table class="card"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in heads)
            + "</tr>" + "".join(body) + "</table></div>")


def gallery_html(results: dict, run_dir: Path) -> str:
    """Closest generations beside their nearest training photo, per recipe and seed."""
    run_dir = Path(run_dir)
    parts = []
    for i, row in enumerate(results["rows"]):
        if row["status"] != "ok" or not row["nearest"]:
            continue
        pairs = []
        for j, item in enumerate(row["nearest"]):
            imgs = []
            for kind, what in (("generated", "generated"), ("train", "nearest training photo")):
                path = resolve_image(kind, item[kind], run_dir)
                uri = thumbnail_uri(path) if path else None
                pic = (f'<img src="{uri}" alt="{esc(what)}">' if uri else
                       '<div class="noimg">image not available (erased or outside the data root)</div>')
                imgs.append(f"<figure>{pic}<figcaption>{esc(what)}</figcaption></figure>")
            p = pointer("rows", i, "nearest", j)
            hold = (f"; nearest holdout photo {num(Num(item['holdout_l2'], p + '/holdout_l2'))}"
                    if item["holdout_l2"] is not None else "")
            pairs.append(f'<div class="pair"><div class="imgs">{"".join(imgs)}</div>'
                         f"ℓ2 to it {num(Num(item['l2'], p + '/l2'))}{hold}</div>")
        name = txt(row["label"], pointer("rows", i, "label"))
        seed = num(Num(row["seed"], pointer("rows", i, "seed"), "int"))
        parts.append(f'<h3>{name}, seed {seed}</h3><div class="gallery">{"".join(pairs)}</div>')
    delta = results["meta"]["delta"]
    rule = (f"A generation within δ = {num(Num(delta, '/meta/delta'))} (registered pixel ℓ2) of a training photo "
            "counts as an extracted copy." if delta is not None else "")
    intro = ("<p>For each recipe, the generations that came closest to a training photo (pixel ℓ2, lower = closer), "
             "beside that photo. A model that learned the person but not the photos is about as close to an unseen "
             f"holdout photo as to the nearest training photo. {rule}</p>")
    return '<h2 id="gallery">Closest generations</h2>' + intro + ("".join(parts) or "<p>No generations listed.</p>")


def methods_html(results: dict, spec: dict | None) -> str:
    meta = results["meta"]
    rows = []
    for key, info in meta["metrics"].items():
        p = pointer("meta", "metrics", key)
        arrow = "↑ higher is better" if info["direction"] == "higher_is_better" else "↓ lower is better"
        rows.append(f"<tr><td><code>{txt(key, p, cls='key')}</code></td>"
                    f"<td>{txt(info['direction'], p + '/direction')} ({arrow})</td>"
                    f"<td>{txt(info['paper'], p + '/paper')}</td><td>{txt(info['equation'], p + '/equation')}</td>"
                    f"<td>{txt(info['control'], p + '/control')}</td></tr>")
    extra = ""
    if isinstance(meta.get("delta_provenance"), str):
        why = txt(meta["delta_provenance"], "/meta/delta_provenance")
        extra += f"<p>δ = {num(Num(meta['delta'], '/meta/delta'))}: {why}</p>"
    copy = meta.get("copy_similarity")
    if isinstance(copy, dict) and isinstance(copy.get("reason"), str):
        extra += f"<p>Copy similarity: {txt(copy['reason'], '/meta/copy_similarity/reason')}</p>"
    enc = meta["encoder"]
    encoder = (f"<p>Identity encoder {txt(enc['name'], '/meta/encoder/name')}: verification threshold "
               f"{num(Num(enc['threshold'], '/meta/encoder/threshold'))} at a false-accept rate of "
               f"{num(Num(enc['far'], '/meta/encoder/far'))}.</p>")
    notes = "".join(f"<li>{txt(n, pointer('meta', 'notes', k))}</li>" for k, n in enumerate(meta["notes"]))
    prompts = ""
    if spec and isinstance(spec.get("prompts"), dict):
        items = []
        for group, title in (("with_identifier", "identity fidelity (subject asked for)"),
                             ("without_identifier", "concept bleed (subject not asked for)")):
            for k, t in enumerate(spec["prompts"].get(group, [])):
                items.append(f"<li>{esc(title)}: <code>{txt(t, f'spec.json#/prompts/{group}/{k}')}</code></li>")
        prompts = f"<h3>Prompts</h3><ul>{''.join(items)}</ul>"
    train = []
    for i, row in enumerate(results["rows"]):
        p = pointer("rows", i)
        t = row["train"] or {}
        steps, secs, loss = (num(Num(t[k], f"{p}/train/{k}", fmt) if t.get(k) is not None else None)
                             for k, fmt in (("steps", "int"), ("seconds", "f3"), ("final_loss", "f3")))
        params = esc(json.dumps(row["params"], sort_keys=True))
        train.append(f"<tr><td>{txt(row['label'], p + '/label')}</td><td>{txt(row['recipe'], p + '/recipe')}</td>"
                     f"<td>{num(Num(row['seed'], p + '/seed', 'int'))}</td><td>{txt(row['status'], p + '/status')}</td>"
                     f"<td>{steps}</td><td>{secs}</td><td>{loss}</td>"
                     f'<td><span class="json" data-src="{p}/params">{params}</span></td></tr>')
    versions = ", ".join(f"{txt(k, pointer('run', 'versions', k), cls='key')} {txt(v, pointer('run', 'versions', k))}"
                         for k, v in results["run"]["versions"].items())
    return ('<h2 id="methods">Methods</h2>'
            "<p>Each metric, where it comes from and which way is better, as recorded in results.json. Members are the "
            "subject's training photos, non-members the holdout photos of the same person, so identity is held "
            "constant and only membership differs.</p>"
            f'<table class="methods"><tr><th>metric</th><th>direction</th><th>paper</th><th>equation</th>'
            f'<th>control</th></tr>{"".join(rows)}</table>{encoder}{extra}'
            f'{"<h3>Notes</h3><ul class=notes>" + notes + "</ul>" if notes else ""}{prompts}'
            '<h3>Training</h3><table><tr><th>recipe</th><th>name</th><th>seed</th><th>status</th><th>steps</th>'
            f'<th>seconds</th><th>final loss</th><th>parameters</th></tr>{"".join(train)}</table>'
            f'<p class="muted">Software: {versions}.</p>')


def _plot(title: str, anchor: str, png: bytes | None, caption: str) -> str:
    if png is None:
        return f'<h2 id="{anchor}">{esc(title)}</h2><p class="muted">No data for this figure in results.json.</p>'
    return (f'<h2 id="{anchor}">{esc(title)}</h2><p>{esc(caption)}</p>'
            f'<img class="plot" alt="{esc(title)}" src="{data_uri(png)}">')


def _pooled_cell(m: dict | None, src: str) -> str:
    if not m or m.get("value") is None:
        return '<td><span class="missing">—</span></td>'
    ci = (f' <span class="ci">[{num(Num(m["ci_low"], src + "/ci_low"))}, {num(Num(m["ci_high"], src + "/ci_high"))}]'
          "</span>" if m.get("ci_low") is not None else "")
    p = (f'<span class="n">p = {num(Num(m["p_value"], src + "/p_value", "g3"))}</span>'
         if m.get("p_value") is not None else "")
    n = m["n"] if isinstance(m["n"], list) else [m["n"]]
    counts = " / ".join(num(Num(v, f"{src}/n/{j}" if isinstance(m["n"], list) else f"{src}/n", "int"))
                        for j, v in enumerate(n))
    return (f'<td>{num(Num(m["value"], src + "/value"))}{ci}{p}<span class="n">n = {counts}; '
            f'{num(Num(m["n_subjects"], src + "/n_subjects", "int"))} people</span></td>')


def cohort_html(results: dict) -> str:
    """The cohort first: per recipe, membership over the pooled calibrated scores of every person and the mean
    of per-person AUCs, then identity and memorisation averaged over people."""
    pooled = results.get("pooled")
    if not pooled:
        return ""
    attacks = [a for a in registry.attacks() if any(f"mia.{a}.auc" in e["metrics"] for e in pooled.values())]
    cols = ([(f"mia.{a}.auc", f"pooled AUC ({a})") for a in attacks]
            + [(f"mia.{a}.auc_mean", f"mean per-person AUC ({a})") for a in attacks[:1]]
            + [(f"mia.{a}.auc_oriented", f"oriented AUC ({a})") for a in attacks[:1]]
            + [("identity.ism_holdout", "ISM holdout ↑"), ("identity.verification_rate", "verification ↑"),
               ("memorization.extraction_rate", "extraction ↓"), ("bleed.verification_rate", "bleed verification ↓")])
    body = []
    for key, entry in sorted(pooled.items(), key=lambda kv: (kv[1]["recipe"] != "none", kv[1]["seed"], kv[0])):
        base = pointer("pooled", key)
        label = txt(entry["label"], base + "/label")
        cells = "".join(_pooled_cell(entry["metrics"].get(k), f"{base}/metrics/{k}") for k, _ in cols)
        body.append(f'<tr><td class="rowhead">{label}<span class="n">seed '
                    f'{num(Num(entry["seed"], base + "/seed", "int"))}</span></td>{cells}</tr>')
    heads = "".join(f"<th>{esc(t)}</th>" for _, t in cols)
    return ('<h2 id="cohort">Cohort: every person pooled</h2>'
            "<p>One model per person per recipe. Membership: the calibrated attack scores of all people pooled into "
            "one member and one non-member set (lower is better; ½ is chance), with a two-level bootstrap interval "
            "(people, then photos) and a permutation p-value that shuffles labels within each person; the mean of "
            "the per-person AUCs is the typical person's risk; the oriented AUC takes each person's direction from "
            "the other people (shadow subjects), one-sided p-value. Other columns: the mean over people, with a "
            "bootstrap interval over people. Each person's own rows follow in the scorecard.</p>"
            f'<div class="scroll"><table class="card"><tr><th>recipe</th>{heads}</tr>{"".join(body)}</table></div>')


def render_report(results: dict, run_dir: Path, spec: dict | None = None,
                  figures: dict[str, bytes | None] | None = None) -> str:
    """The whole page as a string (figures: name → PNG bytes, drawn here when not given)."""
    card = scorecard(results)
    training = training_html(results)
    figures = figures if figures is not None else draw_figures(results)
    extraction = extraction_html(results, run_dir)
    notes = "".join(f"<li>{segments(n)}</li>" for n in sample_size_notes(results))
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, shown in (
        ("grades", "Risk grades", 1), ("scorecard", "Scorecard", 1), ("training", "Training", training),
        ("frontier", "Frontier", 1), ("gallery", "Closest generations", 1), ("extraction", "FineXtract", extraction),
        ("distances", "Distances", 1), ("roc", "MIA ROC", 1), ("samples", "Sample sizes", 1),
        ("methods", "Methods", 1)) if shown)
    body = (
        header_html(results) + f"<nav>{nav}</nav>" + cohort_html(results) + grades_html(card, results)
        + scorecard_html(results, card)
        + training
        + _plot("Fidelity–leakage frontier", "frontier", figures.get("frontier"),
                "Up and to the left is better: identity fidelity (ISM against the holdout photos, or the verification "
                "rate where no ISM could be measured) against a leakage "
                "measure, one point per recipe and seed, with 95% intervals both ways. The black square is the "
                "untouched base model.")
        + gallery_html(results, run_dir)
        + extraction
        + _plot("Distance distributions", "distances", figures.get("distances"),
                "Distance of generations to the nearest training photo (red) and the nearest holdout photo (blue). "
                "Copies sit at the far left of the red series with no blue counterpart.")
        + _plot("Membership inference ROC", "roc", figures.get("roc"),
                "How well each attack separates members from non-members; the dashed diagonal is chance. Curves "
                "move in coarse steps because there are few photos.")
        + f'<h2 id="samples">What these sample sizes support</h2><ul class="notes">{notes}</ul>'
        + methods_html(results, spec))
    title = esc(f"Privacy-risk report: {results['run']['name']}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
            f'style-src \'unsafe-inline\'">'
            f"<title>{title}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def draw_figures(results: dict) -> dict[str, bytes | None]:
    return {"frontier": plots.frontier_png(results), "roc": plots.roc_png(results),
            "distances": plots.distances_png(results)}


def write_report(run_dir: str | Path) -> Path:
    """Render ``run_dir/report.html`` (and ``run_dir/plots/*.png``) from ``run_dir/results.json``."""
    run_dir = Path(run_dir)
    results, spec = load_run(run_dir)
    sid = results["run"].get("subjects") or results["run"]["subject_id"]  # a cohort's report is each person's
    figures = draw_figures(results)
    for name, png in figures.items():
        if png is not None:
            manifest.write_bytes(sid, "report", run_dir / PLOTS_DIR / f"{name}.png", png)
    page = render_report(results, run_dir, spec, figures)
    out = run_dir / REPORT_FILE
    manifest.write_bytes(sid, "report", out, page.encode("utf-8"))
    return out
