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
from robustvit.report.summary import is_flag, ordered_paths, provenance
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
    protocol: str = ""
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

    from robustvit.results.export import with_interval

    present = [m for m in models if m in set(rows["model"])]
    values = {(r["path"], r["model"]): (with_interval(r["value"], r["ci_low"], r["ci_high"]), provenance(r))
              for _, r in rows.iterrows()}
    table = pd.DataFrame([{"metric": p, **{m: values.get((p, m), ("", ""))[0] for m in present}}
                          for p in paths], columns=["metric", *present])
    tips = pd.DataFrame([{"metric": "", **{m: values.get((p, m), (0, "not measured"))[1] for m in present}}
                         for p in paths], columns=["metric", *present])
    return table, tips


def build_section(rows: pd.DataFrame, suite: str, style: figures.Style, models: dict[str, str],
                  protocol: str = "") -> Section:
    """Figures and tables for one protocol group of a suite (its selected rows)."""
    versions = ", ".join(sorted({f"v{v}" for v in rows["suite_version"]}))
    section = Section(suite=suite, versions=versions, datasets=", ".join(sorted(set(rows["dataset"].astype(str)))),
                      protocol=protocol)
    fig = severity_figure(rows, style, suite)
    if fig:
        section.figures.append(fig)
    section.figures.extend(per_name_figures(rows, style, suite))
    fig = epsilon_figure(rows, style, suite)
    if fig:
        section.figures.append(fig)
    section.figures.extend(group_figures(rows, style, suite))
    if "kind" in rows and (rows["kind"] == "probes").any():
        from robustvit.report.probe_figures import probe_figures

        section.figures.extend(probe_figures(rows, style))
    if "kind" in rows and (rows["kind"] == "stability").any():
        from robustvit.report.stability_figures import stability_figures

        section.figures.extend(stability_figures(rows, style))
    if "kind" in rows and (rows["kind"] == "shape_bias").any():
        from robustvit.report.shape_figures import shape_figures

        section.figures.extend(shape_figures(rows, style))
    if "kind" in rows and (rows["kind"] == "backgrounds").any():
        from robustvit.report.backgrounds_figures import backgrounds_figures

        section.figures.extend(backgrounds_figures(rows, style))

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
