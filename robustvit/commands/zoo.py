"""``robustvit zoo train|info``: make or describe the embedded zoo models."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("train", "info"))
    parser.add_argument("--out", help="folder for the weights and model card (default: the package's zoo_weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (quick checks only)")
    parser.add_argument("--limit", type=int, help="train on the first N training images (quick checks only)")
    parser.add_argument("--model", action="append", help="a zoo model, e.g. zoo_vit (repeatable; default: all)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robustvit.errors import UserError
    from robustvit.models.zoo import ARCHITECTURES, weights_path

    if args.action == "info":
        print((weights_path("x").parent / "MODEL_CARD.md").read_text())
        return 0
    unknown = [m for m in args.model or () if m not in ARCHITECTURES]
    if unknown:
        raise UserError(f"unknown zoo model {unknown[0]!r} (allowed: {', '.join(ARCHITECTURES)})")
    for flag in ("epochs", "limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be a positive integer (got {getattr(args, flag)})")
    from robustvit.models.zoo_train import train_all

    def log(r: dict) -> None:
        print(f"{r['name']}: {r['params']:,} params, test top-1 {100 * r['test_acc']:.2f}%, "
              f"{r['seconds']:.0f}s, sha256 {r['sha256']}, {r['path']}", flush=True)

    names = tuple(args.model or ARCHITECTURES)
    train_all(Path(args.out) if args.out else None, seed=args.seed, names=names, epochs=args.epochs,
              limit=args.limit, log=log)
    return 0
