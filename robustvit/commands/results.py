"""``robustvit results``: stored records, filtered, with the ViT-vs-CNN comparison per protocol."""

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
    parser.add_argument("--protocol", action="append", help="protocol id (repeatable; see the group titles)")
    parser.add_argument("--cell", help="fnmatch pattern on cells, e.g. 'gaussian_noise/*'")
    parser.add_argument("--records", action="store_true",
                        help="print the current records (with intervals and n) instead of the summary")
    parser.add_argument("--all", action="store_true", help="compare every metric path, not just the headline ones")
    parser.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table",
                        help="table / markdown: the summary; json: one document {schema, records, comparisons, "
                             "error_consistency}; csv: one long table of records")


def run(args: argparse.Namespace) -> int:
    import fnmatch

    from robustvit.commands.common import print_results
    from robustvit.errors import UserError
    from robustvit.results import OutcomeSource, analyse
    from robustvit.results.export import records_table, render
    from robustvit.store import Store

    with Store(args.store, readonly=True) as store:
        df = store.records(model=args.model, suite=args.suite, family=args.family, metric=args.metric,
                           run_id=args.run_id, protocol=args.protocol)
        if args.cell:
            df = df[df["cell"].map(lambda c: fnmatch.fnmatchcase(c, args.cell))]
        if df.empty:
            raise UserError("no stored records match these filters")
        res = analyse(df, OutcomeSource.from_store(store), store.protocols(), compare="all" if args.all else "headline")
    if args.records and args.format in ("table", "markdown"):
        print(render(records_table(res).drop(columns=["protocol_label"]), args.format))
        return 0
    if args.all and args.format in ("table", "markdown"):
        from robustvit.results.export import summary_text

        print(summary_text(res, args.format, paths=list(dict.fromkeys(res.selected["path"]))))
        return 0
    print_results(res, args.format)
    return 0
