"""Leaderboards: a pure function of stored records.

>>> board = leaderboard(records, ["mce", "relative_mce"], suite="corruption")   # doctest: +SKIP

One row per model (its latest values, see :func:`robustvit.results.latest`) or, with
``all_runs=True``, one row per model and run. A leaderboard ranks within one protocol (numbers of
other presets, image subsets or suite versions do not compare): by default the protocol of the
ranking metric that has the most models, or the one ``protocol`` names. Rows are ranked by the
first metric in the direction stored with it (``higher_is_better``); ties share the lowest rank
(``method="min"``) and models without a value for it come last with no rank. The ranking metric's
95% interval and n are columns too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from robustvit.errors import UserError
from robustvit.report.data import check_family, directions, latest, match_paths, unknown_metric_error, wide
from robustvit.report.tables import html_document, html_table, markdown_table

if TYPE_CHECKING:
    import pandas as pd

FORMATS: tuple[str, ...] = ("md", "csv", "html", "json")
CLEAN_ACCURACY = "clean/top1"
INFO_COLUMNS: tuple[str, ...] = ("family", "params", "clean_top1", "model_sha", "run_id", "date")


def resolve_metrics(metrics: Sequence[str], paths: Sequence[str], suite: str | None = None) -> list[str]:
    """Full metric paths for the requested metrics.

    A metric is a full path (``corruption/mce``), or relative to ``suite`` (``mce`` with suite
    ``corruption``); ``*`` (one segment) and ``**`` (any) patterns expand to every match.
    """
    if not metrics:
        raise UserError("no metric given (pass --metric, e.g. --suite corruption --metric mce)")
    suites = {p.split("/", 1)[0] for p in paths}
    if suite is not None and suite not in suites:
        raise UserError(f"no records of suite {suite!r} (suites in the store: {', '.join(sorted(suites)) or 'none'})")
    out: list[str] = []
    for m in metrics:
        full = m if suite is None or m.startswith(f"{suite}/") else f"{suite}/{m}"
        found = match_paths(full, paths)
        if not found:
            raise unknown_metric_error(full, paths)
        out.extend(p for p in found if p not in out)
    return out


def leaderboard(
    records: pd.DataFrame,
    metrics: Sequence[str],
    *,
    suite: str | None = None,
    family: str | None = None,
    all_runs: bool = False,
    protocol: str | None = None,
    specs: dict | None = None,
) -> pd.DataFrame:
    """Rank models on stored metrics.

    Args:
        records: Records (the schema of :mod:`robustvit.records`), e.g. ``Store(...).records()``.
        metrics: Metric paths or patterns (see :func:`resolve_metrics`); the first one ranks.
        suite: Suite the metrics are relative to (optional when they are full paths).
        family: Keep only models of this family (``vit``, ``cnn`` or ``hybrid``).
        all_runs: One row per model and run instead of one per model (latest values).
        protocol: The protocol to rank within (an id, or a unique prefix of one); default: the
            protocol of the ranking metric with the most models.
        specs: Protocol descriptions (``Store.protocols()``) for readable labels.

    Returns:
        DataFrame with columns ``rank`` (nullable int), ``model``, one column per metric path,
        ``family``, ``params``, ``clean_top1``, ``model_sha``, ``run_id`` and ``date`` (ISO time of
        the newest ranked-metric record), sorted by rank. ``df.attrs`` holds ``metrics`` (the
        resolved paths), ``higher_is_better`` (path -> bool), ``protocol``, ``protocol_label`` and
        ``other_protocols`` (id -> label of the ranking metric's protocols left out).
    """
    import pandas as pd

    check_family(family)
    selected = latest(records, all_runs=all_runs)
    if family is not None:
        selected = selected[selected["family"] == family]
    paths = list(selected["path"]) if not selected.empty else []
    if selected.empty and family is not None:
        raise UserError(f"no records of family {family!r} in the store")
    cols = resolve_metrics(metrics, paths, suite)
    selected, chosen, others = _one_protocol(selected, cols, protocol, specs)
    hib = directions(selected)
    key = ["model", "run_id"] if all_runs else ["model"]
    selected = selected.assign(_key=selected[key].astype(str).agg("\x1f".join, axis=1))
    wanted = selected[selected["path"].isin(cols)]
    table = wide(wanted, key="_key")
    clean = wide(selected[selected["path"] == CLEAN_ACCURACY], key="_key")
    first = wanted[wanted["path"] == cols[0]]
    rows = []
    for k in table.index:
        group = wanted[wanted["_key"] == k]
        ranked = first[first["_key"] == k]
        src = ranked if not ranked.empty else group
        last = src.sort_values(["created_at", "order"]).iloc[-1]
        rows.append({
            "model": last["model"],
            **{c: table.at[k, c] for c in cols},
            "family": last["family"],
            "params": int(last["params"]),
            "clean_top1": clean.at[k, CLEAN_ACCURACY] if k in clean.index else math.nan,
            "model_sha": last["model_sha"],
            "run_id": last["run_id"],
            "date": last["created_at"],
        })
    info = [c for c in INFO_COLUMNS if not (c == "clean_top1" and CLEAN_ACCURACY in cols)]  # never twice
    df = pd.DataFrame(rows, columns=["model", *cols, *INFO_COLUMNS])[["model", *cols, *info]]
    df[cols] = df[cols].astype(float)
    if "clean_top1" in df:
        df["clean_top1"] = df["clean_top1"].astype(float)
    ascending = not hib.get(cols[0], True)
    df.insert(0, "rank", df[cols[0]].rank(method="min", ascending=ascending).astype("Int64"))
    ci = first.set_index("_key")
    position = df.columns.get_loc(cols[-1]) + 1
    for offset, column in enumerate(("ci_low", "ci_high", "n")):
        df.insert(position + offset, column, [ci[column].get(k, math.nan) if k in ci.index else math.nan
                                              for k in table.index])
    df = df.sort_values(["rank", "model", "date"], na_position="last", kind="stable").reset_index(drop=True)
    df.attrs["metrics"] = cols
    df.attrs["higher_is_better"] = {c: hib.get(c, True) for c in cols}
    df.attrs["protocol"], df.attrs["protocol_label"] = chosen
    df.attrs["other_protocols"] = others
    return df


def _one_protocol(selected: pd.DataFrame, cols: list[str], protocol: str | None,
                  specs: dict | None) -> tuple[pd.DataFrame, tuple[str, str], dict[str, str]]:
    """One protocol per metric path: for the ranking metric the named one, else (as for the other
    columns and clean accuracy) the protocol of the path with the most models."""
    from robustvit.results.select import protocol_labels

    labels = protocol_labels(selected, specs)
    path = cols[0]

    def counted(p: str) -> pd.Series:
        rows = selected[selected["path"] == p]
        return rows.groupby("protocol", sort=False)["model"].nunique().sort_values(ascending=False, kind="stable")

    counts = counted(path)
    if protocol is not None:
        matches = [p for p in counts.index if p == protocol or p.startswith(protocol)]
        if len(matches) != 1:
            known = "; ".join(f"{p} ({labels.get(p, '')})" for p in counts.index)
            raise UserError(f"protocol {protocol!r} {'is ambiguous' if matches else 'has no record of ' + path} "
                            f"(protocols of {path}: {known})")
        chosen = matches[0]
    else:
        chosen = str(counts.index[0])
    others = {str(p): labels.get(p, "") for p in counts.index if p != chosen}
    keep = (selected["path"] == path) & (selected["protocol"] == chosen)
    for other in dict.fromkeys([*cols[1:], CLEAN_ACCURACY]):
        if other != path and not (c := counted(other)).empty:
            keep |= (selected["path"] == other) & (selected["protocol"] == c.index[0])
    return selected[keep], (chosen, labels.get(chosen, chosen)), others


def _title(board: pd.DataFrame) -> str:
    hib = board.attrs.get("higher_is_better", {})
    parts = [f"{m} ({'higher' if hib.get(m, True) else 'lower'} is better)" for m in board.attrs.get("metrics", [])]
    label = board.attrs.get("protocol_label")
    return "robustvit leaderboard: " + ", ".join(parts) + (f" · protocol {label}" if label else "")


def _others(board: pd.DataFrame) -> str:
    others = board.attrs.get("other_protocols") or {}
    if not others:
        return ""
    items = "; ".join(f"{p} ({label})" for p, label in others.items())
    return f"Other protocols of this metric, ranked separately with --protocol: {items}"


def format_leaderboard(board: pd.DataFrame, fmt: str) -> str:
    """Render a leaderboard as ``md``, ``csv``, ``html`` (a standalone page) or ``json`` (a list of rows)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown leaderboard format {fmt!r} (allowed: {', '.join(FORMATS)})")
    if fmt == "csv":
        return board.to_csv(index=False)
    if fmt == "json":
        rows = []
        for rec in board.to_dict(orient="records"):
            rows.append({k: _json_value(v) for k, v in rec.items()})
        return json.dumps(rows, indent=2) + "\n"
    note = _others(board)
    if fmt == "md":
        return f"**{_title(board)}**\n\n" + markdown_table(board) + "\n" + (f"\n{note}\n" if note else "")
    from markupsafe import Markup

    body = Markup("<h1>{}</h1>\n").format(_title(board)) + html_table(board)
    if note:
        body += Markup("\n<p>{}</p>").format(note)
    return html_document(_title(board), body)


def _json_value(v: object) -> object:
    import pandas as pd

    if v is None or v is pd.NA:
        return None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
    return v
