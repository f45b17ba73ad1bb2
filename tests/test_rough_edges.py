"""The rough edges a new user hit past the quickstart: each one fails here without its fix."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustvit.cli import main
from robustvit.config import ModelConfig, RunConfig, build_suite, load_suite_file
from robustvit.errors import UserError
from robustvit.runner import Event, execute
from robustvit.store import Store

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _folder(root: Path, classes: list[str], per_class: int = 2, size: int = 32) -> Path:
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            pixels = np.full((size, size, 3), (40 * i + 10 * j) % 255, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{j}.png")
    return root


# -- 2. class spaces ---------------------------------------------------------------------------------
def test_class_space_mismatch_is_one_line_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "s.sqlite"
    assert main(["eval", "--model", "timm:test_vit", "--no-pretrained", "--suite", "clean", "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 1000 outputs but dataset 'digits' has 10 classes" in err[0]
    assert "classes =" in err[0] and "subset =" in err[0] and "--num-classes 10" in err[0]
    assert not store.exists()
    three = _folder(tmp_path / "three", ["a", "b", "c"])
    assert main(["eval", "--model", "zoo_vit", "--suite", "clean", "--data", str(three), "--store", str(store)]) == 2
    assert "has 10 outputs but dataset" in capsys.readouterr().err and not store.exists()
    # a head rebuilt for the user's classes is accepted
    assert main(["eval", "--model", "timm:test_vit", "--no-pretrained", "--num-classes", "3", "--suite", "clean",
                 "--data", str(three), "--store", str(store), "--quiet"]) == 0


# -- 4. the shipped gate example after the quickstart ----------------------------------------------------
def test_every_rule_of_the_example_policy_evaluates_after_the_quickstart(tmp_path: Path) -> None:
    from robustvit.gate import load_policy, run_gate

    cfg = load_suite_file(ROOT / "suites" / "quickstart.toml")
    for s in cfg.suites:  # the quickstart's suites, on fewer images and severities
        s.limit = 16
        if s.suite.kind == "corruption":
            s.suite = build_suite(s.name, {**s.suite.opts, "severities": [1]}, s.name).suite
    cfg.report = None
    with Store(tmp_path / "s.sqlite") as store:
        execute(cfg, store, show_progress=False)
        records = store.records()
    result = run_gate(load_policy(ROOT / "suites" / "gate.toml"), records)
    assert result.verdicts and all(v.status in ("pass", "fail") for v in result.verdicts), \
        [v.message for v in result.verdicts if v.status == "error"]
    assert {v.rule.path for v in result.verdicts} >= {"clean/top1", "corruption/mean_error", "ood/far/auroc",
                                                      "adversarial/pgd-linf/eps=4/255/robust_acc"}


# -- 5. a below-chance detector on the sanity set is flagged ------------------------------------------------
def test_below_chance_on_the_sanity_set_is_a_warning() -> None:
    from robustvit.results import analyse
    from robustvit.results.export import summary_text
    from robustvit.suites.ood import OODSuite

    suite = OODSuite(detectors=["gen", "msp"], near=[], far=[], sanity={"noise": "ood_noise"})
    rows = []
    for det, auroc in (("gen", 0.37), ("msp", 0.8)):
        for metric, value in (("auroc", auroc), ("aupr_in", 0.5), ("aupr_out", 0.5), ("fpr95", 0.9), ("id_acc", 1.0)):
            rows.append({"cell": f"sanity/noise/{det}", "metric": metric, "value": value, "n": 100})
    flags = {r.cell: {m.metric: m.value for m in r.metrics} for r in suite.aggregate(pd.DataFrame(rows))}
    assert flags["sanity/gen"]["flag_below_chance"] == 1.0 and flags["sanity/msp"]["flag_below_chance"] == 0.0
    records = pd.DataFrame([{"run_id": "r", "model": "zoo_resnet", "model_sha": "s", "family": "cnn", "params": 1,
                             "suite": "ood", "kind": "ood", "suite_version": "2", "config_key": "k", "protocol": "p",
                             "dataset": "digits", "cell": "sanity/gen", "metric": "flag_below_chance", "value": 1.0,
                             "ci_low": np.nan, "ci_high": np.nan, "n": 100, "higher_is_better": False,
                             "created_at": "2026-01-01"}])
    text = summary_text(analyse(records))
    assert "WARNING: 1 sanity check(s) raised" in text and "below chance" in text and "ood/sanity/gen" in text


# -- 7. a closed pipe is normal use ----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["list", "timm", "*"], ["list", "models"]])
def test_closed_pipe_exits_quietly(argv: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "robustvit", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


# -- 9. everything a suite file names is checked before the first cell --------------------------------------
def test_a_bad_class_list_in_the_second_suite_fails_before_the_first(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", [str(d) for d in range(10)], per_class=1)
    (tmp_path / "classes.txt").write_text("\n".join(str(d) for d in range(9)) + "\n")  # one class missing
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(f'[run]\ndevice = "cpu"\n[[models]]\nspec = "zoo_resnet"\n[suites.clean]\n'
                          f'[suites.other]\nsuite = "clean"\ndata = {{ path = "{data}", classes = "{tmp_path / "classes.txt"}" }}\n')
    store = tmp_path / "s.sqlite"
    assert main(["run", str(suite_file), "--store", str(store)]) == 2
    assert not store.exists()  # the first suite computed nothing


def test_missing_ood_set_and_unknown_baseline_fail_before_any_work(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    cfg = RunConfig(models=[ModelConfig("zoo_resnet")], device="cpu", limit=8, suites=[
        build_suite("clean", {}, "clean"),
        build_suite("ood", {"detectors": ["msp"], "near": [str(tmp_path / "missing")], "far": [], "sanity": []}, "ood")])
    with Store(store) as s, pytest.raises(UserError, match="does not exist"):
        execute(cfg, s, show_progress=False)
    cfg = RunConfig(models=[ModelConfig("zoo_resnet")], device="cpu", limit=8, suites=[
        build_suite("clean", {}, "clean"), build_suite("corruption", {"baseline": "nobody"}, "corruption")])
    with Store(store) as s, pytest.raises(UserError, match="baseline model 'nobody' is neither in this run nor stored"):
        execute(cfg, s, show_progress=False)
    with Store(store) as s:
        assert s.records().empty


# -- 10. one dataset-spec parser ----------------------------------------------------------------------------
def test_a_folder_in_the_working_directory_is_a_dataset_everywhere(tmp_path: Path, monkeypatch) -> None:
    from robustvit.data.spec import parse
    from robustvit.suites.ood import OODSuite

    _folder(tmp_path / "imgs", [str(d) for d in range(10)], per_class=1)
    monkeypatch.chdir(tmp_path)
    assert parse("imgs").path == Path("imgs") and parse("digits").name == "digits"
    assert parse("digits:train").split == "train" and parse("./imgs").is_folder
    with pytest.raises(UserError, match="no folder 'imgz' exists either"):
        parse("imgz")
    suite_file = tmp_path / "s.toml"
    suite_file.write_text('[run]\ndata = "imgs"\ndevice = "cpu"\n[[models]]\nspec = "zoo_resnet"\n[suites.clean]\n')
    assert main(["run", str(suite_file), "--store", str(tmp_path / "s.sqlite"), "--quiet"]) == 0
    assert OODSuite(detectors=["msp"], near=["imgs"], far=[], sanity=[]).sets["near"]["imgs"] == \
        {"path": "imgs", "unlabelled": True}


# -- 11. duplicate model names --------------------------------------------------------------------------------
def test_duplicate_model_names_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    suite_file = tmp_path / "s.toml"
    suite_file.write_text('[[models]]\nspec = "zoo_vit"\nname = "a"\n[[models]]\nspec = "zoo_resnet"\nname = "a"\n'
                          '[suites.clean]\n')
    assert main(["run", str(suite_file), "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "#1 and #2 are both named 'a'" in capsys.readouterr().err


# -- 12, 13. leaderboard page and report origin ------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edges") / "a.sqlite"
    with Store(path) as store:
        cfg = RunConfig(models=[ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")], device="cpu", limit=32,
                        suites=[build_suite("clean", {}, "clean"),
                                build_suite("corruption", {"corruptions": ["contrast", "fog"], "severities": [1, 2]},
                                            "corruption")])
        events: list[Event] = []
        execute(cfg, store, show_progress=False, on_event=events.append)
        (path.parent / "events.json").write_text(json.dumps([vars(e) for e in events]))
    return path


def test_leaderboard_page_and_columns(small_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "board.html"
    assert main(["leaderboard", "--store", str(small_store), "--metric", "clean/top1", "--format", "html",
                 "--out", str(out)]) == 0
    html = out.read_text()
    assert "<h1>robustvit leaderboard" in html and "&lt;h1&gt;" not in html
    for fmt in ("md", "csv"):
        assert main(["leaderboard", "--store", str(small_store), "--metric", "clean/top1", "--format", fmt]) == 0
        text = capsys.readouterr().out
        assert "clean/top1" in text and "clean_top1" not in text  # the ranking metric once


def test_a_report_never_silently_replaces_another_stores(small_store: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "b.sqlite"
    other.write_bytes(small_store.read_bytes())
    out = tmp_path / "rep"
    assert main(["report", "--store", str(small_store), "--out", str(out), "--quiet"]) == 0
    assert main(["report", "--store", str(small_store), "--out", str(out), "--quiet"]) == 0  # same store: fine
    assert main(["report", "--store", str(other), "--out", str(out), "--quiet"]) == 2
    assert "holds a report of another store" in capsys.readouterr().err
    assert main(["report", "--store", str(other), "--out", str(out), "--quiet", "--force"]) == 0
    assert str(other.resolve()) in (out / ".robustvit-report.json").read_text()
    # a suite file's [report] beside it instead of over it
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(f'[run]\ndevice = "cpu"\nlimit = 16\n[[models]]\nspec = "zoo_resnet"\n[suites.clean]\n'
                          f'[report]\nout = "{out}"\n')
    capsys.readouterr()
    assert main(["run", str(suite_file), "--store", str(tmp_path / "c.sqlite"), "--quiet"]) == 0
    assert f"report written to {out}-c" in capsys.readouterr().out and (tmp_path / "rep-c" / "index.html").exists()


# -- 14. per-cell times add up -------------------------------------------------------------------------------
def test_cell_times_add_up_and_shared_work_is_separate(small_store: Path) -> None:
    events = json.loads((small_store.parent / "events.json").read_text())
    for model in ("zoo_vit", "zoo_resnet"):
        cells = [e for e in events if e["kind"] == "cell" and e["model"] == model and e["suite"] == "corruption"]
        (suite,) = [e for e in events if e["kind"] == "suite" and e["model"] == model and e["suite"] == "corruption"]
        total = sum(e["seconds"] for e in cells)
        assert total <= suite["seconds"] + 1e-6
        generated = [e["seconds"] for e in cells if "/" in e["cell"]]
        assert max(generated) < 0.8 * sum(generated)  # no cell is billed for the others' work


# -- 19. one compatibility import ----------------------------------------------------------------------------
def test_tomllib_is_imported_in_one_place() -> None:
    offenders = []
    for path in (ROOT / "robustvit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if "tomllib" in names or "tomli" in names:
                offenders.append(str(path.relative_to(ROOT)))
    assert set(offenders) == {"robustvit/_compat.py"}


# -- 3. random weights are seeded by the run seed ------------------------------------------------------------
def test_random_weights_reuse_their_stored_cells(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["eval", "--model", "timm:test_resnet", "--no-pretrained", "--num-classes", "10", "--suite", "clean",
            "--limit", "16", "--store", str(tmp_path / "s.sqlite"), "--quiet"]
    assert main(args) == 0
    assert "computed 1 cells" in capsys.readouterr().err
    assert main(args) == 0
    assert "computed 0 cells, reused 1 stored cells" in capsys.readouterr().err
    assert main([*args, "--seed", "1"]) == 0  # another seed: other weights, another checkpoint hash
    assert "computed 1 cells" in capsys.readouterr().err
    with Store(tmp_path / "s.sqlite", readonly=True) as store:
        assert store.records()["model_sha"].nunique() == 2
