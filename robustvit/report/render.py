"""The ViT-vs-CNN report: a self-contained HTML page (Jinja2, autoescaped) and a Markdown summary."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustvit.errors import UserError
from robustvit.report import figures, sections, summary
from robustvit.report.tables import html_table, markdown_table, md_escape
from robustvit.results.select import model_order

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.results import Results

TEMPLATE = "report.html.j2"
HTML_NAME = "index.html"
MARKDOWN_NAME = "summary.md"
RECORDS_NAME = "records.csv"
ORIGIN_NAME = ".robustvit-report.json"  # the store a report was written from


@dataclass
class Report:
    """Everything the page and the Markdown summary show, computed once from the results layer."""

    title: str
    source: str
    generated: str
    results: Results
    models: dict[str, str]
    groups: list[summary.GroupSummary]
    warnings: pd.DataFrame
    models_table: pd.DataFrame
    runs_table: pd.DataFrame | None
    sections: list[sections.Section] = field(default_factory=list)
    figures: list[figures.Figure] = field(default_factory=list)

    @property
    def selected(self) -> pd.DataFrame:
        return self.results.selected


def build_report(records: pd.DataFrame, *, runs: pd.DataFrame | None = None, title: str = "robustvit: ViT vs CNN",
                 source: str = "records", results: Results | None = None) -> Report:
    """Compute the report's tables and figures from records (each model's latest values per protocol).

    ``results`` (:func:`robustvit.results.analyse` of the same records, with their outcomes) gives the
    paired comparisons; without it, records are analysed without outcomes (intervals as stored, ties).

    Raises:
        UserError: when there are no records to report.
    """
    from robustvit.results import analyse

    res = results if results is not None else analyse(records)
    selected = res.selected
    if selected.empty:
        raise UserError("no records to report (run an evaluation first, or loosen the filters)")
    models = model_order(selected)
    style = figures.Style(models)
    groups = res.groups()
    return Report(
        title=title,
        source=source,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        results=res,
        models=models,
        groups=summary.group_summaries(res),
        warnings=summary.flag_warnings(selected),
        models_table=summary.models_table(selected, models),
        runs_table=summary.runs_table(runs, set(selected["run_id"].astype(str))),
        sections=[sections.build_section(rows, suite, style, models, protocol=str(rows["protocol_label"].iloc[0]))
                  for suite, _p, rows in groups],
        figures=summary.comparison_figures(res, style),
    )


def render_html(report: Report) -> str:
    """The page: Jinja2 with autoescape on (model names and paths are user-supplied), no scripts."""
    import jinja2

    from robustvit import __version__

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    families: dict[str, int] = {}
    for fam in report.models.values():
        families[fam] = families.get(fam, 0) + 1
    ec = summary.consistency_table(report.results)
    return env.get_template(TEMPLATE).render(
        title=report.title,
        version=__version__,
        generated=report.generated,
        source=report.source,
        n_records=len(report.selected),
        models=report.models,
        family_counts=list(families.items()),
        warnings=report.warnings.to_dict(orient="records"),
        groups=[{"title": g.title, "html": html_table(g.table, titles=g.titles)} for g in report.groups],
        comparison_figures=report.figures,
        consistency_html=html_table(ec) if not ec.empty else None,
        sections=report.sections,
        models_html=html_table(report.models_table),
        runs_html=html_table(report.runs_table) if report.runs_table is not None else None,
    )


def render_markdown(report: Report, html_name: str | None = HTML_NAME) -> str:
    """A Markdown summary of the same numbers (headline metrics, warnings, models)."""
    lines = [f"# {md_escape(report.title)}", ""]
    fams = ", ".join(f"{sum(1 for f in report.models.values() if f == fam)} {fam}"
                     for fam in dict.fromkeys(report.models.values()))
    lines += [f"{len(report.models)} models ({md_escape(fams)}), {len(report.selected)} records from "
              f"{md_escape(report.source)}; generated {report.generated}.", ""]
    if not report.warnings.empty:
        lines += [f"## ⚠ Sanity-check warnings ({len(report.warnings)})", ""]
        for w in report.warnings.itertuples():
            where = f"{w.suite}/{w.cell}" if w.cell else w.suite
            lines.append(f"- **{md_escape(w.model)}** ({md_escape(w.family)}): {md_escape(where)}: "
                         f"{md_escape(w.check)} (run {md_escape(w.run_id)})")
        lines.append("")
    lines += ["## ViT vs CNN (headline metrics, per protocol)", "", summary.VERDICT_NOTE, ""]
    for g in report.groups:
        lines += [f"### {md_escape(g.title)}", "", markdown_table(g.table), ""]
    ec = summary.consistency_table(report.results)
    if not ec.empty:
        lines += ["### Error consistency (Cohen's kappa over per-image correctness)", "", markdown_table(ec), ""]
    cols = ["model", "family", "params", "model_sha", "date", "suite_versions"]
    lines += ["## Models", "", markdown_table(report.models_table[cols]), ""]
    if html_name:
        lines += [f"Full report with figures and every metric: `{html_name}`.", ""]
    return "\n".join(lines)


def _origin(source: str) -> str:
    path = Path(source)
    return str(path.resolve()) if path.suffix in (".sqlite", ".db") or path.exists() else source


def _target(out: Path, source: str, *, force: bool, beside: bool) -> Path:
    """``out``, unless it holds a report written from another store: then refuse (or, with ``beside``,
    write next to it, in ``<out>-<store name>``), so no report silently replaces another store's."""
    marker = out / ORIGIN_NAME
    if force or not (out / HTML_NAME).exists() or not marker.exists():
        return out
    try:
        other = json.loads(marker.read_text(encoding="utf-8")).get("store")
    except (OSError, ValueError):
        other = None
    if other in (None, _origin(source)):
        return out
    if beside:
        return _target(out.with_name(f"{out.name}-{Path(source).stem}"), source, force=force, beside=False)
    raise UserError(f"{str(out)!r} holds a report of another store ({other}); pass --force to replace it, "
                    "or --out another folder")


def write_report(records: pd.DataFrame, out_dir: str | os.PathLike[str], *, runs: pd.DataFrame | None = None,
                 title: str = "robustvit: ViT vs CNN", source: str = "records",
                 results: Results | None = None, force: bool = False, beside: bool = False) -> tuple[Path, str]:
    """Write ``index.html``, ``summary.md`` and ``records.csv`` (the rows shown) into ``out_dir``.

    Args:
        records: Records in the schema of :mod:`robustvit.records` (e.g. ``Store(p, readonly=True).records()``).
        out_dir: Output folder (created).
        runs: Run manifests (``Store.runs()``) for the provenance table, optional.
        title: Page title.
        source: Where the records came from (shown on the page), e.g. the store path.
        results: The results layer's analysis of the records with their outcomes (see :func:`build_report`).
        force: Replace a report written from another store.
        beside: Instead of refusing to replace another store's report, write to ``<out_dir>-<store name>``.

    Returns:
        The HTML file's path and the Markdown summary text.
    """
    report = build_report(records, runs=runs, title=title, source=source, results=results)
    out = _target(Path(out_dir), source, force=force, beside=beside)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report folder {str(out)!r}: {exc.strerror}") from exc
    _atomic_write(out / ORIGIN_NAME, json.dumps({"store": _origin(source)}) + "\n")
    html = render_html(report)
    markdown = render_markdown(report)
    cols = [c for c in report.selected.columns if c not in ("order",)]
    _atomic_write(out / RECORDS_NAME, report.selected[cols].to_csv(index=False))
    _atomic_write(out / MARKDOWN_NAME, markdown)
    _atomic_write(out / HTML_NAME, html)
    return out / HTML_NAME, markdown


def write_report_from_store(store_path: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str], *,
                            title: str = "robustvit: ViT vs CNN", force: bool = False,
                            **filters: Any) -> tuple[Path, str]:
    """Read a store (read-only) with record filters and write the report; see :func:`write_report`."""
    from robustvit.results import OutcomeSource, analyse
    from robustvit.store import Store

    with Store(store_path, readonly=True) as store:
        records = store.records(**filters)
        runs = store.runs()
        source = str(store.path)
        if records.empty:
            raise UserError("no records to report (run an evaluation first, or loosen the filters)")
        results = analyse(records, OutcomeSource.from_store(store), store.protocols())
    return write_report(records, out_dir, runs=runs, source=source, title=title, results=results, force=force)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
