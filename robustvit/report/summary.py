"""ViT-vs-CNN summary tables (one per protocol group), comparison figures, provenance and warnings.

Everything comes from the results layer (:mod:`robustvit.results`): its current records, headline
paths, paired comparisons and error consistency; nothing here knows particular suites, and any
metric named ``flag_*`` with a non-zero value is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from robustvit.results.export import consistency_table, group_tables  # noqa: F401  (re-exported)
from robustvit.results.select import FLAG_PREFIX, depth, is_flag

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.report.figures import Figure, Style
    from robustvit.results import Results

VERDICT_NOTE = ("Each table compares models evaluated under one protocol (same data, image subset, suite options "
                "and version); numbers of different protocols are never averaged. Values carry 95% intervals "
                "(Wilson for proportions, a seeded bootstrap over images otherwise) and n. \"ViT − CNN\" is the "
                "difference of the family means with a paired-bootstrap interval; the verdict names the better "
                "family only when that interval excludes 0, else \"tie\".")


@dataclass
class GroupSummary:
    """One protocol group's summary table and its per-cell provenance tooltips (same shape)."""

    title: str
    protocol: str
    table: pd.DataFrame
    titles: pd.DataFrame


def group_summaries(res: Results) -> list[GroupSummary]:
    """One table per protocol group (rows = headline paths), with provenance tooltips on model values."""
    import pandas as pd

    out = []
    sel = res.selected
    for (title, table), (_suite, protocol, _rows) in zip(group_tables(res), _groups_with_headline(res), strict=True):
        rows = sel[sel["protocol"] == protocol]
        tips = pd.DataFrame("", index=table.index, columns=table.columns)
        for col in table.columns:
            model = col.rsplit(" [", 1)[0] if col.endswith("]") and " [" in col else None
            if model is None:
                continue
            for i, path in enumerate(table["metric"]):
                hit = rows[(rows["model"] == model) & (rows["path"] == path)]
                tips.iloc[i, table.columns.get_loc(col)] = provenance(hit.iloc[-1]) if not hit.empty else "not measured"
        out.append(GroupSummary(title, protocol, table, tips))
    return out


def _groups_with_headline(res: Results) -> list:
    return [g for g in res.groups() if g[2]["path"].isin(res.headline).any()]


def comparison_figures(res: Results, style: Style) -> list[Figure]:
    """Dot plots with intervals by family per headline metric, the ViT-minus-CNN forest plot and the
    error-consistency matrices (those that have something to draw)."""
    from robustvit.report.comparison_figures import consistency_matrix, dot_plot, forest_plot

    sel = res.selected[res.selected["path"].isin(res.headline)]
    several = sel.groupby("suite")["protocol"].nunique()
    panel = [p if several.get(s, 1) == 1 else f"{p} · {lab}"
             for p, s, lab in zip(sel["path"], sel["suite"], sel["protocol_label"], strict=True)]
    comps = res.comparisons
    comps = comps.assign(protocol_label=[lab if several.get(s, 1) > 1 else ""
                                         for s, lab in zip(comps["suite"], comps["protocol_label"], strict=True)])
    out = [dot_plot(sel.assign(panel=panel), style, title="Headline metrics by family (dots: models, whiskers: "
                    "95% intervals, diamonds: family means)"),
           forest_plot(comps, title="ViT minus CNN per headline metric (paired 95% intervals)"),
           consistency_matrix(res.consistency.assign(panel=res.consistency["protocol_label"]),
                              title="Error consistency of ViT-CNN pairs")]
    return [f for f in out if f is not None]


def ordered_paths(selected: pd.DataFrame, suite: str) -> list[str]:
    """All paths of a suite's rows, by cell depth then first-seen order."""
    rows = selected[selected["suite"] == suite]
    depth_of = dict(zip(rows["path"], rows["cell"].map(depth), strict=True))
    paths = list(dict.fromkeys(rows["path"]))
    return sorted(paths, key=lambda p: (depth_of[p], paths.index(p)))


def provenance(row: pd.Series) -> str:
    """Where a number comes from, for a tooltip."""
    from robustvit.results.export import with_interval

    return (f"{row['model']} (sha {row['model_sha']}): run {row['run_id']} at {row['created_at']}, "
            f"suite {row['suite']} v{row['suite_version']}, data {row['dataset']}, protocol {row['protocol']}, "
            f"n={row['n']}, value {with_interval(row['value'], row.get('ci_low'), row.get('ci_high'))}")


def flag_warnings(selected: pd.DataFrame) -> pd.DataFrame:
    """Rows of raised sanity-check flags (``flag_*`` metrics with a non-zero value)."""
    flags = selected[selected["metric"].map(is_flag)]
    raised = flags[flags["value"].fillna(0).astype(float) != 0]
    out = raised[["model", "family", "suite", "cell", "metric", "value", "run_id", "created_at"]].copy()
    out["check"] = out["metric"].str.slice(len(FLAG_PREFIX)).str.replace("_", " ")
    return out.reset_index(drop=True)


def models_table(selected: pd.DataFrame, models: dict[str, str]) -> pd.DataFrame:
    """Provenance per model: family, params, checkpoint hash, runs, newest date, datasets, suite versions."""
    from robustvit.report.data import model_info

    info = model_info(selected).set_index("model")
    return info.reindex(list(models)).reset_index()


def runs_table(runs: pd.DataFrame | None, run_ids: set[str]) -> pd.DataFrame | None:
    """The run manifests behind the records: time, device, seed, git commit and package versions."""
    import json

    if runs is None or runs.empty:
        return None
    r = runs[runs["run_id"].isin(run_ids)].copy()
    if r.empty:
        return None

    def _versions(text: str) -> str:
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            return str(text)
        return ", ".join(f"{k} {v}" for k, v in sorted(data.items())) if isinstance(data, dict) else str(data)

    r["versions"] = r["versions"].map(_versions)
    cols = [c for c in ("run_id", "created_at", "device", "seed", "git_commit", "versions") if c in r.columns]
    return r[cols].reset_index(drop=True)
