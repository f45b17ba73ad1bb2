"""Metric paths: patterns, directions, did-you-mean errors, wide tables (no torch, no report extra)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from robustvit.errors import UserError
from robustvit.results.select import FAMILIES

if TYPE_CHECKING:
    import pandas as pd


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
