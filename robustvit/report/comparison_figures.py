"""ViT-versus-CNN comparison figures: per-model dot plots, a forest plot of family differences and
error-consistency heat maps.

Same conventions as :mod:`robustvit.report.figures`: tidy ``pandas`` input, the Agg backend, family
colours, :func:`label` for every text taken from the data, and a :class:`Figure` (base64 PNG) out, or
``None`` when there is nothing to draw. Each layout scales with the number of models (2 to ~50).
"""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Any

from robustvit.report.figures import FAMILY_COLORS, OTHER_COLOR, Figure, Style, _encode, _pyplot, label

if TYPE_CHECKING:
    import pandas as pd

FAMILY_ORDER = ("vit", "cnn", "hybrid")
MAX_DOT_PANELS = 24
MAX_MATRIX_PANELS = 6


def _family_rank(family: str) -> int:
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _xlimits(points: list[float]) -> tuple[float, float]:
    """X limits around ``points``: padded, clamped to [0, 1] for proportions, never a tiny window."""
    lo, hi = min(points), max(points)
    span = hi - lo
    if lo >= 0.0 and hi <= 1.0:
        pad = max(0.02, 0.1 * span)
        xmin, xmax = max(0.0, lo - pad), min(1.0, hi + pad)
        short = 0.05 - (xmax - xmin)
        if short > 0:  # widen a window pinned against 0 or 1 on its free side
            xmin, xmax = (max(0.0, xmin - short), xmax) if xmax >= 1.0 else (xmin, min(1.0, xmax + short))
        return xmin, xmax
    pad = 0.1 * span if span > 0 else max(0.1 * abs(hi), 1e-3)
    return (max(0.0, lo - pad) if lo >= 0 else lo - pad), hi + pad


def _fmt(v: float) -> str:
    text = f"{v:+.3f}" if abs(v) < 10 else f"{v:+.1f}"
    return text.replace("-", "\u2212")


def dot_plot(values: pd.DataFrame, style: Style, *, title: str, _limits: list | None = None) -> Figure | None:
    """Dot plot: one row per model, one dot (with CI whisker) per model and a family-mean diamond per family.

    Args:
        values: Columns ``model``, ``family``, ``metric``, ``panel``, ``value``, ``ci_low``, ``ci_high``
            (NaN without interval), ``n`` and ``higher_is_better``; one panel per distinct ``panel``.
        style: Model styling; its ``families`` order sets the row order within a family.
        title: Figure title (a note is appended when more than 24 panels were left out).
        _limits: Test hook; when a list, it is filled with each drawn panel's ``(xmin, xmax)``.

    Returns:
        The figure, or None when ``values`` has no finite value.
    """
    if values is None or values.empty or not values["value"].map(_finite).any():
        return None
    data = values[values["value"].map(_finite)]
    panels = list(dict.fromkeys(data["panel"]))
    left_out = max(0, len(panels) - MAX_DOT_PANELS)
    panels = panels[:MAX_DOT_PANELS]
    fig_title = title + (f" ({left_out} more panels not shown)" if left_out else "")
    family_of = {m: str(f) for m, f in zip(data["model"], data["family"], strict=True)}
    order = {m: i for i, m in enumerate(style.families)}
    models = sorted(dict.fromkeys(data["model"]),
                    key=lambda m: (_family_rank(family_of[m]), order.get(m, len(order)), family_of[m]))
    rows: list[tuple[str, str, str | None]] = []  # (tick label, family, model or None for the mean row)
    for fam in dict.fromkeys(family_of[m] for m in models):
        rows += [(label(m, width=28), fam, m) for m in models if family_of[m] == fam]
        rows.append((label(f"{fam} mean", width=28), fam, None))
    ypos = {r: -i for i, r in enumerate(rows)}
    plt = _pyplot()
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    panel_h = max(1.8, 0.22 * len(rows) + 0.9)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols + 1.8, panel_h * nrows), squeeze=False, sharey=True,
                             layout="constrained")
    tick_size = 8 if len(rows) <= 20 else 6
    for ax, p in zip(axes.flat, panels, strict=False):
        sub = data[data["panel"] == p]
        points: list[float] = []
        for row in rows:
            _, fam, model = row
            color = FAMILY_COLORS.get(fam, OTHER_COLOR)
            if model is None:
                vals = sub[sub["family"].astype(str) == fam]["value"].astype(float)
                if len(vals):
                    ax.plot([vals.mean()], [ypos[row]], marker="D", ms=7, color=color, mec="black", mew=0.6,
                            clip_on=False, zorder=3)
                continue
            m = sub[sub["model"] == model]
            if m.empty:
                continue
            r = m.iloc[0]
            v = float(r["value"])
            points.append(v)
            if _finite(r.get("ci_low")) and _finite(r.get("ci_high")):
                lo, hi = float(r["ci_low"]), float(r["ci_high"])
                points += [lo, hi]
                ax.plot([lo, hi], [ypos[row]] * 2, color=color, lw=1.2, alpha=0.8, clip_on=False)
            ax.plot([v], [ypos[row]], "o", ms=4.5, color=color, clip_on=False, zorder=3)
        xmin, xmax = _xlimits(points or [0.0, 1.0])
        ax.set_xlim(xmin, xmax)
        if _limits is not None:
            _limits.append((xmin, xmax))
        first = sub.iloc[0]
        direction = "higher" if bool(first["higher_is_better"]) else "lower"
        ax.set_xlabel(f"{label(str(first['metric']).split('/')[-1], 30)} ({direction} is better)", fontsize="small")
        ax.set_title(label(p, width=50), fontsize="small")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    ax0 = axes[0, 0]
    ax0.set_ylim(-len(rows) + 0.4, 0.6)
    ax0.set_yticks([ypos[r] for r in rows])
    ax0.set_yticklabels([r[0] for r in rows])
    for ax in axes[:, 0]:
        ax.tick_params(axis="y", labelsize=tick_size)
        for tick, row in zip(ax.get_yticklabels(), rows, strict=False):
            tick.set_color(FAMILY_COLORS.get(row[1], OTHER_COLOR))
            if row[2] is None:
                tick.set_fontweight("bold")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(label(fig_title, width=110), fontsize="medium")
    alt = (f"{fig_title}: one dot per model with its confidence interval, grouped by family with a family-mean "
           f"diamond, in {len(panels)} panel(s); {len(models)} models")
    return _encode(fig, fig_title, alt)



def forest_plot(comparisons: pd.DataFrame, *, title: str, _positions: list | None = None) -> Figure | None:
    """Forest plot of ViT-minus-CNN differences, oriented so that right means ViT better.

    Args:
        comparisons: Columns ``metric``, ``protocol_label``, ``diff`` (ViT mean minus CNN mean), ``ci_low``,
            ``ci_high`` (may be NaN), ``verdict`` (``vit``/``cnn``/``tie``), ``higher_is_better`` and ``n``.
        title: Figure title.
        _positions: Test hook; when a list, it is filled with ``(row_label, x, low, high)`` as plotted.

    Returns:
        The figure, or None when no row has a finite ``diff``.
    """
    if comparisons is None or comparisons.empty:
        return None
    data = comparisons[comparisons["diff"].map(_finite)]
    if data.empty:
        return None
    plt = _pyplot()
    n = len(data)
    fig, ax = plt.subplots(figsize=(7.5, max(2.2, 0.3 * n + 1.4)), layout="constrained")
    colors = {"vit": FAMILY_COLORS["vit"], "cnn": FAMILY_COLORS["cnn"]}
    labels: list[str] = []
    extent = 0.0
    for i, (_, r) in enumerate(data.iterrows()):
        sign = 1.0 if bool(r["higher_is_better"]) else -1.0
        x = sign * float(r["diff"])
        has_ci = _finite(r["ci_low"]) and _finite(r["ci_high"])
        lo, hi = sorted((sign * float(r["ci_low"]), sign * float(r["ci_high"]))) if has_ci else (math.nan, math.nan)
        row = label(f"{r['metric']} \u00b7 {r['protocol_label']}" if r["protocol_label"] else str(r["metric"]), width=60)
        labels.append(row)
        if _positions is not None:
            _positions.append((row, x, lo, hi))
        color = colors.get(str(r["verdict"]), OTHER_COLOR)
        if has_ci:
            ax.plot([lo, hi], [-i, -i], color=color, lw=1.5)
            extent = max(extent, abs(lo), abs(hi))
        ax.plot([x], [-i], "o", ms=6, color=color, zorder=3)
        extent = max(extent, abs(x))
        text = _fmt(x) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if has_ci else "")
        ax.text(1.02, -i, text, transform=ax.get_yaxis_transform(), va="center", fontsize=7, family="monospace")
    ax.text(1.02, 1.0, "ViT advantage [CI]", transform=ax.transAxes, va="bottom", fontsize=7, fontweight="bold")
    extent = extent * 1.1 if extent > 0 else 1.0
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-n + 0.4, 0.6)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks([-i for i in range(n)])
    ax.set_yticklabels(labels, fontsize=8 if n <= 25 else 6)
    ax.set_xlabel("\u2190 CNN better | ViT better \u2192")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="-", color=c, label=lab) for c, lab in
               ((colors["vit"], "ViT better"), (colors["cnn"], "CNN better"),
                (OTHER_COLOR, "tie (interval includes 0)"))]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, fontsize="small", frameon=False)
    fig.suptitle(label(title, width=110), fontsize="medium")
    alt = (f"{title}: forest plot of {n} ViT-minus-CNN differences with intervals, sign flipped for "
           "lower-is-better metrics so that right of zero means ViT better; grey marks a tie")
    return _encode(fig, title, alt)


def consistency_matrix(pairs: pd.DataFrame, *, title: str) -> Figure | None:
    """Heat maps of error consistency (Cohen's kappa) between every ViT and every CNN model.

    Args:
        pairs: Columns ``panel`` (one heat map each, at most 6), ``vit_model``, ``cnn_model``, ``kappa``
            (in [-1, 1], may be NaN) and ``n``.
        title: Figure title (a note is appended when panels were left out).

    Returns:
        The figure, or None when no pair has a finite kappa.
    """
    if pairs is None or pairs.empty or not pairs["kappa"].map(_finite).any():
        return None
    panels = list(dict.fromkeys(pairs["panel"]))
    left_out = max(0, len(panels) - MAX_MATRIX_PANELS)
    panels = panels[:MAX_MATRIX_PANELS]
    fig_title = title + (f" ({left_out} more panels not shown)" if left_out else "")
    mats = []
    for p in panels:
        sub = pairs[pairs["panel"] == p]
        mat = sub.pivot_table(index="vit_model", columns="cnn_model", values="kappa", aggfunc="mean", dropna=False)
        mats.append(mat.reindex(index=list(dict.fromkeys(sub["vit_model"])),
                                columns=list(dict.fromkeys(sub["cnn_model"]))).astype(float))
    n_rows = max(m.shape[0] for m in mats)
    n_cols = max(m.shape[1] for m in mats)
    cell = max(0.16, min(0.45, 7.0 / max(n_rows, n_cols)))
    grid_c = min(len(panels), 2)
    grid_r = -(-len(panels) // grid_c)
    plt = _pyplot()
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
    fig, axes = plt.subplots(grid_r, grid_c, squeeze=False, layout="constrained",
                             figsize=(grid_c * (n_cols * cell + 2.6) + 1.0, grid_r * (n_rows * cell + 2.6)))
    image = None
    for ax, p, mat in zip(axes.flat, panels, mats, strict=False):
        image = ax.imshow(mat.to_numpy(), cmap=cmap, vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
        size = 8 if max(mat.shape) <= 20 else 6
        ax.set_yticks(range(mat.shape[0]))
        ax.set_yticklabels([label(m, width=28) for m in mat.index], fontsize=size)
        ax.set_xticks(range(mat.shape[1]))
        ax.set_xticklabels([label(m, width=28) for m in mat.columns], fontsize=size, rotation=60, ha="right",
                           rotation_mode="anchor")
        ax.set_ylabel("ViT model", fontsize="small")
        ax.set_xlabel("CNN model", fontsize="small")
        finite = mat.stack().dropna()
        mean = f" (mean \u03ba = {finite.mean():.2f})" if len(finite) else ""
        ax.set_title("\n".join(textwrap.wrap(label(p, width=80) + mean, 44)), fontsize="small")
        if max(mat.shape) <= 12:
            for (i, j), k in [((i, j), mat.iat[i, j]) for i in range(mat.shape[0]) for j in range(mat.shape[1])]:
                ax.text(j, i, f"{k:.2f}" if _finite(k) else "\u2013", ha="center", va="center", fontsize=7,
                        color="white" if _finite(k) and abs(k) > 0.6 else "black")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="error consistency (Cohen's \u03ba)")
    fig.suptitle(label(fig_title, width=110), fontsize="medium")
    alt = (f"{fig_title}: heat maps of error consistency (Cohen's kappa, -1 to 1, 0 = chance) between each ViT "
           f"model (rows) and each CNN model (columns), {len(panels)} panel(s)")
    return _encode(fig, fig_title, alt)
