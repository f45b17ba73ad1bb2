"""The SQL backends of the results store: SQLite (embedded default) and PostgreSQL (teams, many writers).

Everything that differs between the two lives here, in one :class:`Dialect` each: how a location is
opened (and its errors turned into one-line :class:`~robustvit.errors.UserError`), placeholders,
column types (``BLOB``/``BYTEA``, ``REAL``/``DOUBLE PRECISION``), ``INSERT OR IGNORE/REPLACE`` versus
``ON CONFLICT DO NOTHING/UPDATE``, catalog queries for tables and columns, transactions and the lock
that serialises writers of one cell. :class:`robustvit.store.Store` writes its SQL once, with ``?``
placeholders, and asks its dialect for the rest.

Store locations:

* a file path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path``: a SQLite file (the default);
* ``postgresql://user[:password]@host[:port]/database[?param=value...]`` (also ``postgres://``): a
  PostgreSQL database; the query takes any libpq parameter (``sslmode=require``,
  ``host=/run/postgresql`` for a unix socket, ``options=-csearch_path%3Dteam``). A password is
  better kept in ``~/.pgpass`` or ``$PGPASSWORD``; messages never show it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from robustvit.errors import UserError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
POSTGRES_SCHEMES = ("postgresql", "postgres")
LOCATION_FORMS = "a SQLite file path, sqlite:///path or postgresql://user@host:port/database"

#: the store's tables in dependency order; the records and runs tables of PostgreSQL also carry a
#: ``rowid`` identity (SQLite's implicit rowid), so both backends order rows the same way
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    {rowid}run_id TEXT NOT NULL, model TEXT NOT NULL, model_sha TEXT NOT NULL, family TEXT NOT NULL,
    params {int} NOT NULL, suite TEXT NOT NULL, kind TEXT NOT NULL, suite_version TEXT NOT NULL,
    config_key TEXT NOT NULL, dataset TEXT NOT NULL, cell TEXT NOT NULL, metric TEXT NOT NULL,
    value {real}, n {int} NOT NULL, higher_is_better {int} NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_cache ON records (model_sha, suite, suite_version, config_key, cell);
CREATE TABLE IF NOT EXISTS outcomes (
    model_sha TEXT NOT NULL, suite TEXT NOT NULL, suite_version TEXT NOT NULL, config_key TEXT NOT NULL,
    cell TEXT NOT NULL, protocol TEXT, data {blob} NOT NULL,
    PRIMARY KEY (model_sha, suite, suite_version, config_key, cell)
);
CREATE TABLE IF NOT EXISTS protocols (
    protocol TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    {rowid}run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, config TEXT NOT NULL, versions TEXT NOT NULL,
    device TEXT NOT NULL, seed {int} NOT NULL, git_commit TEXT
);
CREATE TABLE IF NOT EXISTS partial (
    cache_key TEXT NOT NULL, cell TEXT NOT NULL, state {blob} NOT NULL,
    PRIMARY KEY (cache_key, cell)
);
"""
TABLES = ("records", "outcomes", "protocols", "runs", "partial")


def redact(location: str) -> str:
    """The location as it may be printed: a URL loses its password (also a ``password=`` parameter)."""
    if not _SCHEME.match(location):
        return location
    try:
        parts = urlsplit(location)
    except ValueError:  # not even a URL: show its scheme only
        return location.split("://", 1)[0] + "://..."
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = (userinfo.split(":", 1)[0] + at + hostport) if at else hostport
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"], safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _passwords(url: str) -> list[str]:
    """The passwords written in a URL (userinfo, ``password=``), never to be shown."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [v for k, v in parse_qsl(parts.query) if k == "password" and v]
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    return [p for p in found if p]


class StoreURL(str):
    """A server store's location as shown to users: its URL without the password.

    It stands in for :attr:`Store.path <robustvit.store.Store.path>` where a caller expects a path:
    ``unlink`` does nothing (a database is never removed because one run stored nothing).
    """

    def unlink(self, missing_ok: bool = False) -> None:
        """Nothing to remove: the database stays."""

    def exists(self) -> bool:
        return True


class Dialect:
    """What one backend does its own way; :class:`robustvit.store.Store` holds one."""

    name = ""
    types = {"int": "INTEGER", "real": "REAL", "blob": "BLOB", "rowid": ""}
    #: the backend's errors; of them, those that mean "this store may not be written"
    errors: tuple[type[BaseException], ...] = ()
    readonly_errors: tuple[type[BaseException], ...] = ()

    def sql(self, text: str) -> str:
        """``text`` with the store's ``?`` placeholders in this dialect's style."""
        return text

    def column_type(self, sql_type: str) -> str:
        """A column type written for SQLite (``TEXT``, ``REAL``, ``INTEGER``, ``BLOB``) in this dialect."""
        return {"REAL": self.types["real"], "INTEGER": self.types["int"], "BLOB": self.types["blob"]}.get(sql_type,
                                                                                                         sql_type)

    def schema(self) -> list[str]:
        """The ``CREATE ... IF NOT EXISTS`` statements of every table and index."""
        text = SCHEMA.format(**self.types)
        return [s.strip() for s in text.split(";") if s.strip()]

    def binary(self, data: bytes) -> Any:
        return data

    def insert(self, table: str, columns: Sequence[str], conflict: str | None = None,
               keys: Sequence[str] = ()) -> str:
        """``INSERT`` of one row; ``conflict``: None (fail), ``"ignore"`` or ``"replace"`` on the primary ``keys``."""
        raise NotImplementedError

    def tables(self, conn: Any) -> set[str]:
        """The tables of the store's schema (catalog query)."""
        raise NotImplementedError

    def columns(self, conn: Any, table: str) -> set[str]:
        """The columns of one table (catalog query)."""
        raise NotImplementedError

    def transaction(self, conn: Any) -> AbstractContextManager[None]:
        """A context in which the statements run as one transaction (committed, or rolled back on any error)."""
        raise NotImplementedError

    def lock(self, conn: Any, tokens: Sequence[str]) -> None:
        """Inside a transaction: serialise it with every other writer of these tokens (cells, the schema)."""


class SQLiteDialect(Dialect):
    """A SQLite file; ``BEGIN IMMEDIATE`` takes the file's write lock, so writers queue (30 s busy timeout)."""

    name = "sqlite"
    errors = (sqlite3.DatabaseError,)
    readonly_errors = (sqlite3.OperationalError,)

    def connect(self, path: Path) -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=30, isolation_level=None)  # transactions are explicit

    def binary(self, data: bytes) -> Any:
        return sqlite3.Binary(data)

    def insert(self, table: str, columns: Sequence[str], conflict: str | None = None,
               keys: Sequence[str] = ()) -> str:
        verb = {None: "INSERT", "ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}[conflict]
        return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def tables(self, conn: sqlite3.Connection) -> set[str]:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def columns(self, conn: sqlite3.Connection, table: str) -> set[str]:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}

    @contextmanager
    def transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class PostgresDialect(Dialect):
    """A PostgreSQL database through psycopg 3 (autocommit; writes in explicit transactions).

    Writers of one cell are serialised by a transaction-level advisory lock on the cell's key, so a
    cell raced by two writers ends as exactly one copy; schema creation takes a lock of its own.
    """

    name = "postgresql"
    types = {"int": "BIGINT", "real": "DOUBLE PRECISION", "blob": "BYTEA",
             "rowid": "rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE, "}

    def __init__(self) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise UserError("a PostgreSQL store needs psycopg 3: pip install 'robustvit[postgres]' "
                            "(or 'psycopg[binary]>=3.1')") from exc
        self.psycopg = psycopg
        self.errors = (psycopg.Error,)
        self.readonly_errors = (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)

    def connect(self, url: str, readonly: bool) -> Any:
        """Open ``url``; a bad URL, an unreachable server, a failed login or a missing database is a UserError."""
        psycopg = self.psycopg
        shown = redact(url)
        try:
            params = psycopg.conninfo.conninfo_to_dict(url)
            params.setdefault("connect_timeout", 10)
            params.setdefault("application_name", "robustvit")
            conn = psycopg.connect(autocommit=True, **params)
        except psycopg.Error as exc:
            reason = str(exc).replace(url, shown)
            for secret in _passwords(url):
                reason = reason.replace(secret, "***")
            raise UserError(f"cannot open results store {shown}: {reason}") from None
        if readonly:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def insert(self, table: str, columns: Sequence[str], conflict: str | None = None,
               keys: Sequence[str] = ()) -> str:
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        if conflict == "ignore":
            sql += " ON CONFLICT DO NOTHING"
        elif conflict == "replace":
            rest = [c for c in columns if c not in keys]
            sql += f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in rest)
        return sql

    def tables(self, conn: Any) -> set[str]:
        cur = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
        return {row[0] for row in cur}

    def columns(self, conn: Any, table: str) -> set[str]:
        cur = conn.execute("SELECT column_name FROM information_schema.columns "
                           "WHERE table_schema = current_schema() AND table_name = %s", (table,))
        return {row[0] for row in cur}

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        with conn.transaction():
            yield

    def lock(self, conn: Any, tokens: Sequence[str]) -> None:
        # sorted: two transactions locking overlapping sets take them in the same order (no deadlock)
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(t)) FROM unnest(%s::text[]) AS t ORDER BY t",
                     (sorted(set(tokens)),))


def open_location(location: str, readonly: bool) -> tuple[Dialect, Any, str | Path]:
    """``(dialect, connection, shown location)`` of a store location (see the module docstring).

    A SQLite location is returned as a :class:`~pathlib.Path` and not yet opened (connection None):
    the store checks and creates its file first.
    """
    match = _SCHEME.match(location)
    if match is None:
        return SQLiteDialect(), None, Path(location)
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        if not location.startswith("sqlite:///") or location == "sqlite:///":
            raise UserError(f"bad results store {location!r}: write sqlite:///relative/path or sqlite:////absolute/path")
        return SQLiteDialect(), None, Path(location[len("sqlite:///"):])
    if scheme in POSTGRES_SCHEMES:
        dialect = PostgresDialect()
        return dialect, dialect.connect(location, readonly), StoreURL(redact(location))
    raise UserError(f"unsupported results store {redact(location)!r} (allowed: {LOCATION_FORMS})")
