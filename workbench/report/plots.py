"""Report figures as PNG bytes, drawn from ``results.json`` only (matplotlib, Agg canvas).

- :func:`frontier_png`: the fidelity–leakage frontier. One point per (recipe, seed): x a leakage
  measure (MIA AUC; extraction rate), y identity fidelity (ISM against the holdout photos, or the
  verification rate where no face was found to compute ISM), with 95% CI error bars both ways; the
  ``none`` control is a black square. Up and left is better.
- :func:`roc_png`: membership-inference ROC curves per attack, one curve per (recipe, seed), with the
  chance diagonal.
- :func:`distances_png`: distance of generations to the nearest training photo vs the nearest
  holdout photo (pixel ℓ2): histograms when the row carries ``distances``, else the ``nearest``
  generations (the k closest only: the low tail, not the whole distribution; the title says so).
- :func:`distance_hist_png`: the same histogram from arrays (notebooks, from the metrics library).

The figures use matplotlib's object API with the Agg canvas, so importing this module never changes
the pyplot backend of a notebook or an app.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workbench.metrics import registry
from workbench.results import CONTROL_RECIPE

CONTROL_COLOR = "#111111"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def colors(results: dict) -> dict[str, str]:
    """One colour per recipe label, the same in every figure; the control is black."""
    out, k = {}, 0
    for row in results["rows"]:
        if row["label"] in out:
            continue
        if row["recipe"] == CONTROL_RECIPE:
            out[row["label"]] = CONTROL_COLOR
        else:
            out[row["label"]] = PALETTE[k % len(PALETTE)]
            k += 1
    return out


def _ok_rows(results: dict) -> list[dict]:
    rows = [r for r in results["rows"] if r["status"] == "ok"]
    return sorted(rows, key=lambda r: r["recipe"] != CONTROL_RECIPE)


def _name(row: dict, results: dict) -> str:
    multi_seed = len({r["seed"] for r in results["rows"]}) > 1
    name = row["label"] + (" (control)" if row["recipe"] == CONTROL_RECIPE else "")
    return f"{name} s{row['seed']}" if multi_seed else name


def _err(m: dict) -> tuple[float, float] | None:
    if m["ci_low"] is None or m["ci_high"] is None:
        return None
    return max(m["value"] - m["ci_low"], 0.0), max(m["ci_high"] - m["value"], 0.0)


def _mia_key(results: dict) -> str | None:
    for attack in registry.attacks():
        key = f"mia.{attack}.auc"
        if any(r["metrics"].get(key, {}).get("value") is not None for r in _ok_rows(results)):
            return key
    return None


FIDELITY_Y = ("identity.ism_holdout", "identity.verification_rate")  # the frontier's y, first one measured


def frontier_y_key(results: dict) -> str | None:
    """ISM against the holdout photos, or the verification rate where no ISM could be measured (no face found)."""
    for key in FIDELITY_Y:
        if any(r["metrics"].get(key, {}).get("value") is not None for r in _ok_rows(results)):
            return key
    return None


def frontier_png(results: dict, y_key: str | None = None,
                 x_keys: Sequence[str] | None = None) -> bytes | None:
    """Fidelity (y) against leakage (x, one panel per key); None when no row has both numbers."""
    y_key = y_key or frontier_y_key(results)
    if y_key is None:
        return None
    x_keys = list(x_keys) if x_keys else [k for k in (_mia_key(results), "memorization.extraction_rate") if k]
    palette = colors(results)
    fig = Figure(figsize=(5.2 * len(x_keys), 4.2))
    drawn = False
    for k, x_key in enumerate(x_keys):
        ax = fig.add_subplot(1, len(x_keys), k + 1)
        for row in _ok_rows(results):
            mx, my = row["metrics"].get(x_key), row["metrics"].get(y_key)
            if not mx or not my or mx["value"] is None or my["value"] is None:
                continue
            control = row["recipe"] == CONTROL_RECIPE
            ex, ey = _err(mx), _err(my)
            ax.errorbar([mx["value"]], [my["value"]], xerr=None if ex is None else [[ex[0]], [ex[1]]],
                        yerr=None if ey is None else [[ey[0]], [ey[1]]], fmt="s" if control else "o",
                        color=palette[row["label"]], markersize=9 if control else 7, capsize=3, elinewidth=1.2,
                        label=_name(row, results))
            ax.annotate(_name(row, results), (mx["value"], my["value"]), textcoords="offset points",
                        xytext=(6, 6), fontsize=8, color=palette[row["label"]])
            drawn = True
        if x_key.endswith(".auc"):
            ax.axvline(0.5, color="#888888", linestyle="--", linewidth=1)
            ax.text(0.5, 1.0, " chance", transform=ax.get_xaxis_transform(), fontsize=8, color="#666666",
                    va="top")
        ax.set_xlabel(f"{registry.title(x_key)}  (leakage: lower is better)")
        ax.set_ylabel(f"{registry.title(y_key)}  (fidelity: higher is better)")
        ax.set_title(f"Fidelity vs {registry.title(x_key)}", fontsize=10)
        ax.grid(alpha=0.3)
    if not drawn:
        return None
    fig.suptitle("Fidelity–leakage frontier (95% CIs both ways; black square: untouched base model)", fontsize=10)
    return _png(fig)


def roc_png(results: dict) -> bytes | None:
    """MIA ROC curves, one panel per attack; None when no row has a curve."""
    attacks = [a for a in registry.attacks() if any(a in r["roc"] for r in _ok_rows(results))]
    attacks += sorted({a for r in _ok_rows(results) for a in r["roc"]} - set(attacks))
    if not attacks:
        return None
    palette = colors(results)
    fig = Figure(figsize=(4.2 * len(attacks), 4.2))
    for k, attack in enumerate(attacks):
        ax = fig.add_subplot(1, len(attacks), k + 1)
        ax.plot([0, 1], [0, 1], color="#888888", linestyle="--", linewidth=1, label="chance")
        for row in _ok_rows(results):
            curve = row["roc"].get(attack)
            if not curve:
                continue
            auc = row["metrics"].get(f"mia.{attack}.auc", {}).get("value")
            label = _name(row, results) + (f" (AUC {auc:.3f})" if auc is not None else "")
            ax.plot(curve["fpr"], curve["tpr"], drawstyle="steps-post", color=palette[row["label"]], linewidth=1.6,
                    linestyle="-" if row["recipe"] != CONTROL_RECIPE else ":", label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("false-positive rate (non-members flagged)")
        ax.set_ylabel("true-positive rate (members found)")
        ax.set_title(f"MIA: {attack}", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    return _png(fig)


def distance_hist_png(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str | None = None) -> bytes:
    """Histograms of (nearest-train ℓ2, nearest-holdout ℓ2) per name, one panel each."""
    fig = Figure(figsize=(3.8 * max(len(series), 1), 3.4))
    for k, (name, (train, holdout)) in enumerate(series.items()):
        ax = fig.add_subplot(1, max(len(series), 1), k + 1)
        values = list(train) + list(holdout)
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        bins = [lo + (hi - lo) * j / 15 for j in range(16)] if hi > lo else 10
        ax.hist(list(train), bins=bins, alpha=0.6, color="#d62728", label="nearest train photo")
        ax.hist(list(holdout), bins=bins, alpha=0.6, color="#1f77b4", label="nearest holdout photo")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("pixel ℓ2 (lower = closer)")
        ax.set_ylabel("generations")
        ax.legend(fontsize=7)
    fig.suptitle(title or "Distance of each generation to the nearest train vs holdout photo", fontsize=10)
    return _png(fig)


def distances_png(results: dict) -> bytes | None:
    """Train vs holdout distances per row: full histograms from ``distances``, else the ``nearest`` items."""
    rows = _ok_rows(results)
    full = {_name(r, results): (r["distances"]["train"], r["distances"]["holdout"]) for r in rows if r.get("distances")}
    if full:
        return distance_hist_png(full)
    with_nearest = [r for r in rows if r["nearest"]]
    if not with_nearest:
        return None
    fig = Figure(figsize=(max(5.0, 1.6 * len(with_nearest) + 2), 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for k, row in enumerate(with_nearest):
        train = [n["l2"] for n in row["nearest"]]
        hold = [n["holdout_l2"] for n in row["nearest"] if n["holdout_l2"] is not None]
        ax.scatter([k - 0.12] * len(train), train, color="#d62728", s=22,
                   label="to nearest train photo" if k == 0 else None)
        ax.scatter([k + 0.12] * len(hold), hold, color="#1f77b4", s=22, marker="D",
                   label="to nearest holdout photo" if k == 0 else None)
    ax.set_xticks(range(len(with_nearest)), [_name(r, results) for r in with_nearest], fontsize=8)
    ax.set_ylabel("pixel ℓ2 (lower = closer)")
    ax.set_title("The generations closest to a training photo: distance to the nearest train vs holdout photo",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
