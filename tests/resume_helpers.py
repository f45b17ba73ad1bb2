"""Shared by the kill-and-resume tests: run ``robustvit`` in a subprocess, read its store while it
runs, and SIGKILL it once a cell has saved partial progress."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def cli_env(tmp_path: Path) -> dict[str, str]:
    """One thread, no plugins, a private feature cache, this checkout importable."""
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTVIT_NO_PLUGINS": "1",
            "ROBUSTVIT_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}


def query(store: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the store, or none while the file or its tables do not exist yet."""
    if not store.exists():
        return []
    conn = sqlite3.connect(store, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def batches_done(store: Path, cell: str) -> int:
    """Batches recorded in the partial state saved under ``cell`` (0 if none)."""
    rows = query(store, f"SELECT state FROM partial WHERE cell = '{cell}'")
    return json.loads(bytes(rows[0][0]))["batches"] if rows else 0


def kill_after_progress(command: list[str], env: dict[str, str], store: Path, cell: str) -> int:
    """Start ``command``, SIGKILL it (a real, uncatchable signal) as soon as ``cell`` has saved a
    batch of progress, and return the process's exit code."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while batches_done(store, cell) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return proc.returncode
