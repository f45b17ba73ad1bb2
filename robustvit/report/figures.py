"""Matplotlib figures (Agg backend) returned as base64 PNG for embedding in the HTML report.

Every function takes tidy data (already selected records) and returns a :class:`Figure`; models are
coloured by family (ViT blue, CNN orange, hybrid green) with one marker per model.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FAMILY_COLORS: dict[str, str] = {"vit": "#1f77b4", "cnn": "#ff7f0e", "hybrid": "#2ca02c"}
OTHER_COLOR = "#7f7f7f"
MARKERS = "osD^vP*Xph<>"
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Figure:
    """One embedded figure: a title, alt text and the PNG bytes in base64."""

    title: str
    alt: str
    png_base64: str

    @property
    def src(self) -> str:
        return "data:image/png;base64," + self.png_base64


@dataclass(frozen=True)
class Style:
    """How each model is drawn: family colour plus a per-model marker and line style."""

    families: Mapping[str, str]

    def color(self, model: str) -> str:
        return FAMILY_COLORS.get(self.families.get(model, ""), OTHER_COLOR)

    def _index(self, model: str) -> int:
        same = [m for m in self.families if self.families[m] == self.families.get(model)]
        return same.index(model) if model in same else 0

    def marker(self, model: str) -> str:
        return MARKERS[self._index(model) % len(MARKERS)]

    def linestyle(self, model: str) -> str:
        return LINESTYLES[self._index(model) % len(LINESTYLES)]

    def kw(self, model: str) -> dict[str, Any]:
        return {"color": self.color(model), "marker": self.marker(model), "label": label(model)}


def label(text: str, width: int = 40) -> str:
    """Text safe for a matplotlib label: no mathtext (``$``), not hidden by a leading underscore, at most ``width``."""
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _encode(fig: Any, title: str, alt: str) -> Figure:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return Figure(title=title, alt=alt, png_base64=base64.b64encode(buf.getvalue()).decode("ascii"))


def _legend(axes: Any, n_models: int) -> None:
    """One legend for the whole figure, outside the top-right panel (deduplicated by label)."""
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        axes[0, -1].legend(list(handles.values()), list(handles), fontsize="small", loc="upper left",
                           bbox_to_anchor=(1.02, 1.0), ncol=1 if n_models <= 12 else 2, frameon=False)


def lines(data: pd.DataFrame, style: Style, *, x: str, title: str, xlabel: str, ylabel: str,
          panel: str | None = None, xticklabels: Mapping[float, str] | None = None) -> Figure:
    """Line plot: one line per model (column ``model``), ``x`` vs ``value``; one panel per ``panel`` value."""
    plt = _pyplot()
    panels = list(dict.fromkeys(data[panel])) if panel else [None]
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, p in zip(axes.flat, panels, strict=False):
        sub = data if p is None else data[data[panel] == p]
        for model in style.families:
            m = sub[sub["model"] == model].sort_values(x)
            if m.empty:
                continue
            ax.plot(m[x], m["value"], linestyle=style.linestyle(model), **style.kw(model))
        ax.set_title(label(p) if p is not None else label(title), fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ticks = sorted(set(sub[x]))
        ax.set_xticks(ticks)
        if xticklabels:
            ax.set_xticklabels([xticklabels.get(t, f"{t:g}") for t in ticks], rotation=30, fontsize="small")
        ax.grid(alpha=0.3)
    _legend(axes, len(style.families))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _encode(fig, title, f"{title}: {ylabel} against {xlabel}, one line per model")


def bars(data: pd.DataFrame, style: Style, *, category: str, title: str, ylabel: str,
         panel: str | None = None) -> Figure:
    """Grouped bars: ``category`` on the x axis, one bar per model; one panel per ``panel`` value."""
    import numpy as np

    plt = _pyplot()
    panels = list(dict.fromkeys(data[panel])) if panel else [None]
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    models = [m for m in style.families if m in set(data["model"])]
    widest = max(len(set(data[category])), 1)
    panel_width = min(14.0, max(4.5, 0.25 * widest * max(len(models), 1) + 1.5))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_width * ncols, 3.4 * nrows), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for ax, p in zip(axes.flat, panels, strict=False):
        sub = data if p is None else data[data[panel] == p]
        cats = list(dict.fromkeys(sub[category]))
        pos = np.arange(len(cats))
        for i, model in enumerate(models):
            m = sub[sub["model"] == model].set_index(category)["value"]
            vals = [float(m.get(c, np.nan)) for c in cats]
            ax.bar(pos + (i - (len(models) - 1) / 2) * width, vals, width, color=style.color(model),
                   hatch=["", "//", "..", "xx", "\\\\"][style._index(model) % 5], edgecolor="white",
                   label=label(model))
        ax.set_xticks(pos)
        ax.set_xticklabels([label(c) for c in cats], rotation=35, ha="right", fontsize="small")
        ax.set_ylabel(ylabel)
        ax.set_title(label(p) if p is not None else label(title), fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    _legend(axes, len(models))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _encode(fig, title, f"{title}: {ylabel} per {category}, one bar per model")


def scatter(points: pd.DataFrame, style: Style, *, xlabel: str, panels: Sequence[str], title: str) -> Figure:
    """Scatter of ``x`` (clean accuracy) against ``value`` per panel (a robustness metric), per model."""
    plt = _pyplot()
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.4 * nrows), squeeze=False)
    for ax, p in zip(axes.flat, panels, strict=False):
        sub = points[points["panel"] == p]
        for model in style.families:
            m = sub[sub["model"] == model]
            if not m.empty:
                ax.scatter(m["x"], m["value"], s=55, **style.kw(model))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label(p), fontsize="small")
        ax.grid(alpha=0.3)
    _legend(axes, len(style.families))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _encode(fig, title, f"{title}: {xlabel} against each robustness metric, one point per model")
