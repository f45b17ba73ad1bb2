"""Copy one results store into another (``robustvit store migrate``) and count what a store holds.

A copy is idempotent: rows the destination already has (by primary key; records by cell) are left
as they are, so copying twice copies nothing the second time, and an interrupted copy is finished by
running it again. Records travel cell by cell with their outcomes, like :meth:`Store.write_cell
<robustvit.store.Store.write_cell>`: one transaction per chunk of cells, taking the same per-cell
locks as writers, so a copy into a store that a run is writing at the same time never doubles a cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from robustvit.errors import UserError
from robustvit.records import RECORD_COLUMNS
from robustvit.store import _WHERE_CELL, CELL_KEY, RUN_COLUMNS, Store

#: copied tables: (name, columns, primary key, blob columns); records are copied by cell
KEYED_TABLES = {
    "runs": (RUN_COLUMNS, ("run_id",), ()),
    "protocols": (("protocol", "kind", "spec"), ("protocol",), ()),
    "outcomes": ((*CELL_KEY, "protocol", "data"), CELL_KEY, ("data",)),
    "partial": (("cache_key", "cell", "state"), ("cache_key", "cell"), ("state",)),
}
COUNTED = ("runs", "records", "cells", "outcomes", "protocols", "partial")


@dataclass
class TableCopy:
    """What a copy did to one table: rows copied and rows the destination already had."""

    table: str
    copied: int = 0
    present: int = 0
    cells: int = 0

    def __str__(self) -> str:
        cells = f" ({self.cells} cells)" if self.table == "records" else ""
        return f"{self.table}: {self.copied} copied{cells}, {self.present} already there"


def table_counts(store: Store) -> dict[str, int]:
    """Rows per table (and ``cells``: distinct stored cells); 0 for a table an older store lacks."""
    tables = store._tables()
    counts = {}
    for name in COUNTED:
        if name == "cells":
            sql = f"SELECT count(*) FROM (SELECT DISTINCT {', '.join(CELL_KEY)} FROM records) AS c"
        else:
            sql = f"SELECT count(*) FROM {name}"
        counts[name] = int(store._execute(sql).fetchone()[0]) if (name == "cells" or name in tables) else 0
    return counts


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _same_store(a: Store, b: Store) -> bool:
    if a.backend != b.backend:
        return False
    if a.backend == "sqlite":
        return Path(a.path).resolve() == Path(b.path).resolve()
    return str(a.path) == str(b.path)


def copy_store(source: Store, dest: Store, *, partial: bool = False, chunk: int = 500,
               on_table: Callable[[TableCopy], None] | None = None) -> list[TableCopy]:
    """Copy every table of ``source`` into ``dest`` (partial state only with ``partial=True``).

    Args:
        source: The store to read (may be an older SQLite store; missing columns copy as NULL).
        dest: The store to write, opened for writing.
        partial: Also copy the resumable partial state of unfinished cells.
        chunk: Rows (records: cells) per transaction.
        on_table: Called with each table's counts as soon as it is done.

    Returns:
        One :class:`TableCopy` per table, in the order copied.
    """
    if _same_store(source, dest):
        raise UserError(f"source and destination are the same store ({source.path})")
    done: list[TableCopy] = []

    def report(result: TableCopy) -> None:
        done.append(result)
        if on_table is not None:
            on_table(result)

    report(_copy_keyed(source, dest, "runs", chunk, order="created_at, rowid"))
    report(_copy_keyed(source, dest, "protocols", chunk))
    records, outcomes = _copy_cells(source, dest, max(1, chunk // 4))
    report(records)
    rest = _copy_keyed(source, dest, "outcomes", chunk)  # outcomes of cells whose records were there already
    outcomes.present = rest.present - outcomes.copied  # rest found those the records pass copied
    outcomes.copied += rest.copied
    report(outcomes)
    if partial:
        report(_copy_keyed(source, dest, "partial", chunk))
    return done


def _copy_keyed(source: Store, dest: Store, table: str, chunk: int, order: str | None = None) -> TableCopy:
    """Copy the rows of a table with a primary key that the destination lacks."""
    columns, keys, blobs = KEYED_TABLES[table]
    result = TableCopy(table)
    if table not in source._tables():
        return result
    key_list = ", ".join(keys)
    have = {tuple(row) for row in dest._execute(f"SELECT {key_list} FROM {table}").fetchall()}
    wanted = [tuple(row) for row in source._execute(f"SELECT {key_list} FROM {table} ORDER BY {order or key_list}")]
    missing = [k for k in wanted if k not in have]
    result.present = len(wanted) - len(missing)
    select = f"SELECT {', '.join(columns)} FROM {table} WHERE " + " AND ".join(f"{k}=?" for k in keys)
    insert = dest._d.insert(table, columns, "ignore", keys)
    for part in _chunks(missing, chunk):
        rows = [_row(dest, columns, blobs, source._execute(select, k).fetchone()) for k in part]
        with dest._transaction():
            copied = dest._executemany(insert, rows)
        result.copied += copied
        result.present += len(rows) - copied  # written by someone else meanwhile
    return result


def _row(dest: Store, columns: Sequence[str], blobs: Sequence[str], row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(dest._d.binary(bytes(v)) if c in blobs and v is not None else v for c, v in zip(columns, row))


def _copy_cells(source: Store, dest: Store, chunk: int) -> tuple[TableCopy, TableCopy]:
    """Copy the records of every cell the destination lacks, with their outcomes, chunk by chunk."""
    records, outcomes = TableCopy("records"), TableCopy("outcomes")
    keys = ", ".join(CELL_KEY)
    have = {tuple(r) for r in dest._execute(f"SELECT DISTINCT {keys} FROM records").fetchall()}
    cells = [(tuple(r[:5]), int(r[5])) for r in source._execute(
        f"SELECT {keys}, count(*) FROM records GROUP BY {keys} ORDER BY min(rowid)").fetchall()]
    records.present = sum(n for cell, n in cells if cell in have)
    missing = [cell for cell, _n in cells if cell not in have]
    with_outcomes = "outcomes" in source._tables()
    insert_records = dest._d.insert("records", RECORD_COLUMNS)
    insert_outcomes = dest._d.insert("outcomes", (*CELL_KEY, "protocol", "data"), "ignore", CELL_KEY)
    select = f"SELECT {source.record_select()} FROM records WHERE {_WHERE_CELL} ORDER BY rowid"
    for part in _chunks(missing, chunk):
        rows = {cell: source._execute(select, cell).fetchall() for cell in part}
        blobs = {}
        if with_outcomes:
            for cell in part:
                found = source._execute(f"SELECT protocol, data FROM outcomes WHERE {_WHERE_CELL}", cell).fetchone()
                if found is not None:
                    blobs[cell] = (*cell, found[0], dest._d.binary(bytes(found[1])))
        with dest._transaction():
            dest._d.lock(dest._conn, ["|".join(cell) for cell in part])  # the tokens of Store.write_cell
            stored: dict[tuple[str, ...], set[str]] = {}
            for cell in part:  # again, under the locks: a writer may have stored some meanwhile
                if cell[:4] not in stored:
                    stored[cell[:4]] = dest.done_cells(dict(zip(CELL_KEY[:4], cell[:4])))
            new = [cell for cell in part if cell[4] not in stored[cell[:4]]]
            dest._executemany(insert_records, [tuple(r) for cell in new for r in rows[cell]])
            copied = dest._executemany(insert_outcomes, [blobs[cell] for cell in new if cell in blobs])
        records.cells += len(new)
        records.copied += sum(len(rows[cell]) for cell in new)
        records.present += sum(len(rows[cell]) for cell in part if cell not in new)
        outcomes.copied += copied
    return records, outcomes
