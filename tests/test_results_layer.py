"""The results layer on real runs: metrics recomputed from stored outcomes, protocol grouping, one
JSON document and one CSV table, old stores."""

from __future__ import annotations

import io
import json
import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from robustvit.cli import main
from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.results import OutcomeSource, analyse, load_results
from robustvit.results.bootstrap import recompute
from robustvit.runner import execute
from robustvit.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

SUITES = {
    "clean": {},
    "corruption": {"preset": "cifar10_c", "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3]},
    "adversarial": {"attacks": [{"attack": "pgd-linf", "eps": ["2/255"], "steps": 3},
                                {"attack": "deepfool-l2", "eps": [0.5]}], "checks": False},
    "ood": {"detectors": ["msp", "energy", "knn"], "far": ["ood_faces", "ood_textures"], "near": ["ood_letters"],
            "sanity": []},
}


def _cfg(models: list[str], suites: dict[str, dict], limit: int | None = 64) -> RunConfig:
    return RunConfig(models=[ModelConfig(m) for m in models], limit=limit, batch_size=32, device="cpu",
                     suites=[build_suite(name, dict(opts), name) for name, opts in suites.items()])


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("results") / "s.sqlite"
    with Store(path) as store:
        execute(_cfg(["zoo_vit", "zoo_resnet"], SUITES), store, show_progress=False)
        # the same ViT on another image subset, and on another corruption preset: other protocols
        execute(_cfg(["zoo_vit"], {"clean": {}}, limit=32), store, show_progress=False)
        execute(_cfg(["zoo_vit"], {"corruption": {**SUITES["corruption"], "preset": "imagenet_c"}}), store,
                show_progress=False)
    return path


def test_metrics_recomputed_from_outcomes(store_file: Path) -> None:
    seen: dict[str, set[str]] = {}
    with Store(store_file, readonly=True) as store:
        records = store.records()
        source = OutcomeSource.from_store(store)
        for _, row in records.iterrows():
            outcomes, lookup = source.for_row(row)
            if outcomes is None:
                continue
            value = recompute(outcomes, row["metric"], lookup)
            if math.isnan(value):
                assert row["metric"] in ("median_norm",), f"{row['suite']}/{row['cell']}/{row['metric']} not recomputable"
                continue
            assert value == pytest.approx(row["value"], abs=1e-6), f"{row['suite']}/{row['cell']}/{row['metric']}"
            seen.setdefault(row["kind"], set()).add(row["metric"])
    assert {"top1", "top5", "nll", "ece"} <= seen["clean"]
    assert {"error", "top1", "mean_error"} <= seen["corruption"]
    assert {"clean_acc", "robust_acc", "success_rate", "found_rate"} <= seen["adversarial"]
    assert {"auroc", "aupr_in", "aupr_out", "fpr95", "id_acc"} <= seen["ood"]


def test_every_interval_brackets_its_value(store_file: Path) -> None:
    records = Store(store_file, readonly=True).records()
    have = records.dropna(subset=["ci_low", "ci_high"])
    assert len(have) > 0.9 * len(records)  # all but the medians of minimum-norm attacks and the flags
    none = set(records.loc[records["ci_low"].isna(), "metric"])
    assert {m for m in none if not m.startswith("flag_")} <= {"median_norm"}
    inside = (have["ci_low"] <= have["value"] + 1e-9) & (have["value"] <= have["ci_high"] + 1e-9)
    assert inside.all(), have.loc[~inside, ["suite", "cell", "metric", "value", "ci_low", "ci_high"]]


def test_protocols_are_never_averaged(store_file: Path) -> None:
    res = load_results(str(store_file))
    sel = res.selected
    vit_clean = sel[(sel["model"] == "zoo_vit") & (sel["path"] == "clean/top1")]
    assert len(vit_clean) == 2 and vit_clean["protocol"].nunique() == 2  # both kept, apart
    full = vit_clean.loc[vit_clean["n"] == 64]
    (row,) = res.comparisons[res.comparisons["metric"] == "clean/top1"].to_dict(orient="records")
    assert row["protocol"] == full["protocol"].item()  # compared within the protocol both models share
    assert row["vit"] == pytest.approx(full["value"].item()) and row["vit_models"] == 1
    # the imagenet_c preset is another protocol: its mean error never enters the cifar10_c comparison
    me = sel[sel["path"] == "corruption/mean_error"]
    assert me["protocol"].nunique() == 2
    comp = res.comparisons[res.comparisons["metric"] == "corruption/mean_error"]
    assert len(comp) == 1 and comp["protocol_label"].item().find("preset=cifar10_c") >= 0
    labels = set(me["protocol_label"])
    assert any("preset=imagenet_c" in label for label in labels)
    titles = [title for title, _ in __import__("robustvit.results.export", fromlist=["x"]).group_tables(res)]
    assert sum("corruption" in t for t in titles) == 2 and sum(t.startswith("clean") for t in titles) == 2


def test_leaderboard_ranks_within_one_protocol(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", "--store", str(store_file), "--metric", "corruption/mean_error",
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["model"] for r in rows) == ["zoo_resnet", "zoo_vit"]  # the protocol with the most models
    assert all(r["ci_low"] <= r["corruption/mean_error"] <= r["ci_high"] for r in rows)
    assert main(["leaderboard", "--store", str(store_file), "--metric", "corruption/mean_error", "--format", "md"]) == 0
    assert "ranked separately with --protocol: corruption-" in capsys.readouterr().out


def test_results_json_is_one_document_and_csv_one_table(store_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "--store", str(store_file), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == 1 and set(doc) == {"schema", "records", "comparisons", "error_consistency"}
    rec = doc["records"][0]
    assert {"model", "family", "protocol", "metric", "value", "ci_low", "ci_high", "n", "higher_is_better"} <= set(rec)
    assert rec["metric"].count("/") >= 1
    comp = doc["comparisons"][0]
    assert {"metric", "protocol", "vit", "cnn", "diff", "ci_low", "ci_high", "p_value", "n", "verdict"} <= set(comp)
    assert all(c["verdict"] in ("vit", "cnn", "tie") for c in doc["comparisons"])
    assert main(["results", "--store", str(store_file), "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert "\n\n" not in text.strip()
    table = pd.read_csv(io.StringIO(text))
    assert len(table) == len(doc["records"]) and list(table.columns[:5]) == ["model", "family", "protocol",
                                                                           "protocol_label", "metric"]


def test_terminal_summary_shows_intervals_n_and_ties(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    assert main(["eval", "--model", "zoo_vit", "--model", "zoo_resnet", "--suite", "clean", "--store", str(store),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    line = next(li for li in out.splitlines() if li.strip().startswith("clean/top1"))
    # the zoo models differ by no image on clean digits: an interval around 0 and a tie
    assert " 540 " in line and "0.9963 [0.98" in line and line.rstrip().endswith("tie")
    assert "ViT − CNN [95% CI]" in out and "error consistency" in out


OLD_SCHEMA = """
CREATE TABLE records (
    run_id TEXT NOT NULL, model TEXT NOT NULL, model_sha TEXT NOT NULL, family TEXT NOT NULL,
    params INTEGER NOT NULL, suite TEXT NOT NULL, kind TEXT NOT NULL, suite_version TEXT NOT NULL,
    config_key TEXT NOT NULL, dataset TEXT NOT NULL, cell TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, n INTEGER NOT NULL, higher_is_better INTEGER NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, config TEXT NOT NULL, versions TEXT NOT NULL,
    device TEXT NOT NULL, seed INTEGER NOT NULL, git_commit TEXT
);
CREATE TABLE partial (cache_key TEXT NOT NULL, cell TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY (cache_key, cell));
"""


def _old_store(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.execute("INSERT INTO runs VALUES ('r1', '2026-01-01T00:00:00+00:00', '{}', '{}', 'cpu', 0, NULL)")
    for model, fam, top1, mce in (("old_vit", "vit", 0.9, 0.8), ("old_cnn", "cnn", 0.95, 0.7)):
        for suite, metric, value, hib in (("clean", "top1", top1, 1), ("corruption", "mce", mce, 0)):
            conn.execute("INSERT INTO records VALUES ('r1', ?, ?, ?, 10, ?, ?, '1', 'k', 'digits', '', ?, ?, 540, ?, "
                         "'2026-01-01T00:00:00+00:00')", (model, model + "sha", fam, suite, suite, metric, value, hib))
    conn.commit()
    conn.close()
    return path


def test_old_store_opens_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _old_store(tmp_path / "old.sqlite")
    with Store(path, readonly=True) as store:  # read-only: nothing is written, missing columns read as NULL
        df = store.records()
        assert df["protocol"].tolist()[0] == "legacy-clean-k" and df["ci_low"].isna().all()
    assert main(["results", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(no interval)" in out and "tie" in out
    assert main(["results", "--store", str(path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["records"][0]["ci_low"] is None and {c["verdict"] for c in doc["comparisons"]} == {"tie"}
    assert main(["leaderboard", "--store", str(path), "--metric", "clean/top1"]) == 0
    assert main(["report", "--store", str(path), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    policy = tmp_path / "gate.toml"
    policy.write_text('rules = ["clean/top1 >= 0.5", "corruption/mce <= baseline + 0.2"]\n')
    assert main(["gate", "--store", str(path), "--policy", str(policy), "--model", "old_vit",
                 "--baseline-model", "old_cnn"]) == 0
    capsys.readouterr()
    # opened for writing, the store gains the new columns and tables and takes new cells
    with Store(path) as store:
        columns = {r[1] for r in store._conn.execute("PRAGMA table_info(records)")}
        assert {"protocol", "ci_low", "ci_high"} <= columns
        execute(_cfg(["zoo_resnet"], {"clean": {}}, limit=16), store, show_progress=False)
        assert store.records()["protocol"].str.startswith("clean-").sum() >= 1


def test_analyse_without_outcomes_or_records() -> None:
    empty = analyse(pd.DataFrame(columns=["run_id", "model", "model_sha", "family", "params", "suite", "kind",
                                          "suite_version", "config_key", "protocol", "dataset", "cell", "metric",
                                          "value", "ci_low", "ci_high", "n", "higher_is_better", "created_at"]))
    assert empty.comparisons.empty and empty.selected.empty and empty.consistency.empty
