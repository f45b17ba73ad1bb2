"""Gate outputs: JUnit XML (one testcase per verdict) and a Markdown summary.

The XML follows the shape CI systems read (Jenkins' ``junit-10.xsd``, as used by GitHub, GitLab and
Jenkins test reporters): ``<testsuites>`` > ``<testsuite name tests failures errors skipped time
timestamp>`` > ``<properties>`` and ``<testcase classname name time>`` with a ``<failure>`` or
``<error>`` child when the rule did not pass, and the verdict's explanation in ``<system-out>``.
"""

from __future__ import annotations

import os
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from robustvit.errors import UserError
from robustvit.report.tables import fmt_value, md_code, md_escape

if TYPE_CHECKING:
    from robustvit.gate import GateResult

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
STATUS_ICON = {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}


def _x(text: object) -> str:
    """Text safe for XML 1.0 (characters XML cannot hold are dropped; escaping is ElementTree's job)."""
    return _XML_BAD.sub("", str(text))


def _time(seconds: float) -> str:
    return f"{max(seconds, 0.0):.3f}"


def to_junit(result: GateResult) -> str:
    """The gate result as a JUnit XML document (UTF-8 text with an XML declaration)."""
    n = len(result.verdicts)
    counts = {"tests": str(n), "failures": str(result.count("fail")), "errors": str(result.count("error"))}
    root = ET.Element("testsuites", {"name": _x(result.policy.name), "time": _time(result.seconds), **counts})
    suite = ET.SubElement(root, "testsuite", {
        "name": _x(f"{result.policy.name}: {result.subject.label}"), **counts, "skipped": "0",
        "time": _time(result.seconds), "timestamp": result.timestamp[:19], "hostname": _x(socket.gethostname()),
    })
    props = ET.SubElement(suite, "properties")
    info = {
        "policy": result.policy.source, "model": result.subject.model, "model_sha": result.subject.model_sha,
        "run_ids": result.subject.run_ids,
    }
    if result.baseline is not None:
        info.update({"baseline": result.baseline.label, "baseline_model_sha": result.baseline.model_sha,
                     "baseline_run_ids": result.baseline.run_ids})
    for k, v in info.items():
        ET.SubElement(props, "property", {"name": k, "value": _x(v)})
    per_case = result.seconds / n if n else 0.0
    for v in result.verdicts:
        suite_name = v.path.split("/", 1)[0]
        case = ET.SubElement(suite, "testcase", {"classname": _x(f"robustvit.gate.{suite_name}"), "name": _x(v.title),
                                                 "time": _time(per_case)})
        if v.status == "fail":
            ET.SubElement(case, "failure", {"type": "RobustnessRegression" if v.rule.needs_baseline else
                                            "ThresholdNotMet", "message": _x(v.message)}).text = _x(v.message)
        elif v.status == "error":
            ET.SubElement(case, "error", {"type": "MissingMetric", "message": _x(v.message)}).text = _x(v.message)
        ET.SubElement(case, "system-out").text = _x(_detail(v, result))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _detail(v, result: GateResult) -> str:
    lines = [f"rule: {v.rule.text}", f"metric: {v.path}", f"status: {v.status}", v.message,
             f"model: {result.subject.label} (sha {result.subject.model_sha}, runs {result.subject.run_ids})"]
    if result.baseline is not None and v.rule.needs_baseline:
        lines.append(f"baseline: {result.baseline.label} (sha {result.baseline.model_sha}, "
                     f"runs {result.baseline.run_ids})")
    return "\n".join(lines)


def to_markdown(result: GateResult) -> str:
    """A Markdown summary (for ``$GITHUB_STEP_SUMMARY`` and the terminal); every user string escaped."""
    verdict = "PASSED" if result.passed else "FAILED"
    icon = "✅" if result.passed else "❌"
    head = f"## {icon} {md_escape(result.policy.name)}: {verdict}"
    lines = [head, "",
             f"Model **{md_escape(result.subject.label)}** (sha {md_code(result.subject.model_sha)}, "
             f"runs {md_escape(result.subject.run_ids)})"
             + (f" against baseline **{md_escape(result.baseline.label)}** (sha "
                f"{md_code(result.baseline.model_sha)})" if result.baseline is not None else "")
             + f"; policy {md_code(result.policy.source)}.", "",
             f"{len(result.verdicts)} checks: {result.count('pass')} passed, {result.count('fail')} failed, "
             f"{result.count('error')} errors.", "",
             "| result | rule | metric | value | threshold | baseline | details |", "|---|---|---|---|---|---|---|"]
    for v in result.verdicts:
        lines.append("| " + " | ".join([
            STATUS_ICON[v.status], md_escape(v.rule.name) if v.rule.name else md_code(v.rule.text), md_code(v.path),
            md_escape(fmt_value(v.actual)), md_escape(fmt_value(v.threshold)), md_escape(fmt_value(v.baseline)),
            md_escape(v.message),
        ]) + " |")
    return "\n".join(lines) + "\n"


def write_junit(result: GateResult, path: str | os.PathLike[str]) -> Path:
    """Write the JUnit XML file (its folder is created)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(to_junit(result), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write JUnit XML to {str(path)!r}: {exc.strerror}") from exc
    return path


def append_step_summary(markdown: str, env: dict[str, str] | None = None) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when it is set (GitHub Actions); return the file written, if any."""
    target = (env if env is not None else os.environ).get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as exc:
        raise UserError(f"cannot append to $GITHUB_STEP_SUMMARY {target!r}: {exc.strerror}") from exc
    return Path(target)
