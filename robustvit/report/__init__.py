"""Reports, leaderboards and their record helpers: pure functions of a records DataFrame.

Nothing in this package imports torch; it reads the record schema of :mod:`robustvit.records`
(``Store(path, readonly=True).records(**filters)``) and works for any suite, known or not.

- :func:`write_report` writes the ViT-vs-CNN HTML page, a Markdown summary and the records shown.
- :func:`leaderboard` ranks models on stored metrics; :func:`format_leaderboard` renders it.
"""

from __future__ import annotations

from robustvit.report.data import latest, load_records, load_runs, match_paths, with_paths
from robustvit.report.leaderboard import FORMATS, format_leaderboard, leaderboard
from robustvit.report.render import build_report, render_html, render_markdown, write_report, write_report_from_store

__all__ = [
    "FORMATS",
    "build_report",
    "format_leaderboard",
    "latest",
    "leaderboard",
    "load_records",
    "load_runs",
    "match_paths",
    "render_html",
    "render_markdown",
    "with_paths",
    "write_report",
    "write_report_from_store",
]
