"""Kill ``robustvit eval`` in the middle of an AutoAttack cell, run it again: same numbers as a run
that was never interrupted, continued from the last finished batch."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from resume_helpers import batches_done, cli_env, kill_after_progress, query

CELL = "autoattack-fast-linf/eps=8/255"
BATCHES = 4


def _command(store: Path) -> list[str]:
    attack = '[{attack="autoattack", version="fast", steps=10, n_target_classes=3, eps=["8/255"]}]'
    return [sys.executable, "-m", "robustvit", "eval", "--model", "zoo_resnet", "--suite", "adversarial",
            "--data", "digits", "--limit", str(8 * BATCHES), "--batch-size", "8", "--device", "cpu",
            "--store", str(store), "--quiet", "-o", f"attacks={attack}", "-o", "checks=false",
            "-o", "block=8"]  # attack blocks of one batch: progress is saved after each of the 4


def _cell_values(store: Path) -> dict[str, float]:
    rows = query(store, f"SELECT metric, value FROM records WHERE cell = '{CELL}'")
    return dict(rows)


@pytest.mark.slow
def test_kill_mid_autoattack_cell_and_resume(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    whole = tmp_path / "whole.sqlite"
    subprocess.run(_command(whole), env=env, check=True, capture_output=True, timeout=600)
    expected = _cell_values(whole)
    assert {"clean_acc", "robust_acc", "success_rate", "robust_acc_apgd-ce", "robust_acc_apgd-t"} <= set(expected)

    resumed = tmp_path / "resumed.sqlite"
    returncode = kill_after_progress(_command(resumed), env, resumed, CELL)  # in the middle of the cell
    assert returncode == -signal.SIGKILL
    done = batches_done(resumed, CELL)
    assert 1 <= done < BATCHES, "the kill should land inside the cell"
    assert _cell_values(resumed) == {}, "an unfinished cell is never written"

    subprocess.run(_command(resumed), env=env, check=True, capture_output=True, timeout=600)
    assert _cell_values(resumed) == expected
    assert query(resumed, f"SELECT count(*) FROM partial WHERE cell = '{CELL}'") == [(0,)]
