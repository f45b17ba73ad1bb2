"""Figures of the stability suite (ImageNet-P style): flip probability and top-5 distance per
perturbation, ViT against CNN, with 95% intervals; flip probability against difficulty when several
difficulties were run. Nothing here imports torch.

Every function takes the selected rows of one stability protocol group (one current row per model and
metric path) and returns a list of :class:`~robustvit.report.figures.Figure` (empty without the cells).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from robustvit.report.figures import Figure, Style, _encode, _legend, _pyplot, label

if TYPE_CHECKING:
    import pandas as pd

PERTURBATION = re.compile(r"^(?P<name>[a-z0-9_]+)$")
DIFFICULTY = re.compile(r"^(?P<name>[a-z0-9_]+)/(?P<difficulty>\d+)$")
PANELS = (("fp", "flip probability"), ("t5d", "top-5 distance"), ("fr", "flip rate (baseline = 1)"))


def per_perturbation(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Bars per perturbation, one per model (family colours) with 95% whiskers: FP, T5D and, with a
    baseline, the flip rate; lower is more stable."""
    import numpy as np

    sub = rows[rows["cell"].fillna("").str.match(PERTURBATION)]
    panels = [(m, t) for m, t in PANELS if not sub[sub["metric"] == m].empty]
    if not panels:
        return []
    plt = _pyplot()
    names = list(dict.fromkeys(sub.loc[sub["metric"] == panels[0][0], "cell"]))
    models = [m for m in style.families if m in set(sub["model"])]
    width = 0.8 / max(len(models), 1)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.55 * len(names) * max(len(models), 1) + 2), 2.9 * len(panels)),
                             squeeze=False)
    for ax, (metric, title) in zip(axes[:, 0], panels, strict=True):
        data = sub[sub["metric"] == metric]
        pos = np.arange(len(names))
        for i, model in enumerate(models):
            m = data[data["model"] == model].set_index("cell")
            vals = np.array([float(m["value"].get(c, np.nan)) for c in names])
            low = np.array([float(m["ci_low"].get(c, np.nan)) for c in names])
            high = np.array([float(m["ci_high"].get(c, np.nan)) for c in names])
            err = np.nan_to_num(np.clip([vals - low, high - vals], 0, None))
            ax.bar(pos + (i - (len(models) - 1) / 2) * width, vals, width, yerr=err, capsize=2, color=style.color(model),
                   hatch=["", "//", "..", "xx", "\\\\"][style._index(model) % 5], edgecolor="white", label=label(model))
        ax.set_xticks(pos)
        ax.set_xticklabels([label(n) for n in names], rotation=30, ha="right", fontsize="small")
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title("lower is more stable; 95% intervals as whiskers", fontsize="medium")
    _legend(axes, len(models))
    fig.tight_layout()
    title = ("Stability along ImageNet-P perturbation sequences: how often the top-1 prediction flips between "
             "frames, and how far the top-5 ranking moves, per perturbation")
    return [_encode(fig, title, f"{title}; one bar per model")]


def by_difficulty(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Flip probability against difficulty (noise strength, or frame stride), one panel per perturbation."""
    sub = rows[(rows["metric"] == "fp")]
    sub = sub.join(sub["cell"].fillna("").str.extract(DIFFICULTY)).dropna(subset=["name"])
    if sub.empty or sub["difficulty"].nunique() < 2:
        return []
    from robustvit.report.figures import lines

    data = sub.assign(difficulty=sub["difficulty"].astype(int))
    return [lines(data, style, x="difficulty", panel="name", title="Flip probability by difficulty (noise: strength; "
                  "others: frames apart)", xlabel="difficulty", ylabel="flip probability")]


def stability_figures(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Every stability figure the rows allow."""
    return [*per_perturbation(rows, style), *by_difficulty(rows, style)]
