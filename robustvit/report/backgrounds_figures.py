"""Figure of the backgrounds suite (ImageNet-9, Xiao et al. 2021): top-1 per background variant and
the BG-gap, one bar per model with 95% whiskers. Nothing here imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from robustvit.report.figures import Figure, Style, _encode, _legend, _pyplot, label

if TYPE_CHECKING:
    import pandas as pd

HATCHES = ("", "//", "..", "xx", "\\\\")


def _bars(ax, data: pd.DataFrame, style: Style, models: list[str], categories: list[str]) -> None:
    import numpy as np

    width = 0.8 / max(len(models), 1)
    for i, model in enumerate(models):
        m = data[data["model"] == model].drop_duplicates("cell", keep="last").set_index("cell")
        vals = np.array([float(m["value"].get(c, np.nan)) for c in categories])
        low = np.array([float(m["ci_low"].get(c, np.nan)) for c in categories])
        high = np.array([float(m["ci_high"].get(c, np.nan)) for c in categories])
        err = np.nan_to_num(np.clip(np.stack([vals - low, high - vals]), 0, None))
        ax.bar(np.arange(len(categories)) + (i - (len(models) - 1) / 2) * width, vals, width, yerr=err, capsize=2,
               color=style.color(model), hatch=HATCHES[style._index(model) % len(HATCHES)], edgecolor="white",
               error_kw={"elinewidth": 0.8}, label=label(model))
    ax.set_xticks(range(len(categories)))
    ax.grid(axis="y", alpha=0.3)


def variant_bars(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Top-1 per variant (left) and BG-gap = mixed_same - mixed_rand (right), one bar per model."""
    acc = rows[(rows["metric"] == "top1") & (rows["cell"].fillna("") != "")]
    if acc.empty:
        return []
    gap = rows[(rows["metric"] == "bg_gap") & (rows["cell"].fillna("") == "")]
    plt = _pyplot()
    variants = list(dict.fromkeys(acc["cell"]))
    models = [m for m in style.families if m in set(rows["model"])]
    widths = [max(4.0, 0.22 * len(variants) * max(len(models), 1) + 1.5)] + ([1.2 + 0.35 * len(models)] if not gap.empty else [])
    fig, axes = plt.subplots(1, len(widths), figsize=(sum(widths) + 1.0, 3.6), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    ax = axes[0, 0]
    _bars(ax, acc, style, models, variants)
    ax.set_xticklabels([label(v) for v in variants], rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("top-1")
    ax.set_ylim(0, 1.02)
    ax.set_title("top-1 per background variant", fontsize="medium")
    if not gap.empty:
        ax = axes[0, 1]
        _bars(ax, gap.assign(cell="BG-gap"), style, models, ["BG-gap"])
        ax.set_xticklabels(["mixed_same −\nmixed_rand"], fontsize="small")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title("BG-gap (lower: less reliance)", fontsize="medium")
    _legend(axes, len(models))
    fig.tight_layout()
    title = ("Backgrounds (ImageNet-9 variants, Xiao et al. 2021): accuracy as foreground and background signal "
             "change, and the BG-gap, what a background of another class costs when the right foreground is there")
    return [_encode(fig, title, f"{title}; one bar per model, 95% intervals as whiskers")]


def backgrounds_figures(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Every backgrounds figure the rows allow."""
    return variant_bars(rows, style)
