"""Kill ``robustvit eval`` in the middle of the corruption suite's generate mode, run it again: the
same numbers as a run that was never interrupted, continued from the saved batch count."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from resume_helpers import batches_done, cli_env, kill_after_progress, query

BATCHES = 8
NAMES = ["gaussian_noise", "shot_noise", "glass_blur", "snow", "frost", "elastic_transform", "jpeg_compression"]
FIRST = "gaussian_noise/1"  # the cells of one pass over the data keep their progress under the first


def _command(store: Path) -> list[str]:
    return [sys.executable, "-m", "robustvit", "eval", "--model", "zoo_resnet", "--suite", "corruption",
            "--data", "digits", "--limit", str(8 * BATCHES), "--batch-size", "8", "--device", "cpu",
            "--store", str(store), "--quiet", "-o", "preset=cifar10_c", "-o", f"corruptions={json.dumps(NAMES)}"]


def _errors(store: Path) -> dict[str, float]:
    return dict(query(store, "SELECT cell, value FROM records WHERE metric = 'error' AND cell LIKE '%/%'"))


@pytest.mark.slow
def test_kill_mid_corruption_pass_and_resume(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    whole = tmp_path / "whole.sqlite"
    subprocess.run(_command(whole), env=env, check=True, capture_output=True, timeout=600)
    expected = _errors(whole)
    assert len(expected) == len(NAMES) * 5

    resumed = tmp_path / "resumed.sqlite"
    returncode = kill_after_progress(_command(resumed), env, resumed, FIRST)  # in the middle of the pass
    assert returncode == -signal.SIGKILL
    done = batches_done(resumed, FIRST)
    assert 1 <= done < BATCHES, "the kill should land inside the pass"
    assert _errors(resumed) == {}, "no corruption cell is written before the pass ends"

    subprocess.run(_command(resumed), env=env, check=True, capture_output=True, timeout=600)
    assert _errors(resumed) == expected
