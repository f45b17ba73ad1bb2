"""Figure of the shape-bias suite: the cue-conflict plot in the style of model-vs-human (Geirhos et
al., NeurIPS 2021, ``plot_shape_bias_matrixplot``).

One row per shape category, one marker per model (family colour, model marker) at its fraction of
texture decisions among shape and texture decisions (bottom axis; the top axis reads the same
position as the fraction of shape decisions, the shape bias), 95% intervals as whiskers, and a
vertical line per model at its overall shape bias. Nothing here imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robustvit.report.figures import Figure, Style, _encode, _pyplot, label

if TYPE_CHECKING:
    import pandas as pd


def shape_bias_plot(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """The per-category shape-bias plot of one shape-bias protocol group (empty without category cells)."""
    sub = rows[rows["metric"] == "shape_bias"]
    cells = sub[sub["cell"].fillna("") != ""]
    if cells.empty:
        return []
    plt = _pyplot()
    categories = list(dict.fromkeys(cells["cell"]))
    pos = {c: len(categories) - 1 - k for k, c in enumerate(categories)}  # the first category on top
    fig, ax = plt.subplots(figsize=(6.4, 0.36 * len(categories) + 1.9))
    models = [m for m in style.families if m in set(sub["model"])]
    for k, model in enumerate(models):
        m = cells[cells["model"] == model]
        if m.empty:
            continue
        offset = (k - (len(models) - 1) / 2) * min(0.12, 0.6 / max(len(models), 1))
        x = 1 - m["value"]
        err = [(m["ci_high"] - m["value"]).clip(lower=0).fillna(0), (m["value"] - m["ci_low"]).clip(lower=0).fillna(0)]
        ax.errorbar(x, m["cell"].map(pos) + offset, xerr=err, linestyle="none", capsize=2, markersize=7,
                    markeredgecolor="white", **style.kw(model))
        overall = sub[(sub["model"] == model) & (sub["cell"].fillna("") == "")]["value"]
        if not overall.empty and overall.iloc[-1] == overall.iloc[-1]:
            ax.axvline(1 - float(overall.iloc[-1]), color=style.color(model), linestyle=style.linestyle(model),
                       linewidth=1.2, alpha=0.8)
    for k in range(len(categories) - 1):
        ax.axhline(k + 0.5, color="grey", linestyle=":", alpha=0.4, linewidth=0.8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.6, len(categories) - 0.4)
    ax.set_yticks(range(len(categories)))
    ax.set_yticklabels([label(c, 20) for c in reversed(categories)])
    ax.set_xlabel("fraction of 'texture' decisions")
    ax.set_ylabel("shape category")
    top = ax.secondary_xaxis("top", functions=(lambda v: 1 - v, lambda v: 1 - v))
    top.set_xlabel("fraction of 'shape' decisions (shape bias)")
    ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    title = ("Shape bias on cue-conflict images (Geirhos et al. 2019): one marker per model and shape category, "
             "its overall shape bias as a vertical line; left = decides by shape, right = by texture")
    return [_encode(fig, title, f"{title}; 95% intervals as whiskers")]


def shape_figures(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Every shape-bias figure the rows allow."""
    return shape_bias_plot(rows, style)
