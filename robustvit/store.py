"""The results store: records, per-image outcomes, protocols and run manifests in SQLite or PostgreSQL.

This is the only module that writes results. Each finished cell (its records, its per-image
outcomes blob and its protocol row) is written in one transaction, so an interrupted run never
leaves a half-written cell; a resumed run asks :meth:`Store.done_cells` which cells to skip. Writers
of one store may run in many processes or on many machines (PostgreSQL): a cell written by two of
them at once ends as exactly one copy. A store written by an older version opens as it is: missing
columns are added (``protocol``, ``ci_low``, ``ci_high``; NULL for old rows, or read as NULL when the
store is opened read-only or cannot be written) and the new tables are created. Long cells may keep
resumable partial state (``partial`` table) keyed by cell and batch; it is deleted when the cell is
written.

Where: a SQLite file (default ``./robustvit-results.sqlite`` in the working directory) or a
PostgreSQL URL ``postgresql://user@host:port/database`` (see :mod:`robustvit.store_sql`, which holds
everything the two backends do differently); the environment variable ``ROBUSTVIT_STORE`` or the
CLI's ``--store`` override the default. ``robustvit store migrate`` copies one store into another.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustvit.errors import UserError
from robustvit.records import RECORD_COLUMNS, CellResult
from robustvit.store_sql import TABLES, Dialect, open_location

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.results.outcomes import Outcomes

DEFAULT_STORE = "robustvit-results.sqlite"
STORE_ENV = "ROBUSTVIT_STORE"

#: columns added after the first release: (name, SQL type); old stores gain them on open
_ADDED_COLUMNS = (("protocol", "TEXT"), ("ci_low", "REAL"), ("ci_high", "REAL"))
RUN_COLUMNS = ("run_id", "created_at", "config", "versions", "device", "seed", "git_commit")
#: the columns that identify a cell: the cache key of its model, suite and config, and the cell
CELL_KEY = ("model_sha", "suite", "suite_version", "config_key", "cell")
_WHERE_CELL = " AND ".join(f"{c}=?" for c in CELL_KEY)


def default_store_location() -> str:
    """``$ROBUSTVIT_STORE`` if set (a file or a URL), else ``./robustvit-results.sqlite``."""
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def default_store_path() -> Path:
    """The default store as a path (a SQLite store; see :func:`default_store_location` for URLs)."""
    return Path(default_store_location())


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _frame(cursor: Any) -> pd.DataFrame:
    """The rows of an executed query as a DataFrame (what ``pandas.read_sql_query`` builds)."""
    import pandas as pd

    rows = cursor.fetchall()
    return pd.DataFrame.from_records(rows, columns=[d[0] for d in cursor.description], coerce_float=True)


class Store:
    """Records and run manifests in a SQLite file or a PostgreSQL database.

    Args:
        path: A SQLite file (created, with its folder, on first write), ``sqlite:///path``, or a
            ``postgresql://user@host:port/database`` URL; default :func:`default_store_location`.
        readonly: Open an existing store for reading only; a missing store is a user error.

    Attributes:
        path: The SQLite file as a :class:`~pathlib.Path`, or the URL without its password.
        backend: ``"sqlite"`` or ``"postgresql"``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, readonly: bool = False) -> None:
        location = os.fspath(path) if path is not None else default_store_location()
        self.readonly = readonly
        self._known_tables: set[str] | None = None
        dialect, conn, self.path = open_location(str(location), readonly)
        self._d: Dialect = dialect
        self.backend = dialect.name
        shown = str(self.path)
        if conn is None:  # SQLite: the file is opened here
            if readonly and not Path(self.path).exists():
                raise UserError(f"results store {shown!r} does not exist (run an evaluation first, or pass --store)")
            if not readonly:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = dialect.connect(Path(self.path))
            except dialect.errors as exc:
                raise UserError(f"cannot open results store {shown!r}: {exc}") from None
        self._conn = conn
        try:
            if readonly and self.backend != "sqlite" and "records" not in self._tables():
                raise UserError(f"results store {shown!r} holds no robustvit results yet (run an evaluation first, "
                                "or pass --store)")
            if not readonly:
                self._ensure_schema()
            self._execute("SELECT count(*) FROM records").fetchone()
            self._columns = self._d.columns(conn, "records")
        except dialect.errors as exc:
            self._conn.close()
            raise UserError(f"{shown!r} is not a robustvit results store: {exc}") from None
        except BaseException:
            self._conn.close()
            raise

    # -- SQL helpers (also used by robustvit.store_copy) -------------------------------------------
    def _execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._conn.execute(self._d.sql(sql), tuple(args))

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` for each row; the number of rows it changed."""
        if not rows:
            return 0
        cur = self._conn.cursor()
        try:
            cur.executemany(self._d.sql(sql), rows)
            return max(cur.rowcount, 0)
        finally:
            cur.close()

    def _transaction(self) -> Any:
        return self._d.transaction(self._conn)

    def _ensure_schema(self) -> None:
        """Create the tables an empty store lacks and add the columns an older store lacks."""
        if set(TABLES) <= self._tables() and {c for c, _ in _ADDED_COLUMNS} <= self._d.columns(self._conn, "records"):
            return
        try:
            with self._transaction():
                self._d.lock(self._conn, ["robustvit-schema"])  # many processes may open a new store at once
                for statement in self._d.schema():
                    self._execute(statement)
                columns = self._d.columns(self._conn, "records")
                for name, sql_type in _ADDED_COLUMNS:
                    if name not in columns:
                        self._execute(f"ALTER TABLE records ADD COLUMN {name} {self._d.column_type(sql_type)}")
        except self._d.readonly_errors as exc:  # a store we may not write: read what is there
            self._known_tables = None
            if "records" not in self._tables():
                raise UserError(f"cannot create the results tables in {str(self.path)!r}: {exc}") from None
        self._known_tables = None

    def _tables(self) -> set[str]:
        if self._known_tables is None or not {"outcomes", "protocols"} <= self._known_tables:
            self._known_tables = self._d.tables(self._conn)
        return self._known_tables

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_empty(self) -> bool:
        """No records and no runs stored."""
        return not any(self._execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in ("records", "runs"))

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, config: Mapping[str, Any], versions: Mapping[str, str], device: str, seed: int,
                  git_commit: str | None) -> str:
        """Write a run manifest and return its new run id."""
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with self._transaction():
            self._execute(self._d.insert("runs", RUN_COLUMNS),
                          (run_id, now_iso(), json.dumps(config, sort_keys=True, default=str),
                           json.dumps(dict(versions), sort_keys=True), device, int(seed), git_commit))
        return run_id

    def runs(self) -> pd.DataFrame:
        """The run manifests, oldest first."""
        return _frame(self._execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY created_at, rowid"))

    # -- records -----------------------------------------------------------------------------
    def write_cell(self, run_id: str, key: Mapping[str, Any], result: CellResult) -> None:
        """Write all metrics of a finished cell in one transaction (and drop its partial state).

        ``key`` holds the record columns that do not vary within a cell: model, model_sha, family,
        params, suite, kind (defaults to suite), suite_version, config_key, dataset, protocol, and
        optionally ``protocol_spec`` (the protocol's description, a JSON-able dict). The cell's
        outcomes (``result.outcomes``), if any, are written in the same transaction. A cell written
        again (or by another writer at the same time) replaces the stored one whole.
        """
        from robustvit.results.outcomes import encode

        created = now_iso()
        kind = key.get("kind") or key["suite"]
        protocol = key.get("protocol")
        rows = [
            (run_id, key["model"], key["model_sha"], key["family"], int(key["params"]), key["suite"], kind,
             key["suite_version"], key["config_key"], protocol, key["dataset"], result.cell, m.metric, m.value,
             m.ci_low, m.ci_high, m.n, int(m.higher_is_better), created)
            for m in result.metrics
        ]
        where = (key["model_sha"], key["suite"], key["suite_version"], key["config_key"], result.cell)
        blob = self._d.binary(encode(result.outcomes)) if result.outcomes else None
        with self._transaction():  # one transaction: the whole cell or nothing
            self._d.lock(self._conn, [self.cache_key(key) + "|" + result.cell])
            self._execute(f"DELETE FROM records WHERE {_WHERE_CELL}", where)
            self._executemany(self._d.insert("records", RECORD_COLUMNS), rows)
            self._execute(f"DELETE FROM outcomes WHERE {_WHERE_CELL}", where)
            if blob is not None:
                self._execute(self._d.insert("outcomes", (*CELL_KEY, "protocol", "data")), (*where, protocol, blob))
            if protocol and key.get("protocol_spec") is not None:
                self._execute(self._d.insert("protocols", ("protocol", "kind", "spec"), "ignore"),
                              (protocol, kind, json.dumps(key["protocol_spec"], sort_keys=True, default=str)))
            self._execute("DELETE FROM partial WHERE cache_key=? AND cell=?", (self.cache_key(key), result.cell))

    def done_cells(self, key: Mapping[str, Any]) -> set[str]:
        """Cells already stored for this model checkpoint, suite version and config."""
        cur = self._execute(
            "SELECT DISTINCT cell FROM records WHERE model_sha=? AND suite=? AND suite_version=? AND config_key=?",
            (key["model_sha"], key["suite"], key["suite_version"], key["config_key"]),
        )
        return {row[0] for row in cur}

    def cell_records(self, key: Mapping[str, Any]) -> pd.DataFrame:
        """The stored records of one (model_sha, suite, suite_version, config_key)."""
        return self.records(model_sha=key["model_sha"], suite=key["suite"], suite_version=key["suite_version"],
                            config_key=key["config_key"])

    def records(self, **filters: str | Iterable[str] | None) -> pd.DataFrame:
        """Records as a DataFrame; keyword filters on any record column (a value or a list)."""
        where, args = [], []
        protocols = filters.pop("protocol", None)
        for column, value in filters.items():
            if value is None:
                continue
            if column not in RECORD_COLUMNS:
                raise UserError(f"unknown record column {column!r} (allowed: {', '.join(RECORD_COLUMNS)})")
            values = [value] if isinstance(value, str) else list(value)
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
        sql = (f"SELECT {self.record_select()} FROM records" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY rowid")
        df = _frame(self._execute(sql, args))
        df["higher_is_better"] = df["higher_is_better"].astype(bool)
        for column in ("value", "ci_low", "ci_high"):
            df[column] = df[column].astype(float)
        legacy = df["protocol"].isna()
        if legacy.any():  # rows of an older version: one protocol per (kind, version, config key)
            df["protocol"] = df["protocol"].astype(object)
            df.loc[legacy, "protocol"] = ("legacy-" + df.loc[legacy, "kind"].astype(str) + "-"
                                          + df.loc[legacy, "config_key"].astype(str))
        if protocols is not None:  # after the legacy ids are filled in
            df = df[df["protocol"].isin([protocols] if isinstance(protocols, str) else list(protocols))]
        return df.reset_index(drop=True)

    def record_select(self) -> str:
        """The record columns to SELECT, a column an older store lacks as NULL."""
        return ", ".join(c if c in self._columns else f"NULL AS {c}" for c in RECORD_COLUMNS)

    # -- per-image outcomes and protocols --------------------------------------------------------
    def outcomes(self, key: Mapping[str, Any], cell: str) -> Outcomes | None:
        """The per-image outcomes of one stored cell (None when it has none)."""
        from robustvit.results.outcomes import decode

        if "outcomes" not in self._tables():
            return None
        row = self._execute(f"SELECT data FROM outcomes WHERE {_WHERE_CELL}",
                            (key["model_sha"], key["suite"], key["suite_version"], key["config_key"], cell)).fetchone()
        return None if row is None else decode(bytes(row[0]))

    def outcome_blobs(self, keys: Iterable[tuple[str, str, str, str]]) -> Iterator[tuple[tuple[str, ...], str, bytes]]:
        """``((model_sha, suite, suite_version, config_key), cell, blob)`` of every stored cell of these keys."""
        if "outcomes" not in self._tables():
            return
        for key in dict.fromkeys(keys):
            cur = self._execute(
                "SELECT cell, data FROM outcomes WHERE model_sha=? AND suite=? AND suite_version=? AND config_key=?", key)
            for cell, data in cur.fetchall():
                yield key, cell, bytes(data)

    def protocols(self) -> dict[str, dict[str, Any]]:
        """Protocol id -> its description (kind, version, options, dataset, fingerprint, limit, seed)."""
        if "protocols" not in self._tables():
            return {}
        return {p: json.loads(spec) for p, spec in self._execute("SELECT protocol, spec FROM protocols").fetchall()}

    # -- partial state of long cells ---------------------------------------------------------------
    @staticmethod
    def cache_key(key: Mapping[str, Any]) -> str:
        return "|".join(str(key[k]) for k in ("model_sha", "suite", "suite_version", "config_key"))

    def get_partial(self, key: Mapping[str, Any], cell: str) -> bytes | None:
        row = self._execute("SELECT state FROM partial WHERE cache_key=? AND cell=?",
                            (self.cache_key(key), cell)).fetchone()
        return None if row is None else bytes(row[0])

    def put_partial(self, key: Mapping[str, Any], cell: str, state: bytes) -> None:
        with self._transaction():
            self._execute(self._d.insert("partial", ("cache_key", "cell", "state"), "replace", ("cache_key", "cell")),
                          (self.cache_key(key), cell, self._d.binary(state)))
