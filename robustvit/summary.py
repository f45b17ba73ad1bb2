"""ViT-vs-CNN tables for the terminal: pure functions of a records DataFrame (no torch).

One table per suite: rows are the suite's headline metrics (``cell/metric``), columns are the
models (``name [family]``), then the mean of each family and the ViT - CNN difference.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# suite -> (cell regex, metrics) of its headline rows; suites not listed show all their rows
HEADLINES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "clean": (r".*", None),
    "corruption": (r"^[^/]*$", ("mce", "relative_mce", "mean_error", "error")),
    "adversarial": (r".*", ("clean_acc", "robust_acc", "median_norm", "flag_gradient_masking")),
    "ood": (r"^(near|far)(/[^/]+)?$", ("auroc", "fpr95")),
}
FAMILY_ORDER = ("vit", "hybrid", "cnn")


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The newest row of every (model, suite, cell, metric)."""
    if df.empty:
        return df
    df = df.sort_values("created_at", kind="stable")
    return df.drop_duplicates(["model", "model_sha", "suite", "cell", "metric"], keep="last")


def suite_table(df: pd.DataFrame, suite: str, *, headline: bool = True) -> pd.DataFrame:
    """Rows ``cell/metric`` x columns models, family means and ``vit - cnn`` for one suite."""
    import pandas as pd

    rows = latest(df[df["suite"] == suite])
    kind = rows["kind"].iloc[0] if len(rows) else suite
    if headline and kind in HEADLINES:
        pattern, metrics = HEADLINES[kind]
        keep = rows["cell"].map(lambda c: re.match(pattern, c) is not None)
        if metrics is not None:
            keep &= rows["metric"].isin(metrics)
        rows = rows[keep]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(row=[f"{c}/{m}" if c else m for c, m in zip(rows["cell"], rows["metric"])],
                       column=[f"{m} [{f}]" for m, f in zip(rows["model"], rows["family"])])
    order = list(dict.fromkeys(rows["row"]))
    table = rows.pivot_table(index="row", columns="column", values="value", aggfunc="last", sort=False)
    table = table.reindex(order)
    families = rows.drop_duplicates("column").set_index("column")["family"]
    for family in FAMILY_ORDER:
        cols = [c for c in table.columns if families.get(c) == family]
        if cols:
            table[f"{family} mean"] = table[cols].mean(axis=1)
    if "vit mean" in table and "cnn mean" in table:
        table["vit - cnn"] = table["vit mean"] - table["cnn mean"]
    table.index.name = suite
    table.columns.name = None
    return table


def summary_tables(df: pd.DataFrame, *, headline: bool = True) -> list[tuple[str, pd.DataFrame]]:
    """One (suite, table) per suite present in ``df``, in a stable order."""
    order = {kind: i for i, kind in enumerate(HEADLINES)}
    suites = df.drop_duplicates("suite").sort_values("suite")
    ranked = sorted(zip(suites["suite"], suites["kind"]), key=lambda sk: (order.get(sk[1], len(order)), sk[0]))
    tables = [(s, suite_table(df, s, headline=headline)) for s, _ in ranked]
    return [(s, t) for s, t in tables if not t.empty]


def format_table(table: pd.DataFrame, fmt: str = "table") -> str:
    """Render a table as ``table`` (plain text), ``markdown``, ``csv`` or ``json``."""
    if fmt == "csv":
        return table.to_csv(float_format="%.6g")
    if fmt == "json":
        return table.to_json(orient="index", indent=2)
    shown = table.map(lambda v: "" if v != v else f"{v:.4f}")  # NaN shown empty
    if fmt == "markdown":
        header = "| " + " | ".join([str(table.index.name or ""), *map(str, table.columns)]) + " |"
        sep = "|" + "---|" * (len(table.columns) + 1)
        body = ["| " + " | ".join([str(i), *row]) + " |" for i, row in zip(shown.index, shown.values)]
        return "\n".join([header, sep, *body])
    return shown.to_string()
