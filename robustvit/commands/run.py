"""``robustvit run FILE.toml``: every model x suite of a suite file."""

from __future__ import annotations

import argparse

from robustvit.commands.common import add_run_arguments, execute_and_print


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite_file", metavar="FILE", help="TOML suite file, e.g. suites/quickstart.toml")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from robustvit.config import load_suite_file, skip_corrupt_images

    overrides = {k: getattr(args, k) for k in ("data", "seed", "batch_size", "device", "limit", "amp", "workers",
                                              "executor", "ray_address", "ray_workers")}
    cfg = load_suite_file(args.suite_file, overrides)
    if args.skip_corrupt:
        skip_corrupt_images(cfg)
    return execute_and_print(cfg, args)
