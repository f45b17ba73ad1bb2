"""The command line: a real evaluation, caching, listings, and user errors (one line, exit 2, nothing written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustvit.cli import main


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real ``python -m robustvit`` process (exit code, stderr as a user sees them)."""
    env = {**os.environ, "ROBUSTVIT_NO_PLUGINS": "1"}
    return subprocess.run([sys.executable, "-m", "robustvit", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def _main(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``robustvit.cli.main`` in this process (fast), with what it prints captured."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(args))
            except SystemExit as exc:  # argparse's own errors
                rc = exc.code
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def test_eval_then_reuse_then_results(store_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["eval", "--model", "zoo_vit", "--model", "zoo_resnet", "--suite", "clean", "--limit", "100",
            "--store", str(store_path), "--device", "cpu"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "zoo_vit [vit]" in out and "zoo_resnet [cnn]" in out and "ViT − CNN [95% CI]" in out and "top1" in out
    assert "computed 2 cells" in err
    assert main(args) == 0
    out2, err2 = capsys.readouterr()
    assert "computed 0 cells, reused 2 stored cells (no recomputation)" in err2
    assert out2 == out
    assert main(["results", "--store", str(store_path), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert csv.splitlines()[0].startswith("model,family,protocol,protocol_label,metric,value,ci_low,ci_high,n,")
    assert main(["results", "--store", str(store_path), "--format", "json", "--model", "zoo_vit"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)["records"]
    assert {r["metric"] for r in rows} == {"clean/top1", "clean/top5", "clean/nll", "clean/ece"}
    assert all(r["n"] == 100 and r["ci_low"] <= r["value"] <= r["ci_high"] for r in rows)


def test_run_suite_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    suite_file = tmp_path / "s.toml"
    suite_file.write_text('[run]\nlimit = 50\ndevice = "cpu"\n[[models]]\nspec = "zoo_resnet"\nname = "cnn-a"\n'
                          '[suites.clean]\n[suites.clean_train]\nsuite = "clean"\ndata = "digits:train"\n')
    store = tmp_path / "r.sqlite"
    assert main(["run", str(suite_file), "--store", str(store), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "## clean" in out and "## clean_train" in out and "| cnn-a [cnn]" in out


def test_list_commands(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "models"]) == 0
    assert "zoo_vit" in capsys.readouterr().out
    assert main(["list", "suites", "cl*"]) == 0
    assert capsys.readouterr().out.startswith("clean")
    assert main(["list", "timm", "test_vi*"]) == 0
    assert "test_vit" in capsys.readouterr().out


@pytest.mark.parametrize(("preset", "expected"), [(None, "1"), ("0", "0")])
def test_cli_puts_big_tensors_on_huge_pages_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch, preset, expected,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from robustvit.cli import THP_ENV

    if preset is None:
        monkeypatch.delenv(THP_ENV, raising=False)
    else:
        monkeypatch.setenv(THP_ENV, preset)
    assert main(["list", "suites"]) == 0
    assert os.environ[THP_ENV] == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--model", "zoo_vitt", "--suite", "clean"], "unknown model 'zoo_vitt'; did you mean 'zoo_vit'"),
        (["eval", "--model", "zoo_vit", "--suite", "claen"], "unknown suite 'claen'; did you mean 'clean'"),
        (["eval", "--model", "timm:test_vit", "--checkpoint", "nope.pth", "--suite", "clean"], "checkpoint 'nope.pth' does not exist"),
        (["eval", "--model", "zoo_vit", "--suite", "clean", "--data", "/no/such/folder"], "dataset folder '/no/such/folder' does not exist"),
        (["eval", "--model", "zoo_vit", "--suite", "clean", "-o", "bogus=1"], "unknown option 'bogus'"),
        (["eval", "--model", "zoo_vit", "--suite", "clean", "--limit", "0"], "limit must be positive"),
        (["eval", "--model", "zoo_vit", "--suite", "clean", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["run", "missing.toml"], "suite file 'missing.toml' does not exist"),
        (["results"], "does not exist (run an evaluation first"),
    ],
)
def test_user_errors_are_one_line_exit_2_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    store = tmp_path / "store.sqlite"
    result = _main(*args, "--store", str(store), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustvit: error:"), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not store.exists() and not (tmp_path / "robustvit-results.sqlite").exists()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[run\n", "not valid TOML"),
        ("[run]\nseeed = 1\n", "[run]: unknown key 'seeed' (allowed: amp, batch_size, data, device, executor, limit, ray_address, ray_workers, seed, shard_images, workers)"),
        ("[run]\nseed = 'x'\n", "key 'seed' must be int"),
        ("[[models]]\nname = 'x'\n", "[[models]] #1: needs a 'spec' key"),
        ("[[models]]\nspec = 'zoo_vit'\nfamliy = 'vit'\n[suites.clean]\n", "unknown key 'famliy'"),
        ("[[models]]\nspec = 'zoo_vit'\n[suites.clean]\nsuite = 'nope'\n", "[suites.clean]: unknown suite 'nope'"),
        ("[[models]]\nspec = 'zoo_vit'\n", "no suites to run"),
        ("[[models]]\nspec = 'zoo_vit'\nfamily = 'mlp'\n[suites.clean]\n", "unknown model family 'mlp' (allowed: vit, cnn, hybrid)"),
    ],
)
def test_malformed_suite_files(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = _main("run", str(path), "--store", str(tmp_path / "s.sqlite"), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], result.stderr
    assert not (tmp_path / "s.sqlite").exists()


def test_bad_checkpoint_and_corrupt_image_fail_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 20)
    store = tmp_path / "s.sqlite"
    result = _cli("eval", "--model", "zoo_vit", "--checkpoint", str(bad), "--suite", "clean", "--store", str(store))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "not a checkpoint" in result.stderr and not store.exists()
    for digit in range(10):  # the zoo models' 10 classes, as class folders
        (tmp_path / "data" / str(digit)).mkdir(parents=True)
    (tmp_path / "data" / "0" / "x.png").write_bytes(b"not a png")
    result = _cli("eval", "--model", "zoo_vit", "--suite", "clean", "--data", str(tmp_path / "data"), "--store", str(store))
    lines = result.stderr.strip().splitlines()  # progress lines may come first; the error is the one last line
    assert result.returncode == 2 and lines[-1].startswith("robustvit: error: cannot read image"), result.stderr
    assert sum("error" in line for line in lines) == 1 and "Traceback" not in result.stderr
    assert "cannot read image" in result.stderr and "x.png" in result.stderr and not store.exists()


def test_skip_corrupt_counts_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(tmp_path / "data" / label / f"{i}.png")
    (tmp_path / "data" / "a" / "broken.png").write_bytes(b"not a png")
    store = tmp_path / "s.sqlite"
    rc = main(["eval", "--model", "timm:test_resnet", "--no-pretrained", "--num-classes", "2", "--suite", "clean",
               "--data", str(tmp_path / "data"), "--skip-corrupt", "--store", str(store)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "1 unreadable images skipped" in err
    from robustvit.store import Store

    with Store(store, readonly=True) as s:
        rows = s.records(metric="top1")
    assert rows["n"].tolist() == [6] and '"skip_corrupt": true' in rows["dataset"].item()
