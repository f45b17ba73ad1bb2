"""Leaderboards from a real store with several models and runs, in all four formats."""

from __future__ import annotations

import csv
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from robustvit.cli import main
from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.report import FORMATS, format_leaderboard, leaderboard
from robustvit.store import Store

EVIL = "vit<b>|x</b>"


def _write(store: Store, run: str, model: str, sha: str, family: str, params: int, suite: str, cell: str,
           metrics: dict[str, tuple[float, bool]], config_key: str = "k") -> None:
    key = {"model": model, "model_sha": sha, "family": family, "params": params, "suite": suite,
           "suite_version": "1", "config_key": config_key, "dataset": "digits"}
    result = CellResult(cell)
    for name, (value, hib) in metrics.items():
        result.add(name, value, 100, hib)
    store.write_cell(run, key, result)


@pytest.fixture
def records(tmp_path: Path) -> pd.DataFrame:
    """Run 1: four models; run 2: vit_a re-evaluated with another config (better mCE), a new cnn_b checkpoint.

    (The store replaces a cell recomputed with the same checkpoint and config, so a second run of
    the same model keeps its own rows only when its config differs.)
    """
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        r1 = store.start_run({}, {}, "cpu", 0, None)
        for model, sha, fam, params, top1, mce in [
            ("vit_a", "a1", "vit", 1000, 0.90, 0.80), ("cnn_b", "b1", "cnn", 2000, 0.95, 0.70),
            ("hyb_c", "c1", "hybrid", 3000, 0.93, 0.70), (EVIL, "d1", "vit", 4000, 0.80, 0.90),
        ]:
            _write(store, r1, model, sha, fam, params, "clean", "", {"top1": (top1, True)})
            _write(store, r1, model, sha, fam, params, "corruption", "",
                   {"mce": (mce, False), "relative_mce": (mce / 2, False)})
            _write(store, r1, model, sha, fam, params, "adversarial", "pgd-linf/eps=4/255",
                   {"robust_acc": (top1 - 0.3, True)})
            _write(store, r1, model, sha, fam, params, "adversarial", "pgd-linf/eps=8/255",
                   {"robust_acc": (top1 - 0.5, True)})
        r2 = store.start_run({}, {}, "cpu", 0, None)
        _write(store, r2, "vit_a", "a1", "vit", 1000, "corruption", "", {"mce": (0.60, False),
                                                                       "relative_mce": (0.3, False)}, "k2")
        _write(store, r2, "cnn_b", "b2", "cnn", 2000, "corruption", "", {"mce": (0.75, False),
                                                                       "relative_mce": (0.4, False)})
        return store.records()


def test_latest_run_ranked_lower_is_better_with_ties(records: pd.DataFrame) -> None:
    # vit_a's run-2 mCE has another config, hence another protocol: the default board (the protocol with
    # the most models) ranks its run-1 value, and the other protocol is listed, not mixed in
    board = leaderboard(records, ["mce"], suite="corruption")
    assert board["model"].tolist() == ["hyb_c", "cnn_b", "vit_a", EVIL]
    assert board["corruption/mce"].tolist() == [0.70, 0.75, 0.80, 0.90]
    assert board["rank"].tolist() == [1, 2, 3, 4]
    assert board.attrs["protocol"] == "legacy-corruption-k"
    assert list(board.attrs["other_protocols"]) == ["legacy-corruption-k2"]
    # cnn_b's new checkpoint is the current one: its mCE, sha and run; clean accuracy only from the old one is gone
    cnn = board.set_index("model").loc["cnn_b"]
    assert cnn["model_sha"] == "b2" and math.isnan(cnn["clean_top1"])
    assert cnn["run_id"] == records[records["model_sha"] == "b2"]["run_id"].iloc[0]  # mce came from run 2
    vit = board.set_index("model").loc["vit_a"]
    assert vit["clean_top1"] == 0.90 and vit["params"] == 1000 and vit["family"] == "vit"
    assert list(board.columns) == ["rank", "model", "corruption/mce", "ci_low", "ci_high", "n", "family", "params",
                                   "clean_top1", "model_sha", "run_id", "date"]
    other = leaderboard(records, ["mce"], suite="corruption", protocol="legacy-corruption-k2")
    assert other["model"].tolist() == ["vit_a"] and other["corruption/mce"].tolist() == [0.60]
    with pytest.raises(UserError, match="has no record of corruption/mce"):
        leaderboard(records, ["mce"], suite="corruption", protocol="clean-")


def test_all_runs_ties_share_a_rank(records: pd.DataFrame) -> None:
    board = leaderboard(records, ["corruption/mce"], all_runs=True)
    assert len(board) == 5  # 4 models in run 1, cnn_b in run 2 (vit_a's run 2 is another protocol)
    by = board.groupby("corruption/mce")["rank"].apply(set).to_dict()
    assert by[0.70] == {1}  # cnn_b (run 1) and hyb_c tie at 0.70, both rank 1 ...
    assert board["rank"].tolist() == [1, 1, 3, 4, 5]  # ... and the next rank is 3 (method="min")


def test_higher_is_better_and_several_metrics(records: pd.DataFrame) -> None:
    board = leaderboard(records, ["adversarial/pgd-linf/eps=4/255/robust_acc", "corruption/mce", "clean/top1"])
    assert board["model"].tolist() == ["hyb_c", "vit_a", EVIL, "cnn_b"]  # higher robust accuracy first
    assert board["rank"].tolist()[:3] == [1, 2, 3]
    assert pd.isna(board["rank"].iloc[-1])  # cnn_b's current checkpoint has no attack rows: unranked, last
    assert board.set_index("model").loc["cnn_b", "corruption/mce"] == 0.75
    assert board.attrs["higher_is_better"] == {"adversarial/pgd-linf/eps=4/255/robust_acc": True,
                                               "corruption/mce": False, "clean/top1": True}


def test_wildcards_and_family_filter(records: pd.DataFrame) -> None:
    board = leaderboard(records, ["pgd-linf/*/robust_acc"], suite="adversarial", family="vit")
    assert board.attrs["metrics"] == ["adversarial/pgd-linf/eps=4/255/robust_acc",
                                      "adversarial/pgd-linf/eps=8/255/robust_acc"]
    assert set(board["family"]) == {"vit"} and board["model"].tolist() == ["vit_a", EVIL]


@pytest.mark.parametrize("bad, message", [
    ({"metrics": ["mcee"], "suite": "corruption"}, "did you mean 'corruption/mce'"),
    ({"metrics": ["mce"], "suite": "nosuite"}, "no records of suite 'nosuite'"),
    ({"metrics": ["corruption/mce"], "family": "transformer"}, "unknown family 'transformer'"),
    ({"metrics": []}, "no metric given"),
])
def test_user_errors(records: pd.DataFrame, bad: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        leaderboard(records, bad.pop("metrics"), **bad)


def test_markdown_format(records: pd.DataFrame) -> None:
    text = format_leaderboard(leaderboard(records, ["mce", "relative_mce"], suite="corruption"), "md")
    lines = text.splitlines()
    assert lines[0].startswith("**robustvit leaderboard: corruption/mce (lower is better), corruption/relative_mce "
                               "(lower is better) · protocol corruption · legacy")
    assert lines[2].startswith("| rank | model | corruption/mce | corruption/relative_mce | ci_low | ci_high | n |")
    assert lines[4].startswith("| 1 | hyb_c | 0.7 | 0.35 | — | — | 100 | hybrid | 3000 | 0.93 | c1 |")
    assert "Other protocols of this metric, ranked separately with --protocol: legacy-corruption-k2" in text
    assert "| 4 | vit&lt;b>\\|x&lt;/b> |" in text  # pipes and HTML escaped
    assert all(line.count(" | ") == lines[2].count(" | ") for line in lines[2:] if line.startswith("| "))


def test_csv_format_round_trips(records: pd.DataFrame) -> None:
    board = leaderboard(records, ["mce"], suite="corruption")
    back = pd.read_csv(io.StringIO(format_leaderboard(board, "csv")))
    assert back["model"].tolist() == board["model"].tolist()
    assert back["corruption/mce"].tolist() == board["corruption/mce"].tolist()
    assert next(csv.reader(io.StringIO(format_leaderboard(board, "csv"))))[:3] == ["rank", "model", "corruption/mce"]


def test_json_format(records: pd.DataFrame) -> None:
    board = leaderboard(records, ["mce"], suite="corruption")
    rows = json.loads(format_leaderboard(board, "json"))
    assert [r["model"] for r in rows] == board["model"].tolist()
    assert rows[0] == {**rows[0], "rank": 1, "corruption/mce": 0.7, "params": 3000, "family": "hybrid"}
    cnn = next(r for r in rows if r["model"] == "cnn_b")
    assert cnn["clean_top1"] is None  # NaN -> null, valid JSON


class _Table(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_format(records: pd.DataFrame) -> None:
    board = leaderboard(records, ["mce"], suite="corruption")
    page = format_leaderboard(board, "html")
    assert page.startswith("<!DOCTYPE html>")
    parsed = _Table()
    parsed.feed(page)
    assert parsed.rows[0][:3] == ["rank", "model", "corruption/mce"]
    assert [r[1] for r in parsed.rows[1:]] == board["model"].tolist()
    assert parsed.rows[-1][1] == EVIL and "b" not in parsed.tags  # the name is text, not markup


def test_unknown_format(records: pd.DataFrame) -> None:
    with pytest.raises(UserError, match="allowed: md, csv, html, json"):
        format_leaderboard(leaderboard(records, ["corruption/mce"]), "xlsx")


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_all_formats(records: pd.DataFrame, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    args = ["leaderboard", "--store", str(store), "--suite", "corruption", "--metric", "mce", "--format", fmt]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed == format_leaderboard(leaderboard(records, ["mce"], suite="corruption"), fmt)
    out = tmp_path / "boards" / f"board.{fmt}"
    assert main([*args, "--out", str(out), "--all-runs", "--family", "vit"]) == 0
    assert out.read_text(encoding="utf-8") == format_leaderboard(
        leaderboard(records, ["mce"], suite="corruption", all_runs=True, family="vit"), fmt)


def test_cli_user_errors_exit_2(records: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "s.sqlite")
    assert main(["leaderboard", "--store", store, "--suite", "corruption", "--metric", "mcee"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustvit: error: unknown metric 'corruption/mcee'") and err.count("\n") == 1
    assert main(["leaderboard", "--store", str(tmp_path / "nope.sqlite"), "--metric", "clean/top1"]) == 2
    assert main(["leaderboard", "--store", store, "--metric", "clean/top1", "--model", "nobody"]) == 2
