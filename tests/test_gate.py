"""The CI gate: policies, verdicts, the three exit codes, JUnit XML (schema-validated) and Markdown."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from robustvit.cli import main
from robustvit.errors import UserError
from robustvit.gate import load_policy, parse_policy, parse_rule, run_gate
from robustvit.records import CellResult
from robustvit.report.gate_outputs import append_step_summary, to_junit, to_markdown
from robustvit.store import Store

# The JUnit shape CI test reporters read (GitHub/GitLab/Jenkins), written for this test: the
# attributes they use are required and typed. ROBUSTVIT_JUNIT_XSD may name Jenkins' junit-10.xsd
# for a second validation (see test_junit_validates_against_jenkins_xsd).
JUNIT_XSD = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:simpleType name="seconds">
    <xs:restriction base="xs:decimal"><xs:minInclusive value="0"/><xs:fractionDigits value="3"/></xs:restriction>
  </xs:simpleType>
  <xs:complexType name="outcome" mixed="true">
    <xs:attribute name="message" type="xs:string" use="required"/>
    <xs:attribute name="type" type="xs:string" use="required"/>
  </xs:complexType>
  <xs:element name="testsuites">
    <xs:complexType>
      <xs:sequence><xs:element ref="testsuite" maxOccurs="unbounded"/></xs:sequence>
      <xs:attribute name="name" type="xs:string" use="required"/>
      <xs:attribute name="tests" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="failures" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="errors" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="time" type="seconds" use="required"/>
    </xs:complexType>
  </xs:element>
  <xs:element name="testsuite">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="properties" minOccurs="0">
          <xs:complexType><xs:sequence>
            <xs:element name="property" minOccurs="0" maxOccurs="unbounded">
              <xs:complexType>
                <xs:attribute name="name" type="xs:string" use="required"/>
                <xs:attribute name="value" type="xs:string" use="required"/>
              </xs:complexType>
            </xs:element>
          </xs:sequence></xs:complexType>
        </xs:element>
        <xs:element name="testcase" maxOccurs="unbounded">
          <xs:complexType>
            <xs:sequence>
              <xs:choice minOccurs="0">
                <xs:element name="failure" type="outcome"/>
                <xs:element name="error" type="outcome"/>
                <xs:element name="skipped" type="outcome"/>
              </xs:choice>
              <xs:element name="system-out" type="xs:string" minOccurs="0"/>
              <xs:element name="system-err" type="xs:string" minOccurs="0"/>
            </xs:sequence>
            <xs:attribute name="name" type="xs:string" use="required"/>
            <xs:attribute name="classname" type="xs:string" use="required"/>
            <xs:attribute name="time" type="seconds" use="required"/>
          </xs:complexType>
        </xs:element>
      </xs:sequence>
      <xs:attribute name="name" type="xs:string" use="required"/>
      <xs:attribute name="tests" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="failures" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="errors" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="skipped" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="time" type="seconds" use="required"/>
      <xs:attribute name="timestamp" type="xs:dateTime" use="required"/>
      <xs:attribute name="hostname" type="xs:string"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"""

EVIL = 'vit <&> "quoted"\x01'


def _xmlschema():
    if os.environ.get("CI") == "true":
        import xmlschema  # a test dependency: required under CI

        return xmlschema
    return pytest.importorskip("xmlschema", reason="xmlschema is not installed (pip install xmlschema)")


def _write(store: Store, run: str, model: str, sha: str, family: str, suite: str, cell: str,
           metrics: dict[str, tuple[float, bool]], config_key: str = "k") -> None:
    key = {"model": model, "model_sha": sha, "family": family, "params": 10, "suite": suite, "suite_version": "1",
           "config_key": config_key, "dataset": "digits"}
    result = CellResult(cell)
    for name, (value, hib) in metrics.items():
        result.add(name, value, 100, hib)
    store.write_cell(run, key, result)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """base_cnn (baseline), cand_vit (candidate), EVIL (odd name), and run 2 with a new cand_vit checkpoint."""
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        r1 = st.start_run({}, {}, "cpu", 0, None)
        for model, sha, fam, top1, mce, robust, far in [
            ("base_cnn", "b" * 16, "cnn", 0.95, 0.70, 0.40, (0.93, 0.91)),
            ("cand_vit", "c" * 16, "vit", 0.93, 0.75, 0.39, (0.95, 0.92)),
            (EVIL, "e" * 16, "vit", 0.10, math.nan, 0.0, (0.5, 0.5)),
        ]:
            _write(st, r1, model, sha, fam, "clean", "", {"top1": (top1, True)})
            _write(st, r1, model, sha, fam, "corruption", "", {"mce": (mce, False)})
            _write(st, r1, model, sha, fam, "adversarial", "pgd-linf/eps=4/255", {"robust_acc": (robust, True)})
            _write(st, r1, model, sha, fam, "ood", "far/energy", {"auroc": (far[0], True)})
            _write(st, r1, model, sha, fam, "ood", "far/msp", {"auroc": (far[1], True)})
        _write(st, r1, "base_cnn", "b" * 16, "cnn", "ood", "near/energy", {"auroc": (0.8, True)})
        r2 = st.start_run({}, {}, "cpu", 0, None)
        _write(st, r2, "cand_vit", "d" * 16, "vit", "clean", "", {"top1": (0.50, True)})
    return path


def records(path: Path) -> pd.DataFrame:
    with Store(path, readonly=True) as st:
        return st.records()


def policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[gate]
baseline_model = "base_cnn"
rules = [
  "clean/top1 >= 0.90",
  "corruption/mce <= baseline + 1.0",
  "adversarial/pgd-linf/eps=4/255/robust_acc >= baseline - 0.02",
]

[[rule]]
check = "ood/far/*/auroc >= 0.90"
name = "far-OOD AUROC of every detector"
"""


def test_parse_rules() -> None:
    r = parse_rule("adversarial/pgd-linf/eps=4/255/robust_acc>=baseline-0.02", "t")
    assert (r.path, r.op, r.relative, r.value) == ("adversarial/pgd-linf/eps=4/255/robust_acc", ">=", "-", 0.02)
    assert r.threshold(0.5) == pytest.approx(0.48)
    r = parse_rule("ood/far/energy/auroc >= 0.9", "t")
    assert (r.relative, r.value, r.needs_baseline) == (None, 0.9, False)
    assert parse_rule("corruption/mce < baseline * 1.05", "t").threshold(2.0) == pytest.approx(2.1)
    assert parse_rule("corruption/mce <= baseline", "t").threshold(0.7) == 0.7
    for bad in ("corruption/mce", "corruption/mce => 1", "corruption/mce <= lots", "mce <= 1",
                "corruption/mce <= baseline + x", "corruption/mce <= inf"):
        with pytest.raises(UserError):
            parse_rule(bad, "t")


def test_gate_passes(store: Path, tmp_path: Path) -> None:
    result = run_gate(load_policy(policy(tmp_path, GOOD)), records(store), model="cand_vit", model_sha="c" * 16)
    assert [v.status for v in result.verdicts] == ["pass"] * 5 and result.exit_code == 0
    titles = [v.title for v in result.verdicts]
    assert titles[3:] == ["far-OOD AUROC of every detector [ood/far/energy/auroc]",
                          "far-OOD AUROC of every detector [ood/far/msp/auroc]"]
    mce = result.verdicts[1]
    assert (mce.actual, mce.baseline, mce.threshold) == (0.75, 0.70, pytest.approx(1.70))


def test_latest_checkpoint_is_gated_by_default(store: Path, tmp_path: Path) -> None:
    result = run_gate(load_policy(policy(tmp_path, GOOD)), records(store), model="cand_vit")
    assert result.subject.model_sha == "d" * 16  # the newest checkpoint: top1 0.5 and nothing else measured
    assert [v.status for v in result.verdicts] == ["fail", "error", "error", "error"]
    assert "has no stored value for corruption/mce" in result.verdicts[1].message
    assert result.exit_code == 1


def test_failures_and_reducers(store: Path, tmp_path: Path) -> None:
    text = """
rules = ["clean/top1 >= 0.94", "adversarial/pgd-linf/eps=4/255/robust_acc >= baseline + 0.001"]
[gate]
baseline_run = "RUN1"
[[rule]]
check = "ood/far/*/auroc >= 0.94"
reduce = "mean"
[[rule]]
check = "ood/far/*/auroc >= 0.94"
reduce = "max"
"""
    recs = records(store)
    run1 = recs["run_id"].iloc[0]
    result = run_gate(load_policy(policy(tmp_path, text.replace("RUN1", run1))), recs, model="cand_vit",
                      model_sha="c" * 16)
    assert [v.status for v in result.verdicts] == ["fail", "fail", "fail", "pass"]
    assert result.baseline is not None and result.baseline.model == "cand_vit"  # same model picked from the run
    assert result.verdicts[2].actual == pytest.approx(0.935) and result.verdicts[2].path == "ood/far/*/auroc"
    assert result.verdicts[3].actual == pytest.approx(0.95)


def test_nan_and_missing_baseline_metric_are_errors(store: Path, tmp_path: Path) -> None:
    text = '[gate]\nbaseline_model = "cand_vit"\nrules = ["corruption/mce <= 1", "ood/near/energy/auroc >= baseline"]'
    result = run_gate(load_policy(policy(tmp_path, text)), records(store), model=EVIL)
    assert [v.status for v in result.verdicts] == ["error", "error"]
    assert "NaN" in result.verdicts[0].message
    assert "has no stored value for ood/near/energy/auroc" in result.verdicts[1].message
    result = run_gate(load_policy(policy(tmp_path, text)), records(store), model="base_cnn")
    assert result.verdicts[1].status == "error" and "baseline cand_vit has no stored value" in result.verdicts[1].message


@pytest.mark.parametrize("text, message", [
    ("rules = [", "not valid TOML"),
    ("[gate]\nmodell = 'x'\nrules = ['clean/top1 >= 0.9']", "unknown key 'modell'"),
    ("surprise = 1", "unknown key 'surprise'"),
    ("", "no rules"),
    ("rules = ['clean/top1 >>= 0.9']", "cannot read"),
    ("[[rule]]\ncheck = 'clean/top1 >= 0.9'\nreduce = 'median'", "unknown reduce 'median'"),
    ("[[rule]]\nname = 'x'", "needs check"),
    ("rules = 'clean/top1 >= 0.9'", "must be a list"),
    ("[gate]\nbaseline_model = 'a'\nbaseline_run = 'b'\nrules = ['clean/top1 >= 0.9']", "choose one"),
])
def test_bad_policies(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_policy(policy(tmp_path, text))


@pytest.mark.parametrize("kwargs, rules, message", [
    ({"model": "cand_vit"}, ["clean/top11 >= 0.9"], "unknown metric 'clean/top11'.*did you mean 'clean/top1'"),
    ({"model": "cand_vit"}, ["ood/near/*/fpr95 <= 0.1"], "unknown metric"),
    ({"model": "nobody"}, ["clean/top1 >= 0.9"], "model 'nobody' has no records"),
    ({"model": "cand_vit", "baseline_model": "nobody"}, ["clean/top1 >= baseline"], "baseline 'nobody' has no"),
    ({"model": "cand_vit"}, ["clean/top1 >= baseline"], "none is set"),
    ({"model": "cand_vit", "baseline_run": "nope"}, ["clean/top1 >= baseline"], "baseline run 'nope' has no records"),
    ({}, ["clean/top1 >= 0.9"], "no model given"),
])
def test_user_errors(store: Path, kwargs: dict, rules: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        run_gate(parse_policy({"rules": rules}), records(store), **kwargs)


def test_run_with_several_models_needs_a_model(store: Path) -> None:
    recs = records(store)
    run1 = recs["run_id"].iloc[0]
    with pytest.raises(UserError, match="holds several models"):
        run_gate(parse_policy({"rules": ["clean/top1 >= 0.9"]}), recs, run=run1)
    run2 = recs["run_id"].iloc[-1]
    result = run_gate(parse_policy({"rules": ["clean/top1 >= 0.9"]}), recs, run=run2)
    assert result.subject.label == f"cand_vit (run {run2})" and result.verdicts[0].actual == 0.5


def _check_junit_structure(xml: str, n: int, failures: int, errors: int) -> ET.Element:
    root = ET.fromstring(xml.encode("utf-8"))
    assert root.tag == "testsuites" and (root.get("tests"), root.get("failures"), root.get("errors")) == (
        str(n), str(failures), str(errors))
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == n == int(suite.get("tests"))
    assert sum(c.find("failure") is not None for c in cases) == failures == int(suite.get("failures"))
    assert sum(c.find("error") is not None for c in cases) == errors == int(suite.get("errors"))
    return root


def test_junit_xml_validates(store: Path, tmp_path: Path) -> None:
    xmlschema = _xmlschema()
    schema = xmlschema.XMLSchema(JUNIT_XSD)
    text = GOOD + '\n[[rule]]\ncheck = "clean/top1 >= 0.99"\n[[rule]]\ncheck = "ood/near/energy/auroc >= 0.5"\n'
    result = run_gate(load_policy(policy(tmp_path, text)), records(store), model="cand_vit", model_sha="c" * 16)
    xml = to_junit(result)
    schema.validate(xml)
    root = _check_junit_structure(xml, 7, 1, 1)
    cases = root.find("testsuite").findall("testcase")
    assert cases[0].get("classname") == "robustvit.gate.clean" and cases[0].get("name") == "clean/top1 >= 0.90"
    assert cases[5].find("failure").get("type") == "ThresholdNotMet"
    assert "clean/top1 = 0.93 >= 0.99: does not hold" in cases[5].find("failure").get("message")
    assert cases[6].find("error").get("type") == "MissingMetric"
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["model_sha"] == "c" * 16 and props["baseline"] == "base_cnn"


def test_junit_escapes_odd_names(store: Path) -> None:
    xmlschema = _xmlschema()
    result = run_gate(parse_policy({"rules": ["clean/top1 >= 0.5"]}), records(store), model=EVIL)
    xml = to_junit(result)
    xmlschema.XMLSchema(JUNIT_XSD).validate(xml)
    root = _check_junit_structure(xml, 1, 1, 0)
    assert root.find("testsuite").get("name") == 'robustvit gate: vit <&> "quoted"'  # control char dropped


def test_junit_validates_against_jenkins_xsd(store: Path, tmp_path: Path) -> None:
    xsd = os.environ.get("ROBUSTVIT_JUNIT_XSD")
    if not xsd:
        pytest.skip("ROBUSTVIT_JUNIT_XSD is not set (point it at Jenkins' junit-10.xsd, e.g. from pytest's sdist)")
    schema = _xmlschema().XMLSchema(xsd)
    text = GOOD + '\n[[rule]]\ncheck = "clean/top1 >= 0.99"\n[[rule]]\ncheck = "ood/near/energy/auroc >= 0.5"\n'
    result = run_gate(load_policy(policy(tmp_path, text)), records(store), model="cand_vit", model_sha="c" * 16)
    schema.validate(to_junit(result))


def test_markdown_summary(store: Path, tmp_path: Path) -> None:
    result = run_gate(load_policy(policy(tmp_path, GOOD)), records(store), model="cand_vit", model_sha="c" * 16)
    md = to_markdown(result)
    assert md.startswith("## ✅ robustvit gate: PASSED")
    assert "5 checks: 5 passed, 0 failed, 0 errors." in md
    assert "| ✅ pass | `corruption/mce <= baseline + 1.0` | `corruption/mce` | 0.75 | 1.7 | 0.7 |" in md
    assert "| ✅ pass | far-OOD AUROC of every detector | `ood/far/msp/auroc` | 0.92 | 0.9 | — |" in md
    bad = to_markdown(run_gate(parse_policy({"rules": ["clean/top1 >= 0.5"]}), records(store), model=EVIL))
    assert bad.startswith("## ❌ robustvit gate: FAILED") and '**vit <&> "quoted"** (sha' in bad


def test_step_summary_appended(tmp_path: Path) -> None:
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n", encoding="utf-8")
    assert append_step_summary("## gate", {"GITHUB_STEP_SUMMARY": str(target)}) == target
    assert append_step_summary("## gate again\n", {"GITHUB_STEP_SUMMARY": str(target)}) == target
    assert target.read_text(encoding="utf-8") == "earlier step\n## gate\n## gate again\n"
    assert append_step_summary("x", {}) is None


def test_cli_exit_codes(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pol = policy(tmp_path, GOOD)
    junit = tmp_path / "out" / "gate.xml"
    base = ["gate", "--store", str(store), "--policy", str(pol), "--junit", str(junit)]
    # 0: the first checkpoint of cand_vit passes (selected through its run)
    run1 = records(store)["run_id"].iloc[0]
    with pytest.raises(SystemExit) as exc:  # argparse: --run and --model are exclusive
        main([*base, "--run", run1, "--model", "cand_vit"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert main([*base, "--run", run1, "--baseline-model", "base_cnn"]) == 2  # run 1 holds three models
    assert "holds several models" in capsys.readouterr().err
    pol_run = policy(tmp_path, GOOD.replace('baseline_model = "base_cnn"', 'baseline_model = "base_cnn"\n'
                                            'model = "base_cnn"'))
    assert main(["gate", "--store", str(store), "--policy", str(pol_run), "--junit", str(junit)]) == 0
    out = capsys.readouterr()
    assert "## ✅ robustvit gate: PASSED" in out.out and "gate passed: 5 passed" in out.err
    _check_junit_structure(junit.read_text(encoding="utf-8"), 5, 0, 0)
    # 1: the newest cand_vit checkpoint fails and misses metrics
    assert main([*base, "--model", "cand_vit"]) == 1
    _check_junit_structure(junit.read_text(encoding="utf-8"), 4, 1, 3)
    assert "gate FAILED: 0 passed, 1 failed, 3 errors" in capsys.readouterr().err
    # 2: user errors, one line each, no traceback
    for args, message in [
        ([*base, "--model", "nobody"], "model 'nobody' has no records"),
        ([*base, "--model", "cand_vit", "--baseline-model", "nobody"], "baseline 'nobody' has no records"),
        (["gate", "--store", str(store), "--policy", str(tmp_path / "missing.toml"), "--model", "cand_vit"],
         "does not exist"),
        (["gate", "--store", str(store), "--policy", str(policy(tmp_path, "rules = ['clean/topp1 >= 1']")),
          "--model", "cand_vit"], "unknown metric 'clean/topp1'"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("robustvit: error: ") and message in err and err.count("\n") == 1
    assert summary.read_text(encoding="utf-8").count("## ") == 2  # one summary per completed gate run


def test_cli_quiet_and_markdown_file(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = tmp_path / "gate.md"
    pol = policy(tmp_path, "rules = ['clean/top1 >= 0.9']")
    assert main(["gate", "--store", str(store), "--policy", str(pol), "--model", "base_cnn", "--quiet",
                 "--markdown", str(md)]) == 0
    assert capsys.readouterr().out == "gate passed: 1 passed, 0 failed, 0 errors\n"
    assert md.read_text(encoding="utf-8").startswith("## ✅ robustvit gate: PASSED")


def test_example_policy_is_valid() -> None:
    from robustvit.registries import SUITES

    example = Path(__file__).resolve().parents[1] / "suites" / "gate.toml"
    pol = load_policy(example)
    assert pol.model == "zoo_vit" and pol.baseline_model == "zoo_resnet"
    assert pol.suite_file is not None and Path(pol.suite_file).is_file()
    assert len(pol.rules) == 6 and {r.path.split("/")[0] for r in pol.rules} <= set(SUITES.names())
