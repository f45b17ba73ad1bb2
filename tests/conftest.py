"""Shared fixtures: hermetic environment (no plugins, feature cache and store in tmp folders)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from postgres_server import INSTALL_HINT, PostgresServer, find_binaries  # noqa: E402

os.environ.setdefault("ROBUSTVIT_NO_PLUGINS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test reaches for the network (read when huggingface_hub loads)


@pytest.fixture(autouse=True)
def _hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTVIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("ROBUSTVIT_NO_PLUGINS", "1")
    monkeypatch.delenv("ROBUSTVIT_STORE", raising=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "results.sqlite"


# -- a real PostgreSQL server for the store tests (Debian's binaries; see tests/postgres_server.py) ----------
def _pg_missing(reason: str) -> None:
    message = f"{reason}: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests; {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _pg_missing("psycopg is not installed")
    bin_dir = find_binaries()
    if bin_dir is None:
        _pg_missing("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin")
    server = PostgresServer(bin_dir).start()
    print(f"\nPostgreSQL test server up in {server.seconds:.2f}s on 127.0.0.1:{server.port} as OS user "
          f"{server.user or 'current'}", file=sys.stderr)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database()


