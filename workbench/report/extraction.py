"""The report's FineXtract section: extraction from the model file, against plain sampling of it.

Per recipe row that ran ``metrics.extraction_attacks: [finextract]`` (``row["extraction"]["finextract"]``,
written by :func:`workbench.metrics.finextract.measure_extraction`): FineXtract and plain sampling from
the same starting latents (extraction rate and average similarity with their intervals and n, the
holdout photos as the control, the query cost in UNet calls per image), the paired difference over the
training photos, and each training photo beside FineXtract's candidate nearest to it. Images are
embedded like the closest-generations gallery (:func:`workbench.report.html.resolve_image`: only files
inside the run folder or the data root, thumbnails, "not available" once erased). Every number is traced
to results.json (``data-src``), as everywhere in the report.
"""

from __future__ import annotations

from pathlib import Path

from workbench.report.scorecard import Num, pointer

METHOD_NAMES = {"finextract": "FineXtract", "plain": "plain sampling"}


def _metric(m: dict | None, src: str) -> str:
    """value [ci_low, ci_high] n = N, every number traced."""
    from workbench.report.html import num

    if not m or m.get("value") is None:
        return '<td><span class="missing">—</span></td>'
    ci = (f'<span class="ci">[{num(Num(m["ci_low"], src + "/ci_low"))}, {num(Num(m["ci_high"], src + "/ci_high"))}]'
          "</span>" if m.get("ci_low") is not None else "")
    n = num(Num(m["n"], src + "/n", "int"))
    return f'<td>{num(Num(m["value"], src + "/value"))}{ci}<span class="n">n = {n}</span></td>'


def _table(res: dict, base: str) -> str:
    from workbench.report.html import num

    rows = []
    for method, m in res["methods"].items():
        src = f"{base}/methods/{method}"
        cells = "".join(_metric(m["metrics"].get(k), f"{src}/metrics/{k}") for k in (
            "rate", "avg_similarity", "best_registered_l2", "holdout_rate", "holdout_avg_similarity"))
        calls = num(Num(res["queries_per_image"][method], f"{base}/queries_per_image/{method}", "int"))
        rows.append(f"<tr><td>{METHOD_NAMES.get(method, method)}</td><td>{calls}</td>"
                    f"<td>{num(Num(m['n_generations'], src + '/n_generations', 'int'))}</td>"
                    f"<td>{num(Num(m['n_clusters'], src + '/n_clusters', 'int'))}</td>{cells}</tr>")
    heads = ("method", "UNet calls per image", "generations", "candidates", "extraction rate ↓",
             "avg similarity ↓", "best registered ℓ2 ↑", "holdout rate (control)", "holdout avg similarity (control)")
    return ('<div class="scroll"><table class="card"><tr>' + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"
            + "".join(rows) + "</table></div>")


def _difference(res: dict, base: str) -> str:
    from workbench.report.html import num

    d = res.get("difference")
    if not d:
        return ""

    def one(key: str) -> str:
        m, src = d[key], f"{base}/difference/{key}"
        if m.get("value") is None:
            return '<span class="missing">—</span>'
        ci = (f" [{num(Num(m['ci_low'], src + '/ci_low'))}, {num(Num(m['ci_high'], src + '/ci_high'))}]"
              if m.get("ci_low") is not None else "")
        return f"{num(Num(m['value'], src + '/value', 'signed'))}{ci}"

    n = num(Num(d["avg_similarity"]["n"], base + "/difference/avg_similarity/n", "int"))
    return (f"<p>Paired over the training photos (n = {n}), "
            f"FineXtract minus plain sampling from the same latents, above zero where FineXtract comes closer: "
            f"similarity {one('avg_similarity')}, registered ℓ2 {one('registered_l2')}, "
            f"extracted share {one('rate')}.</p>")


def _gallery(res: dict, base: str, run_dir: Path) -> str:
    from workbench.report.html import esc, num, resolve_image, thumbnail_uri

    m = res["methods"].get("finextract")
    if not m:
        return ""
    pairs = []
    for j, p in enumerate(m["per_photo"]):
        if "file" not in p:
            continue
        src = f"{base}/methods/finextract/per_photo/{j}"
        imgs = []
        for kind, ref, what in (("generated", p["file"], "FineXtract candidate"),
                                ("train", p["train"], "training photo")):
            path = resolve_image(kind, ref, run_dir)
            uri = thumbnail_uri(path) if path else None
            pic = (f'<img src="{uri}" alt="{esc(what)}">' if uri else
                   '<div class="noimg">image not available (erased or outside the data root)</div>')
            imgs.append(f"<figure>{pic}<figcaption>{esc(what)}</figcaption></figure>")
        verdict = "<b>extracted</b>" if p["extracted"] else "not within δ"
        pairs.append(f'<div class="pair"><div class="imgs">{"".join(imgs)}</div>registered ℓ2 '
                     f"{num(Num(p['registered_l2'], src + '/registered_l2'))}, similarity "
                     f"{num(Num(p['similarity'], src + '/similarity'))}; {verdict}</div>")
    return f'<div class="gallery">{"".join(pairs)}</div>' if pairs else ""


def extraction_html(results: dict, run_dir: Path) -> str:
    """The FineXtract section, or "" when no row ran it."""
    from workbench.report.html import num, txt

    parts = []
    first = None
    for i, row in enumerate(results["rows"]):
        res = (row.get("extraction") or {}).get("finextract")
        if row["status"] != "ok" or not res:
            continue
        base = pointer("rows", i, "extraction", "finextract")
        first = first or (res, base)
        prm = f"{base}/params"
        parts.append(
            f"<h3>{txt(row['label'], pointer('rows', i, 'label'))}, seed "
            f"{num(Num(row['seed'], pointer('rows', i, 'seed'), 'int'))}</h3>"
            f"<p>Caption {txt(res['caption'], base + '/caption')}; w = {num(Num(res['params']['w'], prm + '/w'))}, "
            f"k = {num(Num(res['params']['k'], prm + '/k', 'signed'))}, "
            f"{num(Num(res['params']['steps'], prm + '/steps', 'int'))} DDIM steps; plain sampling at guidance "
            f"{num(Num(res['params']['baseline_guidance'], prm + '/baseline_guidance'))}.</p>"
            + _table(res, base) + _difference(res, base) + _gallery(res, base, run_dir))
    if not parts:
        return ""
    res, base = first
    intro = (
        "<p>Whoever holds a personalised model file and knows its base can steer the sampler towards the fine-tuning "
        "photos: FineXtract (" + txt(res["paper"], base + "/paper") + ") extrapolates from the base model's "
        "unconditional prediction towards the fine-tuned model's prediction for the training caption, "
        "then clusters the generations and keeps one candidate per cluster. Plain sampling of the same model, from the "
        "same starting latents and through the same clustering, is the baseline, so the difference is the attack's "
        "alone. A training photo counts as extracted when a candidate lies within δ = "
        + num(Num(res["delta"]["registered_l2"], base + "/delta/registered_l2"))
        + " of it or its mirror image (registered pixel ℓ2) and nearer to it than to any holdout photo; the "
        "holdout photos (never trained on) go through the same matching as the control. Similarity: "
        + txt(res["descriptor"], base + "/descriptor") + ". Rates and similarities are over the training photos, "
        "with bootstrap 95% intervals; lower is better for privacy.</p>")
    return '<h2 id="extraction">Extraction from the model file (FineXtract)</h2>' + intro + "".join(parts)
