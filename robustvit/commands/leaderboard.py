"""``robustvit leaderboard``: rank models on stored metrics (md, csv, html or json)."""

from __future__ import annotations

import argparse

from robustvit.commands.common import add_store_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_argument(parser)
    parser.add_argument("--suite", metavar="NAME", help="suite the metrics belong to (clean, corruption, ...)")
    parser.add_argument("--metric", action="append", required=True, metavar="M",
                        help="metric relative to --suite (mce, pgd-linf/eps=4/255/robust_acc) or a full path "
                             "(corruption/mce); * matches one path segment; repeatable, the first one ranks")
    parser.add_argument("--family", choices=("vit", "cnn", "hybrid"), help="only models of this family")
    parser.add_argument("--model", action="append", metavar="NAME", help="only these models (repeatable)")
    parser.add_argument("--dataset", action="append", metavar="SPEC", help="only records on these datasets")
    parser.add_argument("--all-runs", action="store_true", help="one row per model and run (default: latest values)")
    parser.add_argument("--protocol", metavar="ID", help="rank within this protocol (default: the ranking metric's "
                        "protocol with the most models; the others are listed under the table)")
    parser.add_argument("--format", choices=("md", "csv", "html", "json"), default="md", help="output format")
    parser.add_argument("--out", metavar="FILE", help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robustvit.errors import UserError

    try:
        from robustvit.report import format_leaderboard, leaderboard
    except ImportError as exc:  # the optional report extra (jinja2, matplotlib)
        if exc.name not in ("jinja2", "markupsafe", "matplotlib"):
            raise
        raise UserError(f"robustvit leaderboard needs the report extra ({exc.name} is missing): "
                        "pip install 'robustvit[report]'") from None

    from robustvit.store import Store

    with Store(args.store, readonly=True) as store:
        records = store.records(model=args.model, dataset=args.dataset)
        specs = store.protocols()
    if records.empty:
        raise UserError("no records in the store match (run an evaluation first, or loosen --model/--dataset)")
    board = leaderboard(records, args.metric, suite=args.suite, family=args.family, all_runs=args.all_runs,
                        protocol=args.protocol, specs=specs)
    text = format_leaderboard(board, args.format)
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {str(out)!r}: {exc.strerror}") from exc
        print(f"leaderboard written to {out}")
    else:
        print(text, end="")
    return 0
