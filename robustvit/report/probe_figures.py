"""Figures of the probes suite: accuracy curves, Fourier heat maps, attention distance, rollout maps,
patch-interaction scope and adversarial DCT spectra; each says in its title what to read from it.

Every function takes the selected rows of one probes protocol group (one current row per model and
metric path) and returns a list of :class:`~robustvit.report.figures.Figure` (empty when the probe
was not run). Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from robustvit.report.figures import Figure, Style, _encode, _legend, _pyplot, label

if TYPE_CHECKING:
    import pandas as pd

CURVE = re.compile(r"^(?P<p_probe>patch_drop|patch_shuffle|cutout)(?:/(?P<p_order>[^/]+))?/(?P<p_var>[fg])=(?P<p_x>[^/]+)$")
FOURIER = re.compile(r"^fourier/i=(?P<i>-?\d+),j=(?P<j>-?\d+)$")
DCT = re.compile(r"^u=(?P<u>\d+),v=(?P<v>\d+)$")
LAYER = re.compile(r"^attention/distance/layer=(?P<layer>\d+)$")
READ = {
    "patch_drop": "accuracy as patches are dropped (flatter is more robust; salient-first drops should hurt most)",
    "patch_shuffle": "accuracy as the image is cut into more shuffled patches (flat: the model ignores spatial order)",
    "cutout": "accuracy as a larger square is masked out (CutOut; flatter is more robust)",
}


def _x(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.inf  # a named grid (g=model) goes last


def curves(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Top-1 against drop fraction / shuffle grid / CutOut area, one line per model with 95% whiskers."""
    plt = _pyplot()
    sub = rows[(rows["metric"] == "top1")]
    parsed = sub["cell"].str.extract(CURVE)
    sub = sub.join(parsed).dropna(subset=["p_probe"])
    out = []
    for probe, group in sub.groupby("p_probe", sort=False):
        panels = list(dict.fromkeys(group["p_order"].fillna("")))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
        for ax, panel in zip(axes.flat, panels, strict=False):
            data = group[group["p_order"].fillna("") == panel]
            xs = sorted(set(data["p_x"]), key=_x)
            pos = {x: k for k, x in enumerate(xs)}
            for model in style.families:
                m = data[data["model"] == model]
                if m.empty:
                    continue
                m = m.assign(k=m["p_x"].map(pos)).sort_values("k")
                err = [(m["value"] - m["ci_low"]).clip(lower=0).fillna(0), (m["ci_high"] - m["value"]).clip(lower=0).fillna(0)]
                ax.errorbar(m["k"], m["value"], yerr=err, capsize=2, linestyle=style.linestyle(model), **style.kw(model))
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels(xs, fontsize="small")
            ax.set_xlabel("fraction of the image" if data["p_var"].iloc[0] == "f" else "patches per side (g)")
            ax.set_ylabel("top-1")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(label(panel or probe), fontsize="medium")
            ax.grid(alpha=0.3)
        _legend(axes, len(style.families))
        fig.tight_layout()
        title = f"{probe}: {READ.get(probe, 'accuracy per setting')}"
        out.append(_encode(fig, title, f"{title}; one line per model, 95% intervals as whiskers"))
    return out


def _heatmaps(maps: dict[str, list[list[float]]], title: str, cbar: str, extent: tuple | None = None) -> Figure:
    plt = _pyplot()
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n + 0.8, 3.2), squeeze=False)
    finite = [v for grid in maps.values() for row in grid for v in row if v == v]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    image = None
    for ax, (model, grid) in zip(axes.flat, maps.items(), strict=False):
        image = ax.imshow(grid, cmap="viridis", vmin=lo, vmax=hi, extent=extent, origin="lower" if extent else "upper")
        ax.set_title(label(model, 32), fontsize="medium")
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), label=cbar, shrink=0.85)
    return _encode(fig, title, f"{title}: one heat map per model")


def fourier_maps(rows: pd.DataFrame) -> list[Figure]:
    """The Fourier heat maps side by side: error under a perturbation of each frequency (mirrored)."""
    sub = rows[rows["metric"] == "error"].join(rows["cell"].str.extract(FOURIER)).dropna(subset=["i"])
    if sub.empty:
        return []
    sub = sub.assign(i=sub["i"].astype(int), j=sub["j"].astype(int))
    r = int(max(sub["i"].abs().max(), sub["j"].abs().max()))
    maps = {}
    for model, m in sub.groupby("model", sort=False):
        grid = [[math.nan] * (2 * r + 1) for _ in range(2 * r + 1)]
        for i, j, v in zip(m["i"], m["j"], m["value"], strict=True):
            grid[i + r][j + r] = v
            grid[-i + r][-j + r] = v  # U_ij and U_-i,-j are the same basis up to sign
        maps[str(model)] = grid
    return [_heatmaps(maps, "Fourier heat map: error under a perturbation of one frequency (centre = low frequencies; "
                      "a CNN typically errs more on high frequencies)", "error", (-r - 0.5, r + 0.5, -r - 0.5, r + 0.5))]


def spectra(rows: pd.DataFrame) -> list[Figure]:
    """DCT energy spectra (10 log10) of DeepFool perturbations, one per model."""
    sub = rows[rows["cell"] == "spectrum/dct"]
    sub = sub.join(sub["metric"].str.extract(DCT)).dropna(subset=["u"])
    if sub.empty:
        return []
    maps = {}
    for model, m in sub.groupby("model", sort=False):
        side = int(max(m["u"].astype(int).max(), m["v"].astype(int).max())) + 1
        grid = [[math.nan] * side for _ in range(side)]
        for u, v, val in zip(m["u"].astype(int), m["v"].astype(int), m["value"], strict=True):
            grid[u][v] = val
        maps[str(model)] = grid
    return [_heatmaps(maps, "Adversarial perturbation spectra (DeepFool-L2; DCT energy, top left = low frequencies: "
                      "energy towards the bottom right means the attack needs high frequencies)", "10 log10 energy")]


def _single(fig, ax, xlabel: str, ylabel: str, title: str) -> Figure:
    """Label, grid and legend of a one-panel figure, encoded with its title as alt text."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    return _encode(fig, title, title)


def attention_distance(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Mean attention distance per layer, one dot per head (ViTs): local heads near 0, global heads high."""
    sub = rows[rows["metric"].str.startswith("head=")].join(rows["cell"].str.extract(LAYER)).dropna(subset=["layer"])
    if sub.empty:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), squeeze=True)
    models = [m for m in style.families if m in set(sub["model"])]
    for k, model in enumerate(models):
        m = sub[sub["model"] == model]
        offset = (k - (len(models) - 1) / 2) * 0.12
        ax.scatter(m["layer"].astype(int) + offset, m["value"], s=18, alpha=0.8, **style.kw(model))
    return [_single(fig, ax, "layer", "mean attention distance (pixels)",
                    "Mean attention distance per layer (one dot per head): low heads attend locally like "
                    "convolutions, high ones globally")]


def rollout_maps(rows: pd.DataFrame) -> list[Figure]:
    """Attention rollout maps of a few sample images (patch grid, brighter = more attended by the class token)."""
    sub = rows[rows["cell"].str.match(r"^attention/rollout/sample=\d+$") & rows["metric"].str.match(r"^p\d+$")]
    if sub.empty:
        return []
    maps = {}
    for (model, cell), m in sub.groupby(["model", "cell"], sort=False):
        values = [v for _, v in sorted(zip(m["metric"].str.slice(1).astype(int), m["value"], strict=True))]
        side = int(round(math.sqrt(len(values))))
        if side * side != len(values):
            continue
        maps[f"{model} {cell.rsplit('/', 1)[1]}"] = [values[r * side:(r + 1) * side] for r in range(side)]
    if not maps:
        return []
    return [_heatmaps(dict(list(maps.items())[:8]), "Attention rollout (Abnar & Zuidema 2020) of sample images: "
                      "where the class token's attention flows", "rollout weight")]


def interaction_scope(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Mean |interaction| against patch distance, one line per model: how far patches interact."""
    sub = rows[(rows["cell"] == "interaction/scope") & rows["metric"].str.match(r"^d=\d+$")]
    if sub.empty:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for model in style.families:
        m = sub[sub["model"] == model]
        if m.empty:
            continue
        m = m.assign(d=m["metric"].str.slice(2).astype(int)).sort_values("d")
        ax.plot(m["d"], m["value"], linestyle=style.linestyle(model), **style.kw(model))
    return [_single(fig, ax, "distance between the patches (patches)", "mean |interaction|",
                    "Patch interactions against distance (Ma et al.): a curve that falls fast means each patch "
                    "interacts with its neighbourhood only")]


def probe_figures(rows: pd.DataFrame, style: Style) -> list[Figure]:
    """Every probe figure the rows allow, in the suite's order."""
    return [*curves(rows, style), *fourier_maps(rows), *attention_distance(rows, style), *rollout_maps(rows),
            *interaction_scope(rows, style), *spectra(rows)]
