"""``robustvit eval``: one model (or several) on one or more suites, from flags alone."""

from __future__ import annotations

import argparse

from robustvit.commands.common import add_run_arguments, execute_and_print


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="SPEC",
                        help="zoo_vit, timm:<arch>, torchvision:<name>, export:<file.pt2>, torchscript:<path>, "
                             "python:<module>:<fn>; repeatable")
    parser.add_argument("--checkpoint", help="local weights for the model (safetensors or torch state dict)")
    parser.add_argument("--family", choices=("vit", "cnn", "hybrid"), help="override the inferred family")
    parser.add_argument("--no-pretrained", action="store_true", help="random weights (no library weights)")
    parser.add_argument("--num-classes", type=int, metavar="N",
                        help="rebuild the classifier head with N outputs (a checkpoint trained on your N classes)")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="allow checkpoints that need full unpickling (runs code from the file: trusted files only)")
    parser.add_argument("--suite", action="append", required=True, metavar="NAME",
                        help="suite to run (clean, corruption, adversarial, ood, ...); repeatable or comma-separated")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="suite option as TOML value, e.g. -o preset='\"cifar10_c\"' or -o severities=[1,3]")
    add_run_arguments(parser)


def _parse_options(items: list[str]) -> dict:
    from robustvit._compat import tomllib
    from robustvit.errors import UserError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--option {item!r} must be KEY=VALUE")
        try:
            options[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            options[key.strip()] = value  # a bare word is a string
    return options


def run(args: argparse.Namespace) -> int:
    from robustvit.config import ModelConfig, RunConfig, build_suite, skip_corrupt_images, validate

    options = _parse_options(args.option)
    names = [n.strip() for s in args.suite for n in s.split(",") if n.strip()]
    suites = [build_suite(n, dict(options), f"--suite {n}") for n in names]
    if len(args.model) > 1 and args.checkpoint:
        from robustvit.errors import UserError

        raise UserError("--checkpoint needs exactly one --model")
    models = [ModelConfig(spec=m, checkpoint=args.checkpoint, family=args.family,
                          pretrained=False if args.no_pretrained else None, unsafe_pickle=args.unsafe_pickle,
                          num_classes=args.num_classes)
              for m in args.model]
    run_opts = {k: getattr(args, k) for k in ("data", "seed", "batch_size", "device", "limit", "amp", "workers",
                                               "executor", "ray_address", "ray_workers")
                if getattr(args, k) is not None}
    cfg = validate(RunConfig(models=models, suites=suites, **run_opts))
    if args.skip_corrupt:
        skip_corrupt_images(cfg)
    return execute_and_print(cfg, args)
