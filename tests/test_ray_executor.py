"""The Ray executor on real Ray clusters: the same records as one process, whatever the cluster.

* a local cluster the driver starts itself, two worker processes (SQLite store);
* a two-node cluster on this machine (``ray start --head`` plus ``ray start --address`` on loopback)
  writing to a real PostgreSQL server, with one worker SIGKILLed in the middle of a task: Ray restarts
  it and reruns the task, the records equal an uninterrupted run and nothing is stored twice;
* a cluster address nobody listens on: one line, exit code 2, no store file.

The runs use the quickstart's suite file with smaller image subsets (same suites and options) and small
shards, so that cells really are split across workers and merged by image index.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

if importlib.util.find_spec("ray") is None and not os.environ.get("CI"):  # CI must run these tests
    pytest.skip("Ray is not installed (pip install 'robustvit[ray]')", allow_module_level=True)

from robustvit.cli import main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_helpers import records  # noqa: E402

from robustvit.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def ray_env() -> Iterator[dict]:
    """Token authentication with a throw-away token (nothing written to ~/.ray), no usage reports. Set
    before Ray is first imported (it reads them once), so ``ray`` is imported inside the tests only."""
    saved = dict(os.environ)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                       "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    yield dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)


#: the image subsets of the quickstart's suites in these tests (suites not named: the run's limit, 96)
LIMITS = {"corruption": 24, "adversarial": 16, "autoattack_fast": 2, "probes": 8, "stability": 8}


def small_quickstart(folder: Path) -> Path:
    """suites/quickstart.toml with smaller image subsets (:data:`LIMITS`), batches of 16, attack blocks of 8
    and shards of 16 images, so that cells are split across workers."""
    text = (ROOT / "suites" / "quickstart.toml").read_text()
    parts = re.split(r"(?m)^(?=\[)", text)
    out = []
    for part in parts:
        name = re.match(r"\[suites\.(\w+)\]", part)
        if name and name.group(1) in LIMITS:
            part = re.sub(r"(?m)^limit = \d+", f"limit = {LIMITS[name.group(1)]}", part)
        if part.startswith("[report]"):
            continue
        out.append(part)
    text = "".join(out)
    text = re.sub(r"(?m)^checks_n = \d+", "checks_n = 8\nblock = 8", text)  # attack blocks of 8 images
    text = re.sub(r"(?m)^checks = false", "checks = false\nblock = 8", text)
    text = re.sub(r"images = \d+", "images = 2", text)
    text = re.sub(r"steps = \d+", "steps = 4", text)
    text = text.replace("batch_size = 256", "batch_size = 16\nshard_images = 16\nlimit = 96")
    path = folder / "quickstart_small.toml"
    path.write_text(text)
    return path


def outcomes(location: str) -> dict:
    """(model, suite, cell) -> its per-image arrays (None for a cell without outcomes)."""
    with Store(location, readonly=True) as store:
        rows = store.records().drop_duplicates(["model", "suite", "cell"])
        out = {}
        for row in rows.to_dict("records"):
            value = store.outcomes(row, row["cell"])
            out[(row["model"], row["suite"], row["cell"])] = None if value is None else dict(value.arrays)
        return out


def assert_same_records(reference: str, other: str) -> None:
    """Records identical to the last bit; per-image outcomes identical, except float scores of detectors
    whose linear algebra runs on another number of BLAS threads (a worker has one), which may differ
    in the last bits (they are ranked, so the records do not)."""
    a, b = records(reference), records(other)
    assert len(a) > 300
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    oa, ob = outcomes(reference), outcomes(other)
    assert oa.keys() == ob.keys()
    for cell, arrays in oa.items():
        assert (arrays is None) == (ob[cell] is None), cell
        for name, arr in (arrays or {}).items():
            if arr.dtype.kind == "f":
                np.testing.assert_allclose(ob[cell][name], arr, rtol=1e-6, atol=1e-7, err_msg=f"{cell} {name}")
            else:
                np.testing.assert_array_equal(ob[cell][name], arr, err_msg=f"{cell} {name}")


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_quickstart(tmp_path_factory.mktemp("ray"))


@pytest.fixture(scope="module")
def reference(suite_file: Path) -> str:
    """The in-process run (the local executor)."""
    path = str(suite_file.parent / "local.sqlite")
    assert main(["run", str(suite_file), "--store", path, "--quiet", "--format", "csv"]) == 0
    return path


def test_local_cluster_of_two_workers(reference: str, suite_file: Path, capsys: pytest.CaptureFixture) -> None:
    path = str(suite_file.parent / "local-ray.sqlite")
    assert main(["run", str(suite_file), "--store", path, "--executor", "ray", "--ray-workers", "2"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"ray: \d+ tasks on 2 workers", err), err
    assert re.search(r"images 16-24\)", err)  # cells were split into image shards
    import ray

    assert not ray.is_initialized()  # the cluster the run started is shut down
    assert_same_records(reference, path)


def _ray_cli() -> str:
    return shutil.which("ray") or str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def two_nodes(ray_env: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A head node and a second node on loopback, one CPU each (so each runs one worker)."""
    port = 6379 + secrets.randbelow(1000)
    temp = tmp_path_factory.mktemp("raytmp")
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    head = [_ray_cli(), "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", *common]
    subprocess.run(head, check=True, capture_output=True, timeout=180)
    try:
        subprocess.run([_ray_cli(), "start", f"--address=127.0.0.1:{port}", *common], check=True, capture_output=True,
                       timeout=180)
        deadline = time.time() + 60
        while time.time() < deadline:
            status = subprocess.run([_ray_cli(), "status", f"--address=127.0.0.1:{port}"], capture_output=True,
                                    text=True, timeout=60).stdout
            if "2.0 CPU" in status or "0.0/2.0 CPU" in status:
                break
            time.sleep(1)
        else:
            pytest.fail(f"the second node never joined: {status}")
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, timeout=120)


def _working_worker() -> int | None:
    """The pid of a Ray worker process executing a task (its title is ``ray::Worker.run``)."""
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            text = Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text.startswith("ray::Worker.run"):
            return int(cmdline.split("/")[2])
    return None


def test_two_node_cluster_postgresql_and_a_killed_worker(reference: str, suite_file: Path, two_nodes: str,
                                                         pg_url: str) -> None:
    """The two-node cluster writing to PostgreSQL, with one worker SIGKILLed in the middle of a task."""
    proc = subprocess.Popen([sys.executable, "-m", "robustvit", "run", str(suite_file), "--store", pg_url,
                             "--executor", "ray", "--ray-address", two_nodes],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 600
    while killed is None and proc.poll() is None and time.time() < deadline:
        pid = _working_worker()
        if pid is not None:
            time.sleep(0.5)  # well into the task
            try:
                os.kill(pid, signal.SIGKILL)
                killed = pid
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    out, err = proc.communicate(timeout=1800)
    assert killed is not None, "no task was caught running"
    assert proc.returncode == 0, err
    assert "tasks on 2 workers" in err
    assert_same_records(reference, pg_url)
    with Store(pg_url, readonly=True) as s:
        assert len(s.runs()) == 1
        rows = s.records()
    assert not rows.duplicated(["model", "suite", "cell", "metric"]).any()  # nothing stored twice


def test_unreachable_cluster_is_one_line(suite_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "none.sqlite"
    code = main(["run", str(suite_file), "--store", str(store), "--executor", "ray", "--ray-address", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "cannot reach the Ray cluster at '127.0.0.1:1'" in err
    assert not store.exists()


def test_the_comparison_sees_per_image_arrays(reference: str) -> None:
    """The comparisons above compare real per-image arrays, not empty blobs."""
    blobs = [v for v in outcomes(reference).values() if v]
    assert len(blobs) > 20
    with Store(reference, readonly=True) as s:
        row = s.records(suite="corruption").iloc[0].to_dict()
        assert len(s.outcomes(row, row["cell"]).arrays["top1"]) == 24
