"""One report section per suite, built from the shapes of its cells (not from the suite's name).

Recognised cell shapes (any suite may use them; a suite with none still gets its full table):

- ``<name>/<int>`` with ``error``: error by severity, mean over the names every model has
  (corruptions: ``gaussian_noise/3``).
- ``<name>`` with ``ce`` / ``relative_ce`` (else ``error``): bars per name (CE per corruption).
- ``<attack>/eps=<e>`` with ``robust_acc``: robust accuracy against epsilon, one panel per attack
  (``clean_acc`` of the same cells, when stored, is drawn at epsilon 0).
- ``<group>/<detector>`` with ``auroc`` / ``fpr95``: bars per detector, one panel per group
  (OOD ``far/energy``, ``near/msp``).
- cell ``""``: the suite's aggregates (mCE, relative mCE, ...) as a per-model table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

from markupsafe import Markup

from robustvit.report import figures
from robustvit.report.summary import headline_paths, is_flag, ordered_paths, provenance, suite_order
from robustvit.report.tables import html_table

if TYPE_CHECKING:
    import pandas as pd

SEVERITY = re.compile(r"^(?P<name>[^/]+)/(?P<sev>\d+)$")
EPSILON = re.compile(r"^(?P<attack>[^/]+)/eps=(?P<eps>[^/]+(?:/[^/]+)?)$")
GROUP = re.compile(r"^(?P<group>[^/]+)/(?P<item>[^/]+)$")
SINGLE = re.compile(r"^(?P<name>[^/]+)$")


@dataclass
class Table:
    """A captioned table rendered to escaped HTML."""

    caption: str
    html: Markup
    collapsed: bool = False


@dataclass
class Section:
    """A report section for one suite."""

    suite: str
    versions: str
    datasets: str
    figures: list[figures.Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_eps(text: str) -> float | None:
    """``4/255`` -> 0.0157, ``0.03`` -> 0.03; None when not a number."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        return None


def _cells(rows: pd.DataFrame, rx: re.Pattern[str], metric: str) -> pd.DataFrame:
    sub = rows[(rows["metric"] == metric) & rows["cell"].str.match(rx)]
    if sub.empty:
        return sub
    parts = sub["cell"].str.extract(rx)
    return sub.join(parts)


def _common(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Rows whose ``col`` value every model in ``df`` has (so means compare like with like)."""
    sets = [set(g[col]) for _, g in df.groupby("model")]
    keep = set.intersection(*sets) if sets else set()
    return df[df[col].isin(keep)]


def severity_figure(rows: pd.DataFrame, style: figures.Style, suite: str) -> figures.Figure | None:
    sev = _cells(rows, SEVERITY, "error")
    if sev.empty:
        return None
    sev = _common(sev, "name").assign(severity=lambda d: d["sev"].astype(int))
    mean = sev.groupby(["model", "severity"], as_index=False)["value"].mean()
    n = sev["name"].nunique()
    return figures.lines(mean, style, x="severity", title=f"{suite}: error by severity (mean over {n})",
                         xlabel="severity", ylabel="error")


def per_name_figures(rows: pd.DataFrame, style: figures.Style, suite: str) -> list[figures.Figure]:
    out = []
    metrics = [m for m in ("ce", "relative_ce") if not _cells(rows, SINGLE, m).empty] or (
        ["error"] if not _cells(rows, SINGLE, "error").empty else [])
    for metric in metrics:
        data = _cells(rows, SINGLE, metric)
        out.append(figures.bars(data, style, category="name", title=f"{suite}: {metric} per {suite}", ylabel=metric))
    return out


def epsilon_figure(rows: pd.DataFrame, style: figures.Style, suite: str) -> figures.Figure | None:
    import pandas as pd

    robust = _cells(rows, EPSILON, "robust_acc")
    if robust.empty:
        return None
    robust = robust.assign(x=robust["eps"].map(parse_eps)).dropna(subset=["x"])
    if robust.empty:
        return None
    ticks = dict(zip(robust["x"], robust["eps"], strict=True))
    clean = _cells(rows, EPSILON, "clean_acc")
    if not clean.empty:
        zero = clean.groupby(["model", "attack"], as_index=False)["value"].mean().assign(x=0.0)
        robust = pd.concat([robust[["model", "attack", "x", "value", "eps"]], zero], ignore_index=True)
        ticks[0.0] = "0"
    return figures.lines(robust, style, x="x", panel="attack", title=f"{suite}: robust accuracy against epsilon",
                         xlabel="epsilon (fraction of the [0,1] pixel range)", ylabel="robust accuracy",
                         xticklabels=ticks)


def group_figures(rows: pd.DataFrame, style: figures.Style, suite: str) -> list[figures.Figure]:
    out = []
    for metric in ("auroc", "fpr95"):
        data = _cells(rows, GROUP, metric)
        data = data[~data["cell"].str.match(EPSILON) & ~data["cell"].str.match(SEVERITY)] if not data.empty else data
        if data.empty:
            continue
        out.append(figures.bars(data, style, category="item", panel="group", title=f"{suite}: {metric} per detector",
                                ylabel=metric))
    return out


def wide_table(rows: pd.DataFrame, paths: list[str], models: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows = metric paths, columns = models (values and provenance tooltips)."""
    import pandas as pd

    present = [m for m in models if m in set(rows["model"])]
    values = {(r["path"], r["model"]): (r["value"], provenance(r)) for _, r in rows.iterrows()}
    table = pd.DataFrame([{"metric": p, **{m: values.get((p, m), (float("nan"), ""))[0] for m in present}}
                          for p in paths], columns=["metric", *present])
    tips = pd.DataFrame([{"metric": "", **{m: values.get((p, m), (0, "not measured"))[1] for m in present}}
                         for p in paths], columns=["metric", *present])
    return table, tips


def build_section(rows: pd.DataFrame, suite: str, style: figures.Style, models: dict[str, str]) -> Section:
    """Figures and tables for one suite's selected rows."""
    versions = ", ".join(sorted({f"v{v}" for v in rows["suite_version"]}))
    section = Section(suite=suite, versions=versions, datasets=", ".join(sorted(set(rows["dataset"].astype(str)))))
    fig = severity_figure(rows, style, suite)
    if fig:
        section.figures.append(fig)
    section.figures.extend(per_name_figures(rows, style, suite))
    fig = epsilon_figure(rows, style, suite)
    if fig:
        section.figures.append(fig)
    section.figures.extend(group_figures(rows, style, suite))

    aggregates = rows[(rows["cell"] == "") & ~rows["metric"].map(is_flag)]
    if not aggregates.empty:
        paths = list(dict.fromkeys(aggregates["path"]))
        table, tips = wide_table(aggregates, paths, models)
        section.tables.append(Table(f"{suite}: suite aggregates", html_table(table, titles=tips)))
    flags = rows[rows["metric"].map(is_flag)]
    for _, r in flags[flags["value"].fillna(0) != 0].iterrows():
        section.warnings.append(f"{r['model']}: {r['path']} is raised (run {r['run_id']})")
    paths = ordered_paths(rows, suite)
    if len(paths) == len(set(aggregates["path"])):  # nothing beyond the aggregates table
        return section
    table, tips = wide_table(rows, paths, models)
    section.tables.append(Table(f"{suite}: all {len(paths)} metrics", html_table(table, titles=tips),
                                collapsed=len(paths) > 12))
    return section


def scatter_figure(selected: pd.DataFrame, style: figures.Style, clean_path: str = "clean/top1",
                   max_panels: int = 9, per_metric: int = 3) -> figures.Figure | None:
    """Clean accuracy against each suite's headline robustness metrics, one point per model.

    A metric headlining up to ``per_metric`` cells gets a panel per cell; more cells are averaged
    (over the cells every model has) into one panel.
    """
    import pandas as pd

    clean = selected[selected["path"] == clean_path].set_index("model")["value"]
    if clean.dropna().empty:
        return None
    clean_suite = clean_path.split("/")[0]
    frames = []
    for suite in suite_order(selected):
        if suite == clean_suite:
            continue
        rows = selected[selected["suite"] == suite]
        head = rows[rows["path"].isin(headline_paths(rows))]
        for metric, mrows in head.groupby("metric", sort=False):
            paths = list(dict.fromkeys(mrows["path"]))
            if len(paths) <= per_metric:
                frames.append(mrows.assign(panel=mrows["path"])[["model", "panel", "value"]])
                continue
            common = _common(mrows, "cell")
            if not common.empty:
                mean = common.groupby("model", as_index=False)["value"].mean()
                frames.append(mean.assign(panel=f"{suite}: mean {metric} over {common['cell'].nunique()} cells"))
    if not frames:
        return None
    points = pd.concat(frames, ignore_index=True)
    points["x"] = points["model"].map(clean)
    points = points.dropna(subset=["x", "value"])
    panels = list(dict.fromkeys(points["panel"]))[:max_panels]
    if not panels:
        return None
    return figures.scatter(points, style, xlabel=clean_path, panels=panels,
                           title="Clean accuracy against robustness")
