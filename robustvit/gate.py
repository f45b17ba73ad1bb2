"""The CI gate: policy TOML -> rules -> verdicts -> JUnit XML, Markdown and an exit code.

A policy holds rules on stored metric paths (``suite/cell/metric``)::

    [gate]
    baseline_model = "zoo_resnet"      # or baseline_run = "<run id>"; CLI flags override
    suite_file = "quickstart.toml"     # what ``--evaluate`` runs (relative to this file)

    rules = [
      "clean/top1 >= 0.80",                              # absolute threshold
      "corruption/mce <= baseline + 1.0",                # regression against the baseline
      "adversarial/pgd-linf/eps=4/255/robust_acc >= baseline - 0.02",
    ]

    [[rule]]                                           # the table form adds a name and a reducer
    check = "ood/far/*/auroc >= 0.90"                  # * = one path segment, ** = any
    name = "far-OOD AUROC of every detector"
    reduce = "all"                                     # all (one verdict per match) | min | max | mean

Verdicts are ``pass``, ``fail`` or ``error``: a metric the gated model lacks, a NaN value or a
baseline without the metric is an error, never a pass. Exit codes: 0 every rule passed, 1 a rule
failed or errored, 2 a user error (bad policy, unknown metric, missing model or baseline), raised
as :class:`~robustvit.errors.UserError`. Nothing here imports torch unless ``--evaluate`` runs.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustvit._compat import tomllib
from robustvit.errors import UserError
from robustvit.results.paths import match_paths, unknown_metric_error
from robustvit.results.select import latest

if TYPE_CHECKING:
    import pandas as pd

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
REDUCERS: dict[str, Callable[[list[float]], float] | None] = {
    "all": None, "min": min, "max": max, "mean": lambda v: sum(v) / len(v),
}
GATE_KEYS = ("name", "model", "run", "baseline_model", "baseline_run", "suite_file", "rules")
RULE_KEYS = ("check", "name", "reduce")
_EXPR = re.compile(r"^\s*(?P<path>\S+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<rhs>\S.*?)\s*$")
_RHS = re.compile(r"^baseline\s*(?:(?P<sign>[-+*])\s*(?P<num>[-+]?[0-9.]+(?:[eE][-+]?\d+)?))?$")


@dataclass(frozen=True)
class Rule:
    """One check: ``path op threshold`` or ``path op baseline (+|-|*) delta``."""

    text: str
    path: str
    op: str
    value: float
    relative: str | None = None  # None (absolute), "+", "-" or "*" (against the baseline)
    name: str = ""
    reduce: str = "all"

    @property
    def needs_baseline(self) -> bool:
        return self.relative is not None

    def threshold(self, baseline: float | None) -> float:
        if self.relative is None:
            return self.value
        assert baseline is not None
        return {"+": baseline + self.value, "-": baseline - self.value, "*": baseline * self.value}[self.relative]


@dataclass
class Policy:
    """A parsed policy file."""

    rules: list[Rule]
    source: str = "policy"
    name: str = "robustvit gate"
    model: str | None = None
    run: str | None = None
    baseline_model: str | None = None
    baseline_run: str | None = None
    suite_file: str | None = None


@dataclass
class Verdict:
    """The outcome of one rule on one metric path."""

    rule: Rule
    path: str
    status: str  # pass | fail | error
    actual: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    message: str = ""

    @property
    def title(self) -> str:
        base = self.rule.name or self.rule.text
        return base if self.path == self.rule.path else f"{base} [{self.path}]"


@dataclass
class Subject:
    """The gated model (or the baseline): its selected records and current values by metric path."""

    label: str
    rows: pd.DataFrame
    values: dict[str, float] = field(default_factory=dict)
    #: metric path -> protocol of the value (a baseline value counts only under the same protocol)
    protocols: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return ", ".join(dict.fromkeys(self.rows["model"].astype(str)))

    @property
    def model_sha(self) -> str:
        return ", ".join(dict.fromkeys(self.rows["model_sha"].astype(str)))

    @property
    def run_ids(self) -> str:
        return ", ".join(sorted(set(self.rows["run_id"].astype(str))))


@dataclass
class GateResult:
    """All verdicts of a gate run plus what they were measured on."""

    policy: Policy
    subject: Subject
    baseline: Subject | None
    verdicts: list[Verdict]
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)

    @property
    def passed(self) -> bool:
        return all(v.status == "pass" for v in self.verdicts)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def parse_rule(text: str, where: str, *, name: str = "", reduce: str = "all") -> Rule:
    """Parse ``path op number`` or ``path op baseline [+|-|* number]``."""
    m = _EXPR.match(str(text))
    if not m:
        raise UserError(f"{where}: cannot read rule {text!r} (expected e.g. 'corruption/mce <= baseline + 1.0' or "
                        f"'clean/top1 >= 0.9'; operators {', '.join(OPS)})")
    if reduce not in REDUCERS:
        raise UserError(f"{where}: unknown reduce {reduce!r} (allowed: {', '.join(REDUCERS)})")
    path, op, rhs = m["path"].strip("/"), m["op"], m["rhs"]
    if "//" in path or not path or path.count("/") < 1:
        raise UserError(f"{where}: metric {m['path']!r} is not a metric path (suite/cell/metric, e.g. corruption/mce)")
    b = _RHS.match(rhs)
    try:
        if b:
            value = float(b["num"]) if b["sign"] else 0.0
            relative = b["sign"] or "+"
        else:
            value, relative = float(rhs), None
    except ValueError:
        raise UserError(f"{where}: cannot read {rhs!r} in rule {text!r} (a number, or baseline with an optional "
                        "'+ x', '- x' or '* x')") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: threshold {rhs!r} in rule {text!r} must be finite")
    return Rule(text=" ".join(str(text).split()), path=path, op=op, value=value, relative=relative, name=name,
                reduce=reduce)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy TOML file (every problem is a :class:`UserError`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"gate policy {str(path)!r} does not exist")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    return parse_policy(doc, str(path), base=path.parent)


def parse_policy(doc: Mapping[str, Any], source: str = "policy", base: Path | None = None) -> Policy:
    """Validate a policy document (the parsed TOML)."""
    _keys(doc, ("gate", "rules", "rule"), source)
    gate = doc.get("gate", {})
    if not isinstance(gate, dict):
        raise UserError(f"{source}: [gate] must be a table")
    gate = dict(gate)
    plain = doc.get("rules", [])
    if "rules" in gate:  # "rules = [...]" written under [gate] belongs to it in TOML; accept it there too
        if "rules" in doc:
            raise UserError(f"{source}: 'rules' is given both at the top level and under [gate] (keep one)")
        plain = gate.pop("rules")
    _keys(gate, GATE_KEYS, f"{source}: [gate]")
    for k, v in gate.items():
        if not isinstance(v, str):
            raise UserError(f"{source}: [gate] {k} must be a string, got {v!r}")
    rules: list[Rule] = []
    if not isinstance(plain, list) or not all(isinstance(r, str) for r in plain):
        raise UserError(f"{source}: 'rules' must be a list of strings such as \"clean/top1 >= 0.9\"")
    rules += [parse_rule(r, f"{source}: rules[{i}]") for i, r in enumerate(plain)]
    tables = doc.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    for i, t in enumerate(tables):
        where = f"{source}: [[rule]] #{i + 1}"
        _keys(t, RULE_KEYS, where)
        if not isinstance(t.get("check"), str):
            raise UserError(f"{where}: needs check = \"<metric path> <op> <threshold or baseline ...>\"")
        rules.append(parse_rule(t["check"], where, name=str(t.get("name", "")), reduce=str(t.get("reduce", "all"))))
    if not rules:
        raise UserError(f"{source}: no rules (add rules = [\"clean/top1 >= 0.9\"] or [[rule]] tables)")
    if gate.get("baseline_model") and gate.get("baseline_run"):
        raise UserError(f"{source}: [gate] sets both baseline_model and baseline_run (choose one)")
    suite_file = gate.get("suite_file")
    if suite_file and base is not None and not Path(suite_file).is_absolute():
        suite_file = str(base / suite_file)
    return Policy(rules=rules, source=source, name=gate.get("name", "robustvit gate"), model=gate.get("model"),
                  run=gate.get("run"), baseline_model=gate.get("baseline_model"),
                  baseline_run=gate.get("baseline_run"), suite_file=suite_file)


def _keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def select(records: pd.DataFrame, *, model: str | None = None, run: str | None = None, model_sha: str | None = None,
           role: str = "model") -> Subject:
    """The current values of one model, optionally of one run (``run_id``) or checkpoint (``model_sha``)."""
    if model is None and run is None:
        raise UserError(f"no {role} given (pass --{'model' if role == 'model' else 'baseline-model'} NAME or "
                        f"--{'run' if role == 'model' else 'baseline-run'} ID, or set it in the policy's [gate])")
    rows = records
    if model is not None:
        rows = rows[rows["model"] == model]
        if rows.empty:
            known = ", ".join(sorted(set(records["model"]))) or "none"
            raise UserError(f"{role} {model!r} has no records in the store (models there: {known}); evaluate it "
                            "first or pass --evaluate")
    if run is not None:
        rows = rows[rows["run_id"] == run]
        if rows.empty:
            runs = ", ".join(sorted(set(records["run_id"]))[-5:]) or "none"
            raise UserError(f"{role} run {run!r} has no records{f' for {model!r}' if model else ''} "
                            f"(latest run ids: {runs})")
    if model_sha is not None:
        rows = rows[rows["model_sha"] == model_sha]
    models = sorted(set(rows["model"]))
    if len(models) > 1:
        raise UserError(f"{role} run {run!r} holds several models ({', '.join(models)}); name one with "
                        f"--{'model' if role == 'model' else 'baseline-model'}")
    chosen = latest(rows).sort_values(["created_at", "order"], kind="stable")
    label = model or models[0]
    label += f" (run {run})" if run else ""
    # a path stored under several protocols: the newest protocol's value
    return Subject(label, chosen, dict(zip(chosen["path"], chosen["value"].astype(float), strict=True)),
                   dict(zip(chosen["path"], chosen["protocol"].astype(str), strict=True)))


def _same_protocol(baseline: Subject, subject: Subject, path: str) -> float | None:
    """The baseline's value of ``path`` under the subject's protocol (None when it has none)."""
    rows = baseline.rows[(baseline.rows["path"] == path) & (baseline.rows["protocol"] == subject.protocols.get(path))]
    return None if rows.empty else float(rows["value"].iloc[-1])


def check(policy: Policy, records: pd.DataFrame, subject: Subject, baseline: Subject | None) -> list[Verdict]:
    """Apply every rule of ``policy`` to ``subject`` (and ``baseline`` for regression rules)."""
    store_paths = set(latest(records)["path"]) if not records.empty else set()
    verdicts: list[Verdict] = []
    for rule in policy.rules:
        if not match_paths(rule.path, store_paths):
            raise unknown_metric_error(rule.path, store_paths)
        if rule.needs_baseline and baseline is None:
            raise UserError(f"rule {rule.text!r} compares with a baseline but none is set (pass --baseline-model "
                            "or --baseline-run, or set baseline_model / baseline_run in the policy's [gate])")
        paths = match_paths(rule.path, subject.values)
        if not paths:
            verdicts.append(Verdict(rule, rule.path, "error", message=f"{subject.label} has no stored value for "
                                    f"{rule.path} (missing metric: evaluate it, e.g. with --evaluate)"))
            continue
        groups = [[p] for p in paths] if rule.reduce == "all" else [paths]
        for group in groups:
            verdicts.append(_verdict(rule, group, subject, baseline))
    return verdicts


def _verdict(rule: Rule, paths: list[str], subject: Subject, baseline: Subject | None) -> Verdict:
    where = paths[0] if len(paths) == 1 else f"{rule.reduce} of {len(paths)} metrics matching {rule.path}"
    path = paths[0] if len(paths) == 1 else rule.path
    reduce = REDUCERS[rule.reduce] or (lambda v: v[0])
    values = [subject.values[p] for p in paths]
    if any(math.isnan(v) for v in values):
        return Verdict(rule, path, "error", message=f"{where} is NaN (undefined) for {subject.label}")
    actual = reduce(values)
    base = None
    if rule.needs_baseline:
        assert baseline is not None
        missing = [p for p in paths if p not in baseline.values]
        if missing:
            return Verdict(rule, path, "error", actual=actual,
                           message=f"baseline {baseline.label} has no stored value for {', '.join(missing[:3])}")
        same = {p: _same_protocol(baseline, subject, p) for p in paths}
        other = [p for p, v in same.items() if v is None]
        if other:
            return Verdict(rule, path, "error", actual=actual,
                           message=f"baseline {baseline.label} has {', '.join(other[:3])} only under another protocol "
                                   f"than {subject.label} ({subject.protocols.get(other[0])}): the numbers do not compare")
        bvals = [same[p] for p in paths]
        if any(math.isnan(v) for v in bvals):
            return Verdict(rule, path, "error", actual=actual, message=f"baseline value of {where} is NaN")
        base = reduce(bvals)
    threshold = rule.threshold(base)
    ok = OPS[rule.op](actual, threshold)
    rhs = f"{threshold:.6g}" if base is None else f"{threshold:.6g} (baseline {base:.6g} {rule.relative} {rule.value:g})"
    return Verdict(rule, path, "pass" if ok else "fail", actual, threshold, base,
                   f"{where} = {actual:.6g} {rule.op} {rhs}: {'holds' if ok else 'does not hold'}")


def run_gate(policy: Policy, records: pd.DataFrame, *, model: str | None = None, run: str | None = None,
             model_sha: str | None = None, baseline_model: str | None = None,
             baseline_run: str | None = None) -> GateResult:
    """Select the gated model and baseline (arguments override the policy's ``[gate]``) and check every rule."""
    import time

    t0 = time.perf_counter()
    if model is None and run is None:
        model, run = policy.model, policy.run
    if baseline_model is None and baseline_run is None:
        baseline_model, baseline_run = policy.baseline_model, policy.baseline_run
    subject = select(records, model=model, run=run, model_sha=model_sha)
    baseline = None
    if baseline_run is not None and baseline_model is None:
        in_run = set(records.loc[records["run_id"] == baseline_run, "model"])
        baseline_model = subject.model if len(in_run) > 1 and subject.model in in_run else None
    if baseline_model is not None or baseline_run is not None:
        baseline = select(records, model=baseline_model, run=baseline_run, role="baseline")
    verdicts = check(policy, records, subject, baseline)
    return GateResult(policy, subject, baseline, verdicts, seconds=time.perf_counter() - t0)
