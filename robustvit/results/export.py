"""Outputs of the results layer: one JSON document, one long CSV table, terminal / Markdown tables.

JSON (``robustvit results --format json``), schema version :data:`SCHEMA_VERSION`::

    {"schema": 1,
     "records": [{"model", "family", "protocol", "protocol_label", "metric", "value", "ci_low", "ci_high",
                  "n", "higher_is_better", "suite", "cell", "model_sha", "run_id", "dataset", "created_at"}, ...],
     "comparisons": [{"metric", "protocol", "protocol_label", "vit", "cnn", "diff", "ci_low", "ci_high",
                      "p_value", "n", "verdict", "higher_is_better", "vit_models", "cnn_models"}, ...],
     "error_consistency": [{"protocol", "protocol_label", "vit_model", "cnn_model", "cells", "n", "c_obs",
                            "c_exp", "kappa"}, ...]}

``metric`` is the full path ``suite/cell/metric``; NaN is ``null``; ``diff`` is ViT minus CNN and
``verdict`` one of ``"vit"``, ``"cnn"``, ``"tie"``. CSV (``--format csv``) is one table with the record fields.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.results import Results

SCHEMA_VERSION = 1
RECORD_FIELDS: tuple[str, ...] = ("model", "family", "protocol", "protocol_label", "metric", "value", "ci_low",
                                  "ci_high", "n", "higher_is_better", "suite", "cell", "model_sha", "run_id",
                                  "dataset", "created_at")
COMPARISON_FIELDS: tuple[str, ...] = ("metric", "protocol", "protocol_label", "vit", "cnn", "diff", "ci_low",
                                      "ci_high", "p_value", "n", "verdict", "higher_is_better", "vit_models",
                                      "cnn_models")
CONSISTENCY_FIELDS: tuple[str, ...] = ("protocol", "protocol_label", "vit_model", "cnn_model", "cells", "n",
                                       "c_obs", "c_exp", "kappa")
MAX_MODEL_COLUMNS = 6
NO_INTERVAL = "(no interval)"


def records_table(res: Results) -> pd.DataFrame:
    """The current records with the documented fields (``metric`` = full path)."""
    df = res.selected.assign(metric=res.selected["path"])
    return df[list(RECORD_FIELDS)].reset_index(drop=True)


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows(df: pd.DataFrame, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in zip(fields, row, strict=True)} for row in df[list(fields)].itertuples(index=False)]


def json_document(res: Results) -> str:
    """One JSON document: schema version, records, comparisons and error consistency."""
    doc = {"schema": SCHEMA_VERSION, "records": _rows(records_table(res), RECORD_FIELDS),
           "comparisons": _rows(res.comparisons, COMPARISON_FIELDS),
           "error_consistency": _rows(res.consistency, CONSISTENCY_FIELDS)}
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def csv_table(res: Results) -> str:
    """One long CSV table with the record fields."""
    return records_table(res).to_csv(index=False, float_format="%.6g")


# -- tables for people ---------------------------------------------------------------------------------
def number(value: Any) -> str:
    """The one number format: 4 decimals; empty for NaN."""
    v = _plain(value)
    return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def with_interval(value: Any, low: Any, high: Any, signed: bool = False) -> str:
    """``0.9963 [0.9866, 0.9990]``, or the value alone marked ``(no interval)``."""
    fmt = "{:+.4f}" if signed else "{:.4f}"
    v, lo, hi = (_plain(x) for x in (value, low, high))
    if v is None:
        return ""
    if lo is None or hi is None:
        return f"{fmt.format(v)} {NO_INTERVAL}"
    return f"{fmt.format(v)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def p_text(p: Any) -> str:
    v = _plain(p)
    return "" if v is None else "<0.0001" if v < 1e-4 else f"{v:.4f}"


def group_tables(res: Results, *, paths: list[str] | None = None) -> list[tuple[str, pd.DataFrame]]:
    """One (title, table) per protocol group: rows = headline paths; model values with intervals,
    family means, ViT - CNN with its interval, p and verdict. More than :data:`MAX_MODEL_COLUMNS` models:
    family means only."""
    import pandas as pd

    from robustvit.results.select import model_order

    wanted = res.headline if paths is None else paths
    comps = {(r.protocol, r.metric): r for r in res.comparisons.itertuples(index=False)}
    out = []
    for _suite, protocol, rows in res.groups():
        rows = rows[rows["path"].isin(wanted)]
        if rows.empty:
            continue
        models = model_order(rows)
        show_models = len(models) <= MAX_MODEL_COLUMNS
        table = []
        for path, g in rows.groupby("path", sort=False):
            hib = bool(g["higher_is_better"].iloc[-1])
            line: dict[str, Any] = {"metric": path, "better": "higher" if hib else "lower", "n": int(g["n"].max())}
            by_model = {r.model: r for r in g.itertuples(index=False)}
            if show_models:
                for m, fam in models.items():
                    r = by_model.get(m)
                    line[f"{m} [{fam}]"] = "" if r is None else with_interval(r.value, r.ci_low, r.ci_high)
            c = comps.get((protocol, path))
            for fam in ("vit", "cnn", "hybrid"):
                vals = [by_model[m].value for m, f in models.items() if f == fam and m in by_model]
                if vals and (not show_models or len(vals) > 1):
                    line[f"{fam} mean ({len(vals)})"] = number(sum(vals) / len(vals))
            if c is not None:
                line["ViT − CNN [95% CI]"] = with_interval(c.diff, c.ci_low, c.ci_high, signed=True)
                line["p"] = p_text(c.p_value)
                line["verdict"] = c.verdict
            table.append(line)
        title = f"{rows['protocol_label'].iloc[0]}  ({len(models)} models; protocol {protocol})"
        out.append((title, pd.DataFrame(table).fillna("")))
    return out


def consistency_table(res: Results) -> pd.DataFrame:
    """Error consistency rows for people: protocol, ViT model, CNN model, cells, n, c_obs, c_exp, kappa."""
    ec = res.consistency
    if ec.empty:
        return ec
    table = ec[["protocol_label", "vit_model", "cnn_model", "cells", "n", "c_obs", "c_exp", "kappa"]].copy()
    for col in ("c_obs", "c_exp", "kappa"):
        table[col] = table[col].map(number)
    return table.rename(columns={"protocol_label": "protocol", "kappa": "kappa (error consistency)"})


def render(table: pd.DataFrame, fmt: str) -> str:
    """A table as plain text or Markdown."""
    if fmt == "markdown":
        header = "| " + " | ".join(map(str, table.columns)) + " |"
        sep = "|" + "---|" * len(table.columns)
        body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.values]
        return "\n".join([header, sep, *body])
    return table.to_string(index=False)


def warnings_table(res: Results) -> pd.DataFrame:
    """Raised sanity flags (``flag_*`` metrics with a non-zero value): model, family, where, which check."""
    import pandas as pd

    from robustvit.results.select import FLAG_PREFIX, is_flag

    sel = res.selected
    flags = sel[sel["metric"].map(is_flag) & (sel["value"].fillna(0).astype(float) != 0)]
    return pd.DataFrame({"model": flags["model"], "family": flags["family"],
                         "where": flags["path"].str.rsplit("/", n=1).str[0],
                         "check": flags["metric"].str.slice(len(FLAG_PREFIX)).str.replace("_", " ")}).reset_index(drop=True)


def summary_text(res: Results, fmt: str = "table", *, paths: list[str] | None = None) -> str:
    """The ViT-vs-CNN summary: raised sanity flags, one table per protocol group, then error consistency."""
    parts = []
    flags = warnings_table(res)
    if not flags.empty:
        parts.append(f"## WARNING: {len(flags)} sanity check(s) raised (these numbers may overstate robustness or "
                     f"reveal broken detectors)\n\n{render(flags, fmt)}")
    for title, table in group_tables(res, paths=paths):
        parts.append(f"## {title}\n\n{render(table, fmt)}")
    ec = consistency_table(res)
    if not ec.empty:
        parts.append(f"## error consistency (Cohen's kappa over per-image correctness, Geirhos et al. 2020)\n\n"
                     f"{render(ec, fmt)}")
    parts.append("verdict: the better family when the 95% interval of ViT − CNN excludes 0, else tie; "
                 "intervals: Wilson for proportions, paired bootstrap over images otherwise")
    return "\n\n".join(parts)
