"""Kill ``robustvit eval`` in the middle of an AutoAttack cell, run it again: same numbers as a run
that was never interrupted, continued from the last finished batch."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

CELL = "autoattack-fast-linf/eps=8/255"
BATCHES = 4


def _command(store: Path) -> list[str]:
    attack = '[{attack="autoattack", version="fast", steps=10, n_target_classes=3, eps=["8/255"]}]'
    return [sys.executable, "-m", "robustvit", "eval", "--model", "zoo_resnet", "--suite", "adversarial",
            "--data", "digits", "--limit", str(8 * BATCHES), "--batch-size", "8", "--device", "cpu",
            "--store", str(store), "--quiet", "-o", f"attacks={attack}", "-o", "checks=false"]


def _env(tmp_path: Path) -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTVIT_NO_PLUGINS": "1",
            "ROBUSTVIT_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}


def _query(store: Path, sql: str) -> list[tuple]:
    if not store.exists():
        return []
    conn = sqlite3.connect(store, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def _cell_values(store: Path) -> dict[str, float]:
    rows = _query(store, f"SELECT metric, value FROM records WHERE cell = '{CELL}'")
    return dict(rows)


def _batches_done(store: Path) -> int:
    rows = _query(store, f"SELECT state FROM partial WHERE cell = '{CELL}'")
    return json.loads(bytes(rows[0][0]))["batches"] if rows else 0


@pytest.mark.slow
def test_kill_mid_autoattack_cell_and_resume(tmp_path: Path) -> None:
    env = _env(tmp_path)
    whole = tmp_path / "whole.sqlite"
    subprocess.run(_command(whole), env=env, check=True, capture_output=True, timeout=600)
    expected = _cell_values(whole)
    assert {"clean_acc", "robust_acc", "success_rate", "robust_acc_apgd-ce", "robust_acc_apgd-t"} <= set(expected)

    resumed = tmp_path / "resumed.sqlite"
    proc = subprocess.Popen(_command(resumed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while _batches_done(resumed) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # a real, uncatchable signal in the middle of the cell
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = _batches_done(resumed)
    assert 1 <= done < BATCHES, "the kill should land inside the cell"
    assert _cell_values(resumed) == {}, "an unfinished cell is never written"

    subprocess.run(_command(resumed), env=env, check=True, capture_output=True, timeout=600)
    assert _cell_values(resumed) == expected
    assert _query(resumed, f"SELECT count(*) FROM partial WHERE cell = '{CELL}'") == [(0,)]
