"""``robustvit results``: stored records, filtered, with a ViT-vs-CNN summary by family."""

from __future__ import annotations

import argparse

from robustvit.commands.common import add_store_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_argument(parser)
    parser.add_argument("--model", action="append", help="model name (repeatable)")
    parser.add_argument("--suite", action="append", help="suite (repeatable)")
    parser.add_argument("--family", action="append", choices=("vit", "cnn", "hybrid"))
    parser.add_argument("--metric", action="append", help="metric name (repeatable)")
    parser.add_argument("--run", action="append", dest="run_id", help="run id (repeatable)")
    parser.add_argument("--cell", help="fnmatch pattern on cells, e.g. 'gaussian_noise/*'")
    parser.add_argument("--records", action="store_true", help="print the raw records instead of the summary")
    parser.add_argument("--all", action="store_true", help="summary of every row, not just headline metrics")
    parser.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table")


def run(args: argparse.Namespace) -> int:
    import fnmatch

    from robustvit.errors import UserError
    from robustvit.store import Store
    from robustvit.summary import format_table, latest, summary_tables

    with Store(args.store, readonly=True) as store:
        df = store.records(model=args.model, suite=args.suite, family=args.family, metric=args.metric,
                           run_id=args.run_id)
    if args.cell:
        df = df[df["cell"].map(lambda c: fnmatch.fnmatchcase(c, args.cell))]
    if df.empty:
        raise UserError("no stored records match these filters")
    if args.records:
        rows = latest(df).drop(columns=["config_key"])
        if args.format == "csv":
            print(rows.to_csv(index=False), end="")
        elif args.format == "json":
            print(rows.to_json(orient="records", indent=2))
        elif args.format == "markdown":
            print(rows.to_markdown(index=False) if hasattr(rows, "to_markdown") else rows.to_string(index=False))
        else:
            print(rows.to_string(index=False))
        return 0
    for suite, table in summary_tables(df, headline=not args.all):
        if args.format in ("table", "markdown"):
            print(f"\n## {suite}\n")
        print(format_table(table, args.format))
    return 0
