"""``robustvit list KIND [PATTERN]``: what is registered (built-ins and plugins)."""

from __future__ import annotations

import argparse

KINDS = ("models", "datasets", "suites", "corruptions", "attacks", "detectors", "metrics", "timm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="what to list; 'timm' lists timm architectures")
    parser.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'vit_*'")


def run(args: argparse.Namespace) -> int:
    if args.kind == "timm":
        import timm

        names = timm.list_models(args.pattern or "*")
        print("\n".join(names))
        return 0
    from robustvit.registries import ALL

    registry = ALL[args.kind]
    for name in registry.names(args.pattern):
        origin, aliases = registry.describe(name)
        extra = f" (aliases: {', '.join(aliases)})" if aliases else ""
        print(f"{name:32s} {origin}{extra}")
    return 0
