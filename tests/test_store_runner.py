"""Store round trip, caching, and resume after an interruption (in process and by SIGKILL)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.records import RECORD_COLUMNS, CellResult
from robustvit.runner import execute
from robustvit.store import Store

KEY = {"model": "m", "model_sha": "abc", "family": "vit", "params": 10, "suite": "clean", "kind": "clean",
       "suite_version": "1", "config_key": "k1", "dataset": "digits"}


def test_store_round_trip(store_path: Path) -> None:
    with Store(store_path) as store:
        run_id = store.start_run({"a": 1}, {"torch": "x"}, "cpu", 3, None)
        store.write_cell(run_id, KEY, CellResult("").add("top1", 0.5, 10, True).add("nll", math.nan, 10, False))
        df = store.records()
        assert list(df.columns) == list(RECORD_COLUMNS)
        assert df["value"].dtype == float and df["higher_is_better"].dtype == bool
        assert df.loc[df.metric == "top1", "value"].item() == 0.5 and math.isnan(df.loc[df.metric == "nll", "value"].item())
        assert store.done_cells(KEY) == {""}
        assert store.done_cells({**KEY, "config_key": "k2"}) == set()
        runs = store.runs()
        assert runs["run_id"].tolist() == [run_id] and runs["seed"].item() == 3
        # rewriting a cell replaces it whole
        store.write_cell(run_id, KEY, CellResult("").add("top1", 0.75, 10, True))
        assert store.records()["value"].tolist() == [0.75]
        store.put_partial(KEY, "x", b"state")
        assert store.get_partial(KEY, "x") == b"state"
        store.write_cell(run_id, KEY, CellResult("x").add("m", 1, 1, True))
        assert store.get_partial(KEY, "x") is None
    with Store(store_path, readonly=True) as ro:
        assert len(ro.records(metric="top1")) == 1


def _cfg(suites=("clean",), limit=64) -> RunConfig:
    return RunConfig(models=[ModelConfig("zoo_resnet")], suites=[build_suite(s, {}, s) for s in suites],
                     limit=limit, batch_size=32, device="cpu")


def test_second_run_reuses_cells_and_force_recomputes(store_path: Path) -> None:
    with Store(store_path) as store:
        first = execute(_cfg(), store, show_progress=False)
        assert first.computed == 1 and first.cached == 0 and first.run_id is not None
        second = execute(_cfg(), store, show_progress=False)
        assert second.computed == 0 and second.cached == 1 and second.run_id is None
        assert len(store.runs()) == 1
        other_limit = execute(_cfg(limit=32), store, show_progress=False)
        assert other_limit.computed == 1
        forced = execute(_cfg(), store, force=True, show_progress=False)
        assert forced.computed == 1
        df = store.records(metric="top1")
        assert sorted(df["n"].tolist()) == [32, 64]


class _Boom(Exception):
    pass


def test_interrupted_run_resumes_missing_cells_only(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustvit.suites import clean as clean_module

    suite = build_suite("clean", {}, "clean")
    calls: list[str] = []

    class Parts(clean_module.CleanSuite):
        def cells(self):
            return ["a", "b", "c"]

        def run(self, ctx, cells):
            for cell in cells:
                calls.append(cell)
                if cell == "b" and len(calls) == 2:
                    raise _Boom("interrupted in the middle of cell b")
                yield CellResult(cell).add("top1", 0.1 * len(cell), 1, True)

    suite.suite = Parts(name="clean")
    cfg = RunConfig(models=[ModelConfig("zoo_resnet")], suites=[suite], limit=16, device="cpu")
    with Store(store_path) as store:
        with pytest.raises(_Boom):
            execute(cfg, store, show_progress=False)
        assert set(store.records()["cell"]) == {"a"}  # b was never half-written
        summary = execute(cfg, store, show_progress=False)
        assert calls == ["a", "b", "b", "c"] and summary.computed == 2 and summary.cached == 1


SCRIPT = textwrap.dedent("""
    import os, sys, time
    from robustvit.config import ModelConfig, RunConfig, SuiteConfig
    from robustvit.records import CellResult
    from robustvit.runner import execute
    from robustvit.store import Store
    from robustvit.suites.base import Suite
    from robustvit.metrics.classification import top1

    class Slices(Suite):
        kind = "slices"

        def cells(self):
            return [f"slice/{i}" for i in range(6)]

        def run(self, ctx, cells):
            fs = ctx.features()
            for cell in cells:
                i = int(cell.split("/")[1])
                time.sleep(float(os.environ["SLICE_DELAY"]))  # not an option: it must not change the cache key
                part = slice(i * 20, (i + 1) * 20)
                yield CellResult(cell).add("top1", top1(fs.logits[part], fs.labels[part]), 20, True)

    cfg = RunConfig(models=[ModelConfig("zoo_vit")], suites=[SuiteConfig("slices", Slices())],
                    limit=120, device="cpu")
    with Store(sys.argv[1]) as store:
        s = execute(cfg, store, show_progress=False)
        print("computed", s.computed, "cached", s.cached)
""")


def test_kill_and_resume_gives_same_numbers(tmp_path: Path) -> None:
    script = tmp_path / "slices.py"
    script.write_text(SCRIPT)
    killed, clean = tmp_path / "killed.sqlite", tmp_path / "clean.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(killed)], env={**env, "SLICE_DELAY": "0.7"})
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if killed.exists():
            with Store(killed) as s:
                done = len(s.records())
            if done >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Store(killed) as s:
        stored = len(s.records())
    assert 2 <= stored < 6
    env["SLICE_DELAY"] = "0"
    out = subprocess.run([sys.executable, str(script), str(killed)], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert f"computed {6 - stored} cached {stored}" in out
    subprocess.run([sys.executable, str(script), str(clean)], env=env, check=True, capture_output=True)
    with Store(killed) as a, Store(clean) as b:
        ra = a.records().sort_values("cell")[["cell", "metric", "value", "n"]].reset_index(drop=True)
        rb = b.records().sort_values("cell")[["cell", "metric", "value", "n"]].reset_index(drop=True)
    assert ra.equals(rb) and len(ra) == 6
