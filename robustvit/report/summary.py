"""ViT-vs-CNN summary tables, provenance and sanity-check warnings, built from selected records.

"Selected records" are the output of :func:`robustvit.report.data.latest`: one current row per
model and metric path, with a ``path`` column. Nothing here knows particular suites: suites are
ordered (known ones first), metric paths grouped by cell depth, and any metric named ``flag_*``
with a non-zero value is a warning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from robustvit.report.data import FAMILIES

if TYPE_CHECKING:
    import pandas as pd

SUITE_ORDER: tuple[str, ...] = ("clean", "corruption", "adversarial", "ood", "probes")
FLAG_PREFIX = "flag_"
HEADLINE_BUDGET = 8
#: metrics that headline a suite when its aggregates lack them
PRIMARY_METRICS: tuple[str, ...] = ("top1", "mce", "relative_mce", "robust_acc", "auroc", "fpr95", "error",
                                    "accuracy", "acc")


def suite_order(selected: pd.DataFrame) -> list[str]:
    """Suites present, known ones in a fixed order first, then the others in first-seen order."""
    present = list(dict.fromkeys(selected["suite"]))
    return [s for s in SUITE_ORDER if s in present] + [s for s in present if s not in SUITE_ORDER]


def model_order(selected: pd.DataFrame) -> dict[str, str]:
    """Model -> family, ViTs first, then CNNs, hybrids and anything else (first-seen order within)."""
    fam = dict(zip(selected["model"], selected["family"], strict=True))
    rank = {"vit": 0, "cnn": 1, "hybrid": 2}
    return {m: fam[m] for m in sorted(fam, key=lambda m: (rank.get(fam[m], 3), list(fam).index(m)))}


_SEPARATOR = re.compile(r"(?<!\d)/|/(?!\d)")


def depth(cell: str) -> int:
    """Number of segments of a cell; a slash between digits is part of a number (``eps=4/255``)."""
    return 0 if not cell else len(_SEPARATOR.findall(cell)) + 1


def is_flag(metric: str) -> bool:
    return str(metric).startswith(FLAG_PREFIX)


def headline_paths(suite_rows: pd.DataFrame, budget: int = HEADLINE_BUDGET) -> list[str]:
    """The metric paths of one suite worth a place in the summary.

    The suite's aggregates (cell ``""``) come first. When they hold no primary metric (see
    :data:`PRIMARY_METRICS`), the primary metrics of the shallowest cell level that has one are
    added (robust accuracy per attack and epsilon; AUROC/FPR95 per OOD group); when they do, the
    next level is added whole if the total stays within ``budget``. A suite with no primary metric
    anywhere shows its first level's first metric. At most twice ``budget`` paths; ``flag_*``
    metrics are left to the warnings.
    """
    rows = suite_rows[~suite_rows["metric"].map(is_flag)]
    paths = list(dict.fromkeys(rows["path"]))
    depth_of = dict(zip(rows["path"], rows["cell"].map(depth), strict=True))
    metric_of = dict(zip(rows["path"], rows["metric"], strict=True))
    levels = [[p for p in paths if depth_of[p] == d] for d in sorted(set(depth_of.values()))]
    out = levels.pop(0) if levels and depth_of[levels[0][0]] == 0 else []
    if any(metric_of[p] in PRIMARY_METRICS for p in out):
        if levels and len(out) + len(levels[0]) <= budget:
            out += levels[0]
    else:
        primary = next(([p for p in level if metric_of[p] in PRIMARY_METRICS] for level in levels
                        if any(metric_of[p] in PRIMARY_METRICS for p in level)), [])
        if not primary and not out and levels:
            primary = [p for p in levels[0] if metric_of[p] == metric_of[levels[0][0]]]
        out += primary
    return out[: 2 * budget]


def ordered_paths(selected: pd.DataFrame, suite: str) -> list[str]:
    """All paths of a suite, by cell depth then first-seen order."""
    rows = selected[selected["suite"] == suite]
    depth_of = dict(zip(rows["path"], rows["cell"].map(depth), strict=True))
    paths = list(dict.fromkeys(rows["path"]))
    return sorted(paths, key=lambda p: (depth_of[p], paths.index(p)))


def provenance(row: pd.Series) -> str:
    """Where a number comes from, for a tooltip."""
    return (f"{row['model']} (sha {row['model_sha']}): run {row['run_id']} at {row['created_at']}, "
            f"suite {row['suite']} v{row['suite_version']}, data {row['dataset']}, n={row['n']}")


@dataclass
class SummaryTable:
    """A summary table and its per-cell provenance tooltips (same shape)."""

    table: pd.DataFrame
    titles: pd.DataFrame


def summary_table(selected: pd.DataFrame, paths: list[str], models: dict[str, str]) -> SummaryTable:
    """Rows = metric paths; columns: direction, mean per family, ViT minus CNN, winning family, each model."""
    import pandas as pd

    rows, tips = [], []
    by_path = {p: g for p, g in selected[selected["path"].isin(paths)].groupby("path", sort=False)}
    families = [f for f in (*FAMILIES, *sorted(set(models.values()) - set(FAMILIES))) if f in models.values()]
    for p in paths:
        g = by_path.get(p)
        if g is None:
            continue
        hib = bool(g["higher_is_better"].iloc[-1])
        vals = dict(zip(g["model"], g["value"], strict=True))
        src = {r["model"]: provenance(r) for _, r in g.iterrows()}
        means = {}
        for f in families:
            fv = [vals[m] for m, fm in models.items() if fm == f and m in vals and not math.isnan(vals[m])]
            means[f] = sum(fv) / len(fv) if fv else math.nan
        row = {"metric": p, "better": "higher" if hib else "lower"}
        for f in families:
            n = sum(1 for m, fm in models.items() if fm == f)
            row[f"{f} mean ({n})"] = means[f]
        row["vit − cnn"] = means.get("vit", math.nan) - means.get("cnn", math.nan)
        row["best family"] = _winner(means, hib)
        tip = {k: "" for k in row}
        for m in models:
            row[m] = vals.get(m, math.nan)
            tip[m] = src.get(m, "not measured")
        rows.append(row)
        tips.append(tip)
    cols = ["metric", "better", *[f"{f} mean ({sum(1 for v in models.values() if v == f)})" for f in families],
            "vit − cnn", "best family", *models]
    return SummaryTable(pd.DataFrame(rows, columns=cols), pd.DataFrame(tips, columns=cols).fillna(""))


def _winner(means: dict[str, float], higher_is_better: bool) -> str:
    known = {f: v for f, v in means.items() if not math.isnan(v)}
    if len(known) < 2:
        return "—"
    best = max(known.values()) if higher_is_better else min(known.values())
    winners = [f for f, v in known.items() if math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12)]
    return "tie" if len(winners) > 1 else winners[0]


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
