"""The results layer (torch-free): what ``results``, ``report``, ``leaderboard`` and ``gate`` all read.

One place for the rules that make numbers comparable:

* metric paths and directions, the one "latest record" rule and the one headline list
  (:mod:`robustvit.results.select`);
* protocols: records of one protocol only are ever combined; each protocol is a labelled group;
* intervals: stored with every record (:mod:`robustvit.results.bootstrap`);
* paired ViT-vs-CNN comparisons with verdicts, and error consistency (:mod:`robustvit.results.compare`);
* the machine-readable outputs (:mod:`robustvit.results.export`).

>>> res = load_results("robustvit-results.sqlite")          # doctest: +SKIP
>>> res.comparisons[["metric", "diff", "ci_low", "ci_high", "verdict"]]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from robustvit.results.compare import OutcomeSource, compare_families, consistency
from robustvit.results.select import (
    FAMILIES,
    headline_paths,
    latest,
    model_order,
    protocol_labels,
    suite_order,
    with_paths,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FAMILIES",
    "OutcomeSource",
    "Results",
    "analyse",
    "headline_paths",
    "latest",
    "load_results",
    "model_order",
    "protocol_labels",
    "suite_order",
    "with_paths",
]


@dataclass
class Results:
    """Current records with their protocol labels, the headline paths, comparisons and error consistency.

    Attributes:
        selected: One current row per (model, protocol, metric path), with ``path`` and ``protocol_label``.
        headline: The headline metric paths, per suite in suite order (all of them: no cap).
        comparisons: ViT-vs-CNN rows (:data:`robustvit.results.compare.COMPARISON_COLUMNS` plus
            ``protocol_label`` and ``suite``) for the compared paths.
        consistency: Error consistency of every ViT-CNN pair per protocol.
        specs: Protocol id -> description, from the store.
    """

    selected: pd.DataFrame
    headline: list[str]
    comparisons: pd.DataFrame
    consistency: pd.DataFrame
    specs: dict[str, dict[str, Any]]

    @property
    def labels(self) -> dict[str, str]:
        return dict(zip(self.selected["protocol"], self.selected["protocol_label"], strict=True))

    def groups(self) -> list[tuple[str, str, pd.DataFrame]]:
        """``(suite, protocol, rows)`` per protocol group, suites in suite order, bigger groups first."""
        out = []
        for suite in suite_order(self.selected):
            rows = self.selected[self.selected["suite"] == suite]
            sizes = rows.groupby("protocol", sort=False)["model"].nunique().sort_values(ascending=False, kind="stable")
            out += [(suite, p, rows[rows["protocol"] == p]) for p in sizes.index]
        return out


def analyse(records: pd.DataFrame, source: OutcomeSource | None = None,
            specs: Mapping[str, Mapping[str, Any]] | None = None, *, compare: str = "headline",
            all_runs: bool = False) -> Results:
    """Select current records, label protocols, and compare families on the headline (or ``"all"``) paths."""
    source = source or OutcomeSource.empty()
    selected = latest(records, all_runs=all_runs)
    specs = {k: dict(v) for k, v in (specs or {}).items()}
    labels = protocol_labels(selected, specs) if not selected.empty else {}
    selected = selected.assign(protocol_label=selected["protocol"].map(labels))
    headline: list[str] = []
    for suite in suite_order(selected) if not selected.empty else []:
        rows = selected[selected["suite"] == suite]
        headline += [p for p in headline_paths(rows) if p not in headline]
    paths = None if compare == "all" else headline
    comparisons = compare_families(selected, source, paths)
    comparisons.insert(2, "protocol_label", comparisons["protocol"].map(labels))
    comparisons.insert(1, "suite", comparisons["metric"].str.split("/").str[0])
    ec = consistency(selected, source)
    ec.insert(1, "protocol_label", ec["protocol"].map(labels))
    return Results(selected, headline, comparisons, ec, specs)


def load_results(store_path: str | None = None, *, compare: str = "headline", all_runs: bool = False,
                 **filters: str | Iterable[str] | None) -> Results:
    """:func:`analyse` the records of a store (opened read-only; filters on record columns)."""
    from robustvit.store import Store

    with Store(store_path, readonly=True) as store:
        records = store.records(**filters)
        return analyse(records, OutcomeSource.from_store(store), store.protocols(), compare=compare, all_runs=all_runs)
