"""``robustvit gate``: check stored metrics against a policy; JUnit XML, Markdown, exit 0/1/2."""

from __future__ import annotations

import argparse

from robustvit.commands.common import add_store_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_argument(parser)
    parser.add_argument("--policy", required=True, metavar="FILE", help="gate policy TOML (see suites/gate.toml)")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--model", metavar="NAME", help="model to gate (its name in the store; a spec with --evaluate)")
    who.add_argument("--run", metavar="ID", help="gate the records of this run id")
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--baseline-model", metavar="NAME", help="compare regression rules with this model")
    base.add_argument("--baseline-run", metavar="ID", help="compare regression rules with this run")
    parser.add_argument("--junit", metavar="PATH", help="write JUnit XML here (one testcase per rule)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the Markdown summary here")
    parser.add_argument("--evaluate", action="store_true",
                        help="first run the suites the rules need (cached cells are reused), then gate")
    parser.add_argument("--suite-file", metavar="FILE", help="suite file --evaluate runs (default: the policy's)")
    parser.add_argument("--checkpoint", metavar="PATH", help="with --evaluate: weights for --model")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="with --evaluate: device (default auto)")
    parser.add_argument("--quiet", action="store_true", help="print only the verdict line")


def run(args: argparse.Namespace) -> int:
    import sys

    from robustvit.errors import UserError

    try:
        from robustvit.gate import load_policy, run_gate
        from robustvit.report import load_records
        from robustvit.report.gate_outputs import append_step_summary, to_markdown, write_junit
    except ImportError as exc:  # the optional report extra (jinja2, matplotlib)
        if exc.name not in ("jinja2", "markupsafe", "matplotlib"):
            raise
        raise UserError(f"robustvit gate needs the report extra ({exc.name} is missing): "
                        "pip install 'robustvit[report]'") from None

    policy = load_policy(args.policy)
    model_sha = None
    if args.evaluate:
        if args.run:
            raise UserError("--evaluate gates a model, not a stored run: pass --model instead of --run")
        model_sha = evaluate_for_gate(policy, args)
    elif args.checkpoint:
        raise UserError("--checkpoint is used with --evaluate (stored records already name their checkpoint)")
    records = load_records(args.store)
    result = run_gate(policy, records, model=args.model, run=args.run, model_sha=model_sha,
                      baseline_model=args.baseline_model, baseline_run=args.baseline_run)
    markdown = to_markdown(result)
    if args.junit:
        write_junit(result, args.junit)
    if args.markdown:
        from pathlib import Path

        try:
            Path(args.markdown).write_text(markdown, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {args.markdown!r}: {exc.strerror}") from exc
    append_step_summary(markdown)
    if not args.quiet:
        print(markdown)
    status = "passed" if result.passed else "FAILED"
    print(f"gate {status}: {result.count('pass')} passed, {result.count('fail')} failed, "
          f"{result.count('error')} errors" + (f"; JUnit XML {args.junit}" if args.junit else ""),
          file=sys.stderr if not args.quiet else sys.stdout)
    return result.exit_code


def evaluate_for_gate(policy, args: argparse.Namespace) -> str:
    """Run the suites the policy's rules name for the gated model (and a baseline model without records).

    Uses the runner ``robustvit run`` uses (:func:`robustvit.runner.execute`), so cells already
    stored for the same checkpoint and config are reused. The suites come from ``--suite-file`` or
    the policy's ``suite_file`` (its ``[run]`` settings, model options and suite options); a suite a
    rule names that the file lacks runs with its defaults. Returns the gated checkpoint's sha.
    """
    import dataclasses
    import sys

    from robustvit.config import ModelConfig, build_suite, validate
    from robustvit.errors import UserError
    from robustvit.runner import execute
    from robustvit.store import Store

    model = args.model or policy.model
    if not model:
        raise UserError("--evaluate needs the model to gate: pass --model SPEC or set model in the policy's [gate]")
    needed = list(dict.fromkeys(rule.path.split("/", 1)[0] for rule in policy.rules))
    if any("*" in s for s in needed):
        raise UserError("--evaluate needs each rule's suite spelled out (no * in the first path segment)")
    suite_file = args.suite_file or policy.suite_file
    cfg = _suite_config(suite_file, model, args.device)
    by_name = {s.name: s for s in cfg.suites}
    suites = [by_name.get(n) or build_suite(n, {}, f"gate --evaluate: suite {n!r}") for n in needed]
    known = {m.label: m for m in cfg.models}
    target = known.get(model) or ModelConfig(spec=model)
    if args.checkpoint:
        target = dataclasses.replace(target, checkpoint=args.checkpoint)
    models = [target]
    baseline = args.baseline_model or (policy.baseline_model if not args.baseline_run else None)
    if baseline and baseline != target.label and any(r.needs_baseline for r in policy.rules):
        with Store(args.store) as store:
            has = not store.records(model=baseline, suite=needed).empty
        if not has:
            models.append(known.get(baseline) or ModelConfig(spec=baseline))
    run_cfg = validate(dataclasses.replace(cfg, models=models, suites=suites))

    def on_event(e) -> None:
        if e.kind in ("model", "plan"):
            print(f"[{e.model}] {e.suite + ': ' if e.suite else ''}{e.detail}", file=sys.stderr)

    with Store(args.store) as store:
        summary = execute(run_cfg, store, on_event=on_event)
    shas = [k["model_sha"] for k in summary.keys if k["model"] == target.label]
    return shas[0]


def _suite_config(suite_file: str | None, model: str, device: str | None):
    """The suite file's config (a file without ``[[models]]`` is fine here: the gate names the model)."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from robustvit._compat import tomllib
    from robustvit.config import ModelConfig, RunConfig, load_suite_file
    from robustvit.errors import UserError

    overrides = {"device": device}
    if not suite_file:
        cfg = RunConfig(models=[ModelConfig(spec=model)], suites=[], source="gate --evaluate")
        return dataclasses.replace(cfg, device=device) if device else cfg
    path = Path(suite_file)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return load_suite_file(path, overrides)  # its own clear error
    if doc.get("models"):
        return load_suite_file(path, overrides)
    # validate the file with the gated model added, so run settings and suite options are checked as usual
    text = path.read_text(encoding="utf-8") + f"\n[[models]]\nspec = {json_str(model)}\n"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(text, encoding="utf-8")
        try:
            cfg = load_suite_file(copy, overrides)
        except UserError as exc:
            raise UserError(str(exc).replace(str(copy), str(path))) from None
    return dataclasses.replace(cfg, source=str(path))


def json_str(text: str) -> str:
    """A TOML basic string (JSON string syntax is valid TOML for these characters)."""
    import json

    return json.dumps(text)
