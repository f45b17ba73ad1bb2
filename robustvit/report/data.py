"""Record helpers shared by the report, the leaderboard and the gate.

Everything here is a pure function of a records DataFrame (the schema in :mod:`robustvit.records`);
nothing imports torch and nothing knows about particular suites.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from robustvit.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

FAMILIES: tuple[str, ...] = ("vit", "cnn", "hybrid")


def load_records(store_path: str | None = None, **filters: str | Iterable[str] | None) -> pd.DataFrame:
    """Records from a results store opened read-only (a missing store is a user error)."""
    from robustvit.store import Store

    with Store(store_path, readonly=True) as store:
        return store.records(**filters)


def load_runs(store_path: str | None = None) -> pd.DataFrame:
    """Run manifests (``runs`` table) from a results store opened read-only."""
    from robustvit.store import Store

    with Store(store_path, readonly=True) as store:
        return store.runs()


def with_paths(records: pd.DataFrame) -> pd.DataFrame:
    """A copy with a ``path`` column (``suite/cell/metric``, empty cell left out) and an ``order`` column.

    ``order`` is the row position in the input (the store returns rows in write order), used to
    break ties between rows written in the same second.
    """
    df = records.copy()
    missing = [c for c in ("suite", "cell", "metric") if c not in df.columns]
    if missing:
        raise UserError(f"records lack the column(s) {', '.join(missing)} (expected the robustvit record schema)")
    cell = df["cell"].fillna("").astype(str)
    df["path"] = df["suite"].astype(str) + "/" + cell + cell.map(lambda c: "/" if c else "") + df["metric"].astype(str)
    df["order"] = range(len(df))
    return df


def latest(records: pd.DataFrame, *, all_runs: bool = False) -> pd.DataFrame:
    """The current value of every metric path per model (or per model and run with ``all_runs``).

    A model's current checkpoint is the ``model_sha`` of its newest record; among that checkpoint's
    records the newest row of each metric path wins. A run that found its cells cached writes no
    rows, so "latest" is decided per metric, not per run id. With ``all_runs`` every run keeps its
    own rows (newest per path within the run).

    Returns:
        The selected rows with ``path`` and ``order`` columns added.
    """
    df = with_paths(records)
    if df.empty:
        return df
    df = df.sort_values(["created_at", "order"], kind="stable")
    if all_runs:
        return df.drop_duplicates(["model", "run_id", "path"], keep="last").sort_values("order")
    current_sha = df.groupby("model")["model_sha"].last()
    df = df[df["model_sha"] == df["model"].map(current_sha)]
    return df.drop_duplicates(["model", "path"], keep="last").sort_values("order")


def model_info(selected: pd.DataFrame, key: Iterable[str] = ("model",)) -> pd.DataFrame:
    """One row per model (or per ``key`` group): family, params, model_sha, run ids, date, suite versions.

    ``date`` is the newest ``created_at`` of the model's selected rows.
    """
    import pandas as pd

    key = list(key)
    rows = []
    for k, g in selected.groupby(key, sort=False):
        k = k if isinstance(k, tuple) else (k,)
        versions = sorted({f"{s} v{v}" for s, v in zip(g["suite"], g["suite_version"], strict=True)})
        rows.append({
            **dict(zip(key, k, strict=True)),
            "family": str(g["family"].iloc[-1]),
            "params": int(g["params"].iloc[-1]),
            "model_sha": str(g["model_sha"].iloc[-1]),
            "run_ids": ", ".join(sorted(set(g["run_id"].astype(str)))),
            "date": str(g["created_at"].max()),
            "datasets": ", ".join(sorted(set(g["dataset"].astype(str)))),
            "suite_versions": ", ".join(versions),
        })
    return pd.DataFrame(rows, columns=[*key, "family", "params", "model_sha", "run_ids", "date", "datasets",
                                       "suite_versions"])


def directions(selected: pd.DataFrame) -> dict[str, bool]:
    """Metric path -> higher_is_better (as stored)."""
    return {p: bool(h) for p, h in zip(selected["path"], selected["higher_is_better"], strict=True)}


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a metric-path pattern: ``*`` matches within one path segment, ``**`` across segments.

    A slash between two digits belongs to a number (the fraction in ``eps=4/255``), not a segment
    boundary, so ``adversarial/pgd-linf/*/robust_acc`` matches ``.../eps=4/255/robust_acc``.
    """
    parts = re.split(r"(\*\*|\*)", pattern)
    segment = r"(?:[^/]|(?<=\d)/(?=\d))*"
    body = "".join(".*" if p == "**" else segment if p == "*" else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


def match_paths(pattern: str, paths: Iterable[str]) -> list[str]:
    """Paths matching a metric path or pattern, in sorted order (an exact path matches itself)."""
    paths = sorted(set(paths))
    if "*" not in pattern:
        return [pattern] if pattern in paths else []
    rx = pattern_regex(pattern)
    return [p for p in paths if rx.match(p)]


def unknown_metric_error(pattern: str, paths: Iterable[str], where: str = "the store") -> UserError:
    """A did-you-mean user error for a metric path no record has."""
    paths = sorted(set(paths))
    close = difflib.get_close_matches(pattern, paths, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    suites = sorted({p.split("/", 1)[0] for p in paths})
    allowed = f" (metric paths are suite/cell/metric; suites in {where}: {', '.join(suites) or 'none'})"
    return UserError(f"unknown metric {pattern!r}: no record in {where} has it{hint}{allowed}")


def check_family(family: str | None) -> str | None:
    """Validate a ``--family`` value."""
    if family is not None and family not in FAMILIES:
        raise UserError(f"unknown family {family!r} (allowed: {', '.join(FAMILIES)})")
    return family


def wide(selected: pd.DataFrame, key: str = "model") -> pd.DataFrame:
    """Metric paths as columns, one row per ``key`` value (model by default), in first-seen order."""
    table = selected.pivot_table(index=key, columns="path", values="value", aggfunc="last", dropna=False, sort=False)
    return table.reindex(columns=list(dict.fromkeys(selected["path"])))
