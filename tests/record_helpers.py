"""Comparing stores: records sorted by path with the columns that must match between two runs."""

from __future__ import annotations

import pandas as pd

from robustvit.store import Store

#: what two runs of the same plan must agree on (run ids and timestamps differ by nature)
COLUMNS = ["model", "suite", "cell", "metric", "value", "n", "ci_low", "ci_high", "protocol"]


def records(location) -> pd.DataFrame:
    """A store's records (SQLite path or PostgreSQL URL), sorted by (model, suite, cell, metric)."""
    with Store(location, readonly=True) as store:
        df = store.records()
    return df[COLUMNS].sort_values(["model", "suite", "cell", "metric"]).reset_index(drop=True)
