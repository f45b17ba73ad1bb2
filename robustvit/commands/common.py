"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--store PATH|URL`` (default ``$ROBUSTVIT_STORE`` or ``./robustvit-results.sqlite``)."""
    parser.add_argument(
        "--store",
        default=None,
        help="results store: a SQLite file or postgresql://user@host:port/db; "
             "default $ROBUSTVIT_STORE or ./robustvit-results.sqlite",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``eval`` and ``run`` (on ``run`` they override the file's ``[run]``)."""
    add_store_argument(parser)
    parser.add_argument("--data", help="evaluation dataset: a registered name (digits) or an image folder")
    parser.add_argument("--skip-corrupt", action="store_true", dest="skip_corrupt",
                        help="skip (and count) unreadable images in image folders instead of failing")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto (CUDA when present)")
    parser.add_argument("--batch-size", type=int, dest="batch_size")
    parser.add_argument("--limit", type=int, help="evaluate a seeded subset of this many images")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--amp", choices=("bf16", "fp16"), help="autocast inference to this dtype")
    parser.add_argument("--workers", type=int, help="DataLoader workers for image folders")
    parser.add_argument("--executor", choices=("local", "ray"),
                        help="where cells run: local (this process, the default) or ray (a Ray cluster)")
    parser.add_argument("--ray-address", dest="ray_address", metavar="ADDR",
                        help="Ray cluster to join (auto, host:port, ray://host:port); default: start one here")
    parser.add_argument("--ray-workers", dest="ray_workers", type=int, metavar="N",
                        help="Ray worker processes (default: one per GPU, else one per CPU of the cluster)")
    parser.add_argument("--force", action="store_true", help="recompute cells already stored")
    parser.add_argument("--quiet", action="store_true", help="print only the final tables")
    parser.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table",
                        help="format of the printed tables")


def execute_and_print(cfg, args: argparse.Namespace) -> int:
    """Run a validated config, printing progress to stderr and the ViT-vs-CNN tables to stdout."""
    import sys

    from robustvit.runner import execute
    from robustvit.store import Store

    def on_event(e) -> None:
        if args.quiet:
            return
        if e.kind == "model":
            print(f"[{e.model}] loaded ({e.detail})", file=sys.stderr)
        elif e.kind == "plan":
            print(f"[{e.model}] {e.suite}: {e.detail}", file=sys.stderr)
        elif e.kind == "skipped":
            print(f"[{e.model}] {e.suite}: {e.detail}", file=sys.stderr)
        elif e.kind == "cell" and e.seconds >= 5:  # only the long cells, to keep the log short
            print(f"[{e.model}] {e.suite} {e.cell or '(all)'} done in {e.seconds:.1f}s", file=sys.stderr)
        elif e.kind == "suite":
            print(f"[{e.model}] {e.suite}: {e.detail}", file=sys.stderr)
        elif e.kind == "cluster":
            print(f"ray: {e.detail}", file=sys.stderr)

    import pandas as pd

    from robustvit.results import OutcomeSource, analyse

    store = Store(args.store)
    fresh = store.is_empty()
    try:
        summary = execute(cfg, store, force=args.force, on_event=on_event)
        frames = [store.cell_records(key) for key in summary.keys]
        runs = store.runs()
        df = pd.concat(frames, ignore_index=True)
        res = analyse(df, OutcomeSource.from_store(store), store.protocols())
    except BaseException:
        empty = store.is_empty()
        store.close()
        if fresh and empty:  # nothing was stored: leave no file behind
            store.path.unlink(missing_ok=True)
        raise
    store.close()

    reuse = (f"reused {summary.cached} stored cells (no recomputation)" if summary.cached else "nothing reused")
    print(f"run {summary.run_id or '(nothing new)'}: computed {summary.computed} cells, {reuse}; {summary.seconds:.1f}s; "
          f"store {store.path}", file=sys.stderr)
    print_results(res, args.format)
    if cfg.report:
        from robustvit.report import write_report

        html_path, markdown = write_report(df, cfg.report["out"], runs=runs, source=str(store.path),
                                           title=cfg.report.get("title", "robustvit: ViT vs CNN"), results=res,
                                           beside=True)
        print(f"\nreport written to {html_path}\n\n{markdown}")
    return 0


def print_results(res, fmt: str) -> None:
    """The ViT-vs-CNN summary (table, markdown), one JSON document (json) or one long table (csv)."""
    from robustvit.results.export import csv_table, json_document, summary_text

    if fmt == "json":
        print(json_document(res), end="")
    elif fmt == "csv":
        print(csv_table(res), end="")
    else:
        print()
        print(summary_text(res, fmt))
