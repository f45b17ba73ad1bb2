"""The PostgreSQL store against a real server: same results as SQLite, concurrent writers, migration, errors.

The server is a throw-away one (:mod:`postgres_server`): started once per session from Debian's
binaries, each test on a fresh database. Without the binaries these tests skip, except under ``$CI``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import re
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from postgres_server import SUPERUSER, PostgresServer, free_port  # noqa: E402

from robustvit.cli import main  # noqa: E402
from robustvit.config import ModelConfig, RunConfig, build_suite  # noqa: E402
from robustvit.errors import UserError  # noqa: E402
from robustvit.records import CellResult  # noqa: E402
from robustvit.results import load_results  # noqa: E402
from robustvit.results.outcomes import Outcomes, decode  # noqa: E402
from robustvit.store import CELL_KEY, Store  # noqa: E402
from robustvit.store_copy import table_counts  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

KEY = {"model": "m", "model_sha": "abc", "family": "vit", "params": 10, "suite": "clean", "kind": "clean",
       "suite_version": "1", "config_key": "k1", "dataset": "digits", "protocol": "clean-p1",
       "protocol_spec": {"kind": "clean", "limit": 10}}
CORRUPTION = {"preset": "cifar10_c", "corruptions": ["gaussian_noise", "contrast"], "severities": [3]}


def _cfg(models: tuple[str, ...] = ("zoo_resnet",)) -> RunConfig:
    return RunConfig(models=[ModelConfig(m) for m in models], limit=32, batch_size=32, device="cpu",
                     suites=[build_suite("clean", {}, "clean"), build_suite("corruption", dict(CORRUPTION), "corruption")])


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store written by a real run of a ViT and a CNN (so there are comparisons)."""
    path = tmp_path_factory.mktemp("run") / "s.sqlite"
    with Store(path) as store:
        _execute(_cfg(("zoo_vit", "zoo_resnet")), store)
    return path


def _execute(cfg: RunConfig, store: Store):
    from robustvit.runner import execute  # imports torch: kept out of the writer processes that import this module

    return execute(cfg, store, show_progress=False)


def _outcomes(seed: int) -> Outcomes:
    rng = np.random.default_rng(seed)
    return Outcomes().add_pool("images", np.arange(10)).add("top1", rng.random(10) > 0.5)


def _all_blobs(store: Store) -> dict[tuple, bytes]:
    keys = store.records()[list(CELL_KEY[:4])].drop_duplicates().itertuples(index=False, name=None)
    return {(*key, cell): blob for key, cell, blob in store.outcome_blobs(list(keys))}


def _same_records(a: pd.DataFrame, b: pd.DataFrame, ignore: tuple[str, ...] = ("run_id", "created_at")) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=list(ignore)), b.drop(columns=list(ignore)))


# -- the Store API on both backends ------------------------------------------------------------------
def _round_trip(location: str) -> dict:
    """The same writes and reads on any store; what they returned."""
    seen: dict = {}
    with Store(location) as store:
        seen["empty_before"] = store.is_empty()
        run_id = store.start_run({"a": 1}, {"torch": "x"}, "cpu", 3, "deadbeef")
        store.write_cell("r1", KEY, CellResult("").add("top1", 0.5, 10, True).add("nll", math.nan, 10, False))
        cell = CellResult("gaussian_noise/3").add("top1", 0.25, 10, True)
        cell.outcomes = _outcomes(1)
        store.write_cell("r1", KEY, cell)
        store.write_cell("r1", {**KEY, "config_key": "k2", "protocol": "clean-p2"}, CellResult("x").add("e", 1, 1, False))
        store.write_cell("r1", KEY, CellResult("").add("top1", 0.75, 10, True))  # rewriting replaces the cell whole
        store.put_partial(KEY, "y", b"state")
        store.put_partial(KEY, "y", b"state2")  # replaced
        seen["partial"] = store.get_partial(KEY, "y")
        store.write_cell("r1", KEY, CellResult("y").add("m", 1, 1, True))
        seen["partial_after"] = store.get_partial(KEY, "y")
        seen["done"] = (store.done_cells(KEY), store.done_cells({**KEY, "config_key": "k3"}))
        seen["records"] = store.records()
        seen["filtered"] = store.records(metric=["top1", "e"], protocol="clean-p1")
        seen["cell_records"] = store.cell_records(KEY)
        seen["outcomes"] = store.outcomes(KEY, "gaussian_noise/3").arrays["top1"].tolist()
        seen["no_outcomes"] = store.outcomes(KEY, "")
        seen["blobs"] = _all_blobs(store)
        seen["protocols"] = store.protocols()
        runs = store.runs()
        assert runs["run_id"].tolist() == [run_id]
        seen["runs"] = runs.drop(columns=["run_id", "created_at"])
        seen["empty_after"] = store.is_empty()
    with Store(location, readonly=True) as ro:
        seen["readonly"] = ro.records(metric="top1")
    return seen


def test_round_trip_on_postgres_equals_sqlite(pg_url: str, tmp_path: Path) -> None:
    lite, pg = _round_trip(str(tmp_path / "s.sqlite")), _round_trip(pg_url)
    assert set(lite) == set(pg)
    for name in ("records", "filtered", "cell_records", "readonly"):
        _same_records(lite[name], pg[name], ignore=("created_at",))
    pd.testing.assert_frame_equal(lite["runs"], pg["runs"])
    for name in ("empty_before", "partial", "partial_after", "done", "outcomes", "no_outcomes", "blobs", "protocols",
                 "empty_after"):
        assert lite[name] == pg[name], name
    records = pg["records"]
    assert records["value"].dtype == float and records["higher_is_better"].dtype == bool
    assert records["cell"].tolist() == ["gaussian_noise/3", "x", "", "y"]  # insertion order, like SQLite's rowid
    assert pg["empty_before"] and not pg["empty_after"] and pg["partial"] == b"state2" and pg["partial_after"] is None
    assert pg["protocols"] == {"clean-p1": {"kind": "clean", "limit": 10}, "clean-p2": {"kind": "clean", "limit": 10}}


def test_readonly_and_url_forms(pg_server: PostgresServer, pg_url: str, tmp_path: Path) -> None:
    with Store(pg_url) as store:
        store.write_cell("r1", KEY, CellResult("").add("top1", 0.5, 10, True))
        assert store.backend == "postgresql" and str(store.path) == pg_url
    database = pg_url.rsplit("/", 1)[1]
    with Store(pg_server.socket_url(database), readonly=True) as ro:  # the unix socket in the server's folder
        assert len(ro.records()) == 1
        with pytest.raises(Exception, match="read-only transaction"):
            ro.start_run({}, {}, "cpu", 0, None)
    with Store(f"sqlite:///{tmp_path / 'u.sqlite'}") as lite:
        assert lite.backend == "sqlite" and Path(lite.path) == tmp_path / "u.sqlite"


# -- real runs -----------------------------------------------------------------------------------------
def test_runner_writes_identical_records_and_reuses_cells(pg_url: str, tmp_path: Path) -> None:
    summaries = {}
    for name, location in (("sqlite", str(tmp_path / "s.sqlite")), ("postgresql", pg_url)):
        with Store(location) as store:
            summaries[name] = _execute(_cfg(), store)
    assert summaries["sqlite"].computed == summaries["postgresql"].computed > 2
    with Store(tmp_path / "s.sqlite", readonly=True) as lite, Store(pg_url) as pg:
        _same_records(lite.records(), pg.records())
        assert _all_blobs(lite) == _all_blobs(pg) and len(_all_blobs(pg)) > 2
        assert lite.protocols() == pg.protocols()
        pd.testing.assert_frame_equal(lite.runs().drop(columns=["run_id", "created_at"]),
                                      pg.runs().drop(columns=["run_id", "created_at"]))
        again = _execute(_cfg(), pg)
        assert again.computed == 0 and again.cached == summaries["postgresql"].computed and again.run_id is None
        assert len(pg.runs()) == 1


def test_cli_reads_postgres(pg_url: str, sqlite_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["store", "migrate", str(sqlite_run), pg_url]) == 0
    capsys.readouterr()
    docs = []
    for store in (str(sqlite_run), pg_url):
        assert main(["results", "--store", store, "--format", "json"]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    monkeypatch.setenv("ROBUSTVIT_STORE", pg_url)
    assert main(["results", "--format", "json"]) == 0
    docs.append(json.loads(capsys.readouterr().out))
    assert docs[0] == docs[1] == docs[2] and docs[1]["comparisons"] and docs[1]["records"]
    assert main(["leaderboard", "--metric", "clean/top1"]) == 0
    assert "zoo_vit" in capsys.readouterr().out
    assert main(["report", "--out", str(tmp_path / "report"), "--quiet"]) == 0
    assert (tmp_path / "report" / "index.html").exists()
    policy = tmp_path / "gate.toml"
    policy.write_text('rules = ["clean/top1 >= 0", "corruption/mean_error <= baseline + 1"]\n')
    assert main(["gate", "--policy", str(policy), "--model", "zoo_vit", "--baseline-model", "zoo_resnet"]) == 0


# -- many writers at once ------------------------------------------------------------------------------
CELLS = 24
METRICS = ("top1", "error", "nll")


def _write_cells(location: str, writer: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    """One writer process: opens the store when all are ready (racing schema creation too), writes its cells."""
    barrier.wait()
    with Store(location) as store:
        run_id = store.start_run({"writer": writer}, {}, "cpu", writer, None)
        for _round in range(2):
            for i in range(CELLS // 2):  # half of the cells, overlapping the next writers' halves
                j = (writer * 6 + i) % CELLS
                key = {**KEY, "config_key": f"k{j % 3}", "protocol": f"clean-p{j % 2}",
                       "protocol_spec": {"p": j % 2}}
                result = CellResult(f"cell/{j}")
                for m in METRICS:
                    result.add(m, writer + j / 100, 10, m == "top1")
                result.outcomes = _outcomes(writer)
                store.write_cell(run_id, key, result)


@pytest.mark.parametrize("backend,writers", [("postgresql", 8), ("sqlite", 4)])
def test_concurrent_writers_lose_and_double_nothing(backend: str, writers: int, request: pytest.FixtureRequest,
                                                    tmp_path: Path) -> None:
    location = request.getfixturevalue("pg_url") if backend == "postgresql" else str(tmp_path / "s.sqlite")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers)
    procs = [ctx.Process(target=_write_cells, args=(location, w, barrier)) for w in range(writers)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * writers, f"writers failed after {time.perf_counter() - start:.1f}s"
    with Store(location, readonly=True) as store:
        records = store.records()
        counts = table_counts(store)
        blobs = _all_blobs(store)
        writer_of = {r: json.loads(c)["writer"] for r, c in store.runs()[["run_id", "config"]].itertuples(index=False)}
    assert len(records) == CELLS * len(METRICS) and counts["cells"] == CELLS
    per_metric = records.groupby([*CELL_KEY, "metric"]).size()
    assert len(per_metric) == CELLS * len(METRICS) and per_metric.max() == 1
    assert counts["outcomes"] == len(blobs) == CELLS and counts["protocols"] == 2 and counts["runs"] == writers
    for cell_key, rows in records.groupby(list(CELL_KEY)):  # each cell whole, records and outcomes from one writer
        assert rows["run_id"].nunique() == 1
        writer = writer_of[rows["run_id"].iloc[0]]
        assert np.allclose(rows["value"], writer + int(cell_key[4].split("/")[1]) / 100)
        assert decode(blobs[cell_key]).arrays["top1"].tolist() == _outcomes(writer).arrays["top1"].tolist()


# -- migration -----------------------------------------------------------------------------------------
def test_migrate_sqlite_into_postgres_and_back(pg_url: str, sqlite_run: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "migrate", str(sqlite_run), pg_url]) == 0
    first = capsys.readouterr().out
    with Store(sqlite_run, readonly=True) as lite:
        counts = table_counts(lite)
        expected_records = lite.records()
    assert f"records: {counts['records']} copied ({counts['cells']} cells), 0 already there" in first
    assert f"outcomes: {counts['outcomes']} copied, 0 already there" in first and counts["outcomes"] > 0
    assert f"runs: {counts['runs']} copied" in first and f"protocols: {counts['protocols']} copied" in first
    a, b = load_results(str(sqlite_run)), load_results(pg_url)
    assert not a.comparisons.empty
    pd.testing.assert_frame_equal(a.comparisons, b.comparisons)
    pd.testing.assert_frame_equal(a.consistency, b.consistency)
    pd.testing.assert_frame_equal(a.selected, b.selected)
    # a second migration copies nothing
    assert main(["store", "migrate", str(sqlite_run), pg_url]) == 0
    second = capsys.readouterr().out
    assert second.count(" 0 copied") == 4 and f"records: 0 copied (0 cells), {counts['records']} already there" in second
    assert main(["store", "info", "--store", pg_url, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == counts
    # and between any two stores: PostgreSQL into a new SQLite file
    back = tmp_path / "back.sqlite"
    assert main(["store", "migrate", pg_url, str(back), "--chunk", "7"]) == 0
    assert f"records: {counts['records']} copied" in capsys.readouterr().out
    with Store(back, readonly=True) as copy:
        pd.testing.assert_frame_equal(copy.records(), expected_records)
    assert main(["store", "info", "--store", str(back)]) == 0
    info = capsys.readouterr().out
    assert info.startswith(f"store {back} (sqlite)") and re.search(rf"^\s+records\s+{counts['records']}$", info, re.M)


OLD_SCHEMA = """
CREATE TABLE records (run_id TEXT NOT NULL, model TEXT NOT NULL, model_sha TEXT NOT NULL, family TEXT NOT NULL,
    params INTEGER NOT NULL, suite TEXT NOT NULL, kind TEXT NOT NULL, suite_version TEXT NOT NULL,
    config_key TEXT NOT NULL, dataset TEXT NOT NULL, cell TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, n INTEGER NOT NULL, higher_is_better INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, config TEXT NOT NULL, versions TEXT NOT NULL,
    device TEXT NOT NULL, seed INTEGER NOT NULL, git_commit TEXT);
INSERT INTO runs VALUES ('r1', '2026-01-01T00:00:00+00:00', '{}', '{}', 'cpu', 0, NULL);
INSERT INTO records VALUES ('r1', 'old_vit', 'sha', 'vit', 10, 'clean', 'clean', '1', 'k', 'digits', '', 'top1',
    0.9, 540, 1, '2026-01-01T00:00:00+00:00');
"""


def test_migrate_an_old_sqlite_store(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    assert main(["store", "migrate", str(old), pg_url, "--partial"]) == 0
    assert "records: 1 copied (1 cells)" in capsys.readouterr().out
    with Store(old, readonly=True) as lite, Store(pg_url, readonly=True) as pg:
        _same_records(lite.records(), pg.records(), ignore=())
        assert pg.records()["protocol"].tolist() == ["legacy-clean-k"]


# -- user errors ---------------------------------------------------------------------------------------
def test_bad_store_urls_are_one_line_user_errors(pg_server: PostgresServer, pg_url: str,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    closed = free_port()
    cases = [
        (f"postgresql://robustvit:s3cret@127.0.0.1:{closed}/db", f"postgresql://robustvit@127.0.0.1:{closed}/db"),
        (pg_server.url("no_such_db"), 'database "no_such_db" does not exist'),
        (f"postgresql://nobody:s3cret@127.0.0.1:{pg_server.port}/postgres", 'role "nobody" does not exist'),
        ("postgresql://robustvit@127.0.0.1:notaport/db", "postgresql://robustvit@127.0.0.1:notaport/db"),
        ("mysql://u:s3cret@127.0.0.1/db", "unsupported results store 'mysql://u@127.0.0.1/db'"),
        (pg_url, "holds no robustvit results yet"),  # an empty database, opened to read
    ]
    for url, expected in cases:
        assert main(["results", "--store", url]) == 2, url
        err = capsys.readouterr().err
        assert err.startswith("robustvit: error: ") and err.count("\n") == 1 and "s3cret" not in err, err
        assert expected in err, err
    monkeypatch.setenv("ROBUSTVIT_STORE", cases[0][0])
    assert main(["store", "info"]) == 2
    assert cases[0][1] in capsys.readouterr().err
    assert main(["store", "migrate", pg_url, cases[0][0]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3cret" not in err


def test_a_role_that_may_not_create_tables(pg_server: PostgresServer, pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS plain")
        conn.execute("CREATE ROLE plain LOGIN")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # the default from PostgreSQL 15 on
    plain = pg_url.replace(f"//{SUPERUSER}@", "//plain@")
    with pytest.raises(UserError, match=r"cannot create the results tables in 'postgresql://plain@.*permission denied"):
        Store(plain)
