"""``robustvit report``: the ViT-vs-CNN HTML page and Markdown summary from stored records."""

from __future__ import annotations

import argparse

from robustvit.commands.common import add_store_argument

DEFAULT_OUT = "reports/latest"


def add_record_filters(parser: argparse.ArgumentParser) -> None:
    """``--model/--family/--suite/--run/--dataset`` filters on stored records (repeatable)."""
    parser.add_argument("--model", action="append", metavar="NAME", help="only these models (repeatable)")
    parser.add_argument("--family", action="append", choices=("vit", "cnn", "hybrid"), help="only these families")
    parser.add_argument("--suite", action="append", metavar="NAME", help="only these suites (repeatable)")
    parser.add_argument("--run", action="append", metavar="ID", dest="run_id", help="only records of these runs")
    parser.add_argument("--dataset", action="append", metavar="SPEC", help="only records on these datasets")


def record_filters(args: argparse.Namespace) -> dict:
    return {"model": args.model, "family": args.family, "suite": args.suite, "run_id": args.run_id,
            "dataset": args.dataset}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_argument(parser)
    add_record_filters(parser)
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"output folder for index.html, summary.md and records.csv (default {DEFAULT_OUT})")
    parser.add_argument("--title", default="robustvit: ViT vs CNN", help="page title")
    parser.add_argument("--quiet", action="store_true", help="print only the report's path")
    parser.add_argument("--force", action="store_true", help="replace a report written there from another store")


def run(args: argparse.Namespace) -> int:
    from robustvit.errors import UserError

    try:
        from robustvit.report import write_report_from_store
    except ImportError as exc:  # the optional report extra (jinja2, matplotlib)
        if exc.name not in ("jinja2", "markupsafe", "matplotlib"):
            raise
        raise UserError(f"robustvit report needs the report extra ({exc.name} is missing): "
                        "pip install 'robustvit[report]'") from None

    html_path, markdown = write_report_from_store(args.store, args.out, title=args.title, force=args.force,
                                                  **record_filters(args))
    print(f"report written to {html_path}")
    if not args.quiet:
        print()
        print(markdown)
    return 0
