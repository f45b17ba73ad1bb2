"""The results store: records, per-image outcomes, protocols and run manifests in one SQLite file.

This is the only module that writes results. Each finished cell (its records and its per-image
outcomes blob) is written in one transaction, so an interrupted run never leaves a half-written
cell; a resumed run asks :meth:`Store.done_cells` which cells to skip. A store written by an older
version opens as it is: missing columns are added (``protocol``, ``ci_low``, ``ci_high``; NULL for
old rows, or read as NULL when the file is read-only) and the new tables are created. Long cells may keep resumable partial state (``partial`` table) keyed by
cell and batch; it is deleted when the cell is written.

Default path: ``./robustvit-results.sqlite`` in the working directory; the environment variable
``ROBUSTVIT_STORE`` or the CLI's ``--store`` override it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustvit.errors import UserError
from robustvit.records import RECORD_COLUMNS, CellResult

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.results.outcomes import Outcomes

DEFAULT_STORE = "robustvit-results.sqlite"
STORE_ENV = "ROBUSTVIT_STORE"

#: columns added after the first release: (name, SQL type); old stores gain them on open
_ADDED_COLUMNS = (("protocol", "TEXT"), ("ci_low", "REAL"), ("ci_high", "REAL"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL, model TEXT NOT NULL, model_sha TEXT NOT NULL, family TEXT NOT NULL,
    params INTEGER NOT NULL, suite TEXT NOT NULL, kind TEXT NOT NULL, suite_version TEXT NOT NULL,
    config_key TEXT NOT NULL, dataset TEXT NOT NULL, cell TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, n INTEGER NOT NULL, higher_is_better INTEGER NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_cache ON records (model_sha, suite, suite_version, config_key, cell);
CREATE TABLE IF NOT EXISTS outcomes (
    model_sha TEXT NOT NULL, suite TEXT NOT NULL, suite_version TEXT NOT NULL, config_key TEXT NOT NULL,
    cell TEXT NOT NULL, protocol TEXT, data BLOB NOT NULL,
    PRIMARY KEY (model_sha, suite, suite_version, config_key, cell)
);
CREATE TABLE IF NOT EXISTS protocols (
    protocol TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, config TEXT NOT NULL, versions TEXT NOT NULL,
    device TEXT NOT NULL, seed INTEGER NOT NULL, git_commit TEXT
);
CREATE TABLE IF NOT EXISTS partial (
    cache_key TEXT NOT NULL, cell TEXT NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (cache_key, cell)
);
"""


def default_store_path() -> Path:
    """``$ROBUSTVIT_STORE`` if set, else ``./robustvit-results.sqlite``."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    """Records and run manifests in a SQLite file.

    Args:
        path: The SQLite file; created (with its folder) on first write.
        readonly: Open an existing file for reading only; a missing file is a user error.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        if readonly and not self.path.exists():
            raise UserError(f"results store {str(self.path)!r} does not exist (run an evaluation first, or pass --store)")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=30)
            if not readonly:
                self._conn.executescript(_SCHEMA)
            self._conn.execute("SELECT count(*) FROM records").fetchone()
            self._columns = self._migrate()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{str(self.path)!r} is not a robustvit results store: {exc}") from exc

    def _migrate(self) -> set[str]:
        """Add the columns and tables an older store lacks; the columns present afterwards."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(records)")}
        try:
            with self._conn:
                for name, sql_type in _ADDED_COLUMNS:
                    if name not in columns:
                        self._conn.execute(f"ALTER TABLE records ADD COLUMN {name} {sql_type}")
                        columns.add(name)
                if not {"outcomes", "protocols"} <= self._tables():
                    self._conn.executescript(_SCHEMA)
        except sqlite3.OperationalError:  # a read-only file: read what is there
            pass
        return columns

    def _tables(self) -> set[str]:
        if getattr(self, "_known_tables", None) is None or not {"outcomes", "protocols"} <= self._known_tables:
            self._known_tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return self._known_tables

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_empty(self) -> bool:
        """No records and no runs stored."""
        return not any(self._conn.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in ("records", "runs"))

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, config: Mapping[str, Any], versions: Mapping[str, str], device: str, seed: int,
                  git_commit: str | None) -> str:
        """Write a run manifest and return its new run id."""
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with self._conn:
            self._conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, now_iso(), json.dumps(config, sort_keys=True, default=str),
                 json.dumps(dict(versions), sort_keys=True), device, int(seed), git_commit),
            )
        return run_id

    def runs(self) -> pd.DataFrame:
        import pandas as pd

        df = pd.read_sql_query("SELECT * FROM runs ORDER BY created_at", self._conn)
        return df

    # -- records -----------------------------------------------------------------------------
    def write_cell(self, run_id: str, key: Mapping[str, Any], result: CellResult) -> None:
        """Write all metrics of a finished cell in one transaction (and drop its partial state).

        ``key`` holds the record columns that do not vary within a cell: model, model_sha, family,
        params, suite, kind (defaults to suite), suite_version, config_key, dataset, protocol, and
        optionally ``protocol_spec`` (the protocol's description, a JSON-able dict). The cell's
        outcomes (``result.outcomes``), if any, are written in the same transaction.
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
        with self._conn:  # one transaction: the whole cell or nothing
            self._conn.execute(
                "DELETE FROM records WHERE model_sha=? AND suite=? AND suite_version=? AND config_key=? AND cell=?", where)
            self._conn.executemany(
                f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(RECORD_COLUMNS))})", rows)
            self._conn.execute(
                "DELETE FROM outcomes WHERE model_sha=? AND suite=? AND suite_version=? AND config_key=? AND cell=?", where)
            if result.outcomes:
                self._conn.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   (*where, protocol, sqlite3.Binary(encode(result.outcomes))))
            if protocol and key.get("protocol_spec") is not None:
                self._conn.execute("INSERT OR IGNORE INTO protocols VALUES (?, ?, ?)",
                                   (protocol, kind, json.dumps(key["protocol_spec"], sort_keys=True, default=str)))
            self._conn.execute(
                "DELETE FROM partial WHERE cache_key=? AND cell=?", (self.cache_key(key), result.cell)
            )

    def done_cells(self, key: Mapping[str, Any]) -> set[str]:
        """Cells already stored for this model checkpoint, suite version and config."""
        cur = self._conn.execute(
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
        import pandas as pd

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
        select = ", ".join(c if c in self._columns else f"NULL AS {c}" for c in RECORD_COLUMNS)
        sql = f"SELECT {select} FROM records" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY rowid"
        df = pd.read_sql_query(sql, self._conn, params=args)
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

    # -- per-image outcomes and protocols --------------------------------------------------------
    def outcomes(self, key: Mapping[str, Any], cell: str) -> Outcomes | None:
        """The per-image outcomes of one stored cell (None when it has none)."""
        from robustvit.results.outcomes import decode

        if "outcomes" not in self._tables():
            return None
        row = self._conn.execute(
            "SELECT data FROM outcomes WHERE model_sha=? AND suite=? AND suite_version=? AND config_key=? AND cell=?",
            (key["model_sha"], key["suite"], key["suite_version"], key["config_key"], cell)).fetchone()
        return None if row is None else decode(row[0])

    def outcome_blobs(self, keys: Iterable[tuple[str, str, str, str]]) -> Iterator[tuple[tuple[str, ...], str, bytes]]:
        """``((model_sha, suite, suite_version, config_key), cell, blob)`` of every stored cell of these keys."""
        if "outcomes" not in self._tables():
            return
        for key in dict.fromkeys(keys):
            cur = self._conn.execute(
                "SELECT cell, data FROM outcomes WHERE model_sha=? AND suite=? AND suite_version=? AND config_key=?", key)
            for cell, data in cur:
                yield key, cell, data

    def protocols(self) -> dict[str, dict[str, Any]]:
        """Protocol id -> its description (kind, version, options, dataset, fingerprint, limit, seed)."""
        if "protocols" not in self._tables():
            return {}
        return {p: json.loads(spec) for p, spec in self._conn.execute("SELECT protocol, spec FROM protocols")}

    # -- partial state of long cells ---------------------------------------------------------------
    @staticmethod
    def cache_key(key: Mapping[str, Any]) -> str:
        return "|".join(str(key[k]) for k in ("model_sha", "suite", "suite_version", "config_key"))

    def get_partial(self, key: Mapping[str, Any], cell: str) -> bytes | None:
        row = self._conn.execute(
            "SELECT state FROM partial WHERE cache_key=? AND cell=?", (self.cache_key(key), cell)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put_partial(self, key: Mapping[str, Any], cell: str, state: bytes) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO partial VALUES (?, ?, ?)", (self.cache_key(key), cell, sqlite3.Binary(state))
            )
