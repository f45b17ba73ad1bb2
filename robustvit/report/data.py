"""Record helpers shared by the report, the leaderboard and the gate.

Everything here is a pure function of a records DataFrame (the schema in :mod:`robustvit.records`);
nothing imports torch and nothing knows about particular suites.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from robustvit.results.paths import (  # noqa: F401  (re-exported for the report and leaderboard)
    check_family,
    directions,
    match_paths,
    pattern_regex,
    unknown_metric_error,
    wide,
)
from robustvit.results.select import FAMILIES, latest, with_paths  # noqa: F401

if TYPE_CHECKING:
    import pandas as pd



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












