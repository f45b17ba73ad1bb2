"""``robustvit store``: look into a results store and copy one store into another.

* ``robustvit store info [--store X]``: rows per table (runs, records, cells, outcomes, protocols,
  partial state) of a SQLite file or a PostgreSQL database.
* ``robustvit store migrate SOURCE DEST``: copy every table of SOURCE into DEST, e.g. a SQLite file
  into a team's PostgreSQL database (``postgresql://user@host:port/database``); running it again
  copies nothing twice.
"""

from __future__ import annotations

import argparse

from robustvit.commands.common import add_store_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="store_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    info = sub.add_parser("info", help="rows per table of a store", description="rows per table of a store")
    add_store_argument(info)
    info.add_argument("--format", choices=("table", "json"), default="table")
    migrate = sub.add_parser(
        "migrate", help="copy every table of one store into another (idempotent)",
        description="Copy runs, protocols, records with their per-image outcomes (and optionally partial state) "
                    "from SOURCE into DEST; rows DEST already has are kept, so a second run copies nothing.")
    migrate.add_argument("source", help="store to read: a SQLite file or postgresql://user@host:port/database")
    migrate.add_argument("dest", help="store to write (created when it is a new SQLite file)")
    migrate.add_argument("--partial", action="store_true", help="also copy the resumable state of unfinished cells")
    migrate.add_argument("--chunk", type=int, default=500, help="rows per transaction (default 500; records go by whole cells, a quarter as many cells)")


def run(args: argparse.Namespace) -> int:
    import sys

    from robustvit.errors import UserError
    from robustvit.store import Store
    from robustvit.store_copy import copy_store, table_counts

    if args.store_command == "info":
        with Store(args.store, readonly=True) as store:
            counts = table_counts(store)
        if args.format == "json":
            import json

            print(json.dumps({"store": str(store.path), "backend": store.backend, "counts": counts}))
        else:
            print(f"store {store.path} ({store.backend})")
            for table, n in counts.items():
                print(f"  {table:<10} {n:>10}")
        return 0
    if args.chunk < 1:
        raise UserError(f"--chunk must be a positive number of rows, got {args.chunk}")
    with Store(args.source, readonly=True) as source, Store(args.dest) as dest:
        print(f"copying {source.path} ({source.backend}) into {dest.path} ({dest.backend})", file=sys.stderr)
        copy_store(source, dest, partial=args.partial, chunk=args.chunk, on_table=lambda r: print(r, flush=True))
    return 0
