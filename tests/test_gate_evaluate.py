"""``robustvit gate --evaluate``: the runner computes what the rules need, then the gate reads the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustvit.cli import main
from robustvit.store import Store

SUITE_FILE = """
[run]
data = "digits"
limit = 16
batch_size = 16
device = "cpu"

[suites.clean]
"""


def test_evaluate_then_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tiny.toml").write_text(SUITE_FILE, encoding="utf-8")
    policy = tmp_path / "gate.toml"
    policy.write_text('[gate]\nsuite_file = "tiny.toml"\nbaseline_model = "zoo_resnet"\n'
                      'rules = ["clean/top1 >= 0.5", "clean/nll <= baseline + 5.0"]\n', encoding="utf-8")
    store = tmp_path / "s.sqlite"
    junit = tmp_path / "gate.xml"
    args = ["gate", "--store", str(store), "--policy", str(policy), "--model", "zoo_vit", "--junit", str(junit)]
    assert main(args) == 2  # nothing stored yet and no --evaluate: a user error naming the fix
    assert "does not exist" in capsys.readouterr().err

    assert main([*args, "--evaluate"]) == 0
    out = capsys.readouterr()
    assert "[zoo_vit] clean: 1 to compute" in out.err and "[zoo_resnet] clean: 1 to compute" in out.err
    assert "2 checks: 2 passed" in out.out and 'tests="2" failures="0" errors="0"' in junit.read_text()
    with Store(store, readonly=True) as st:
        records = st.records(suite="clean")
    assert set(records["model"]) == {"zoo_vit", "zoo_resnet"} and set(records["n"]) == {16}

    assert main([*args, "--evaluate"]) == 0  # second time: cached cells are reused, baseline not re-run
    err = capsys.readouterr().err
    assert "[zoo_vit] clean: 0 to compute, 1 stored" in err and "zoo_resnet" not in err


def test_evaluate_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "gate.toml"
    policy.write_text('rules = ["clean/top1 >= 0.5"]\n', encoding="utf-8")
    base = ["gate", "--store", str(tmp_path / "s.sqlite"), "--policy", str(policy), "--evaluate"]
    assert main(base) == 2
    assert "--evaluate needs the model to gate" in capsys.readouterr().err
    assert main([*base, "--model", "zoo_vit", "--suite-file", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--model", "no_such_model"]) == 2
    assert "no_such_model" in capsys.readouterr().err
