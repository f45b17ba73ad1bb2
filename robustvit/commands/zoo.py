"""``robustvit zoo train|info``: make or describe the embedded zoo models."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("train", "info"))
    parser.add_argument("--out", help="folder for the weights and model card (default: the package's zoo_weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the recipes' epochs (quick checks only)")
    parser.add_argument("--model", action="append", choices=("zoo_vit", "zoo_resnet"), help="default: both")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robustvit.models.zoo import weights_path

    if args.action == "info":
        print((weights_path("x").parent / "MODEL_CARD.md").read_text())
        return 0
    from robustvit.models.zoo_train import train_all

    names = tuple(args.model or ("zoo_vit", "zoo_resnet"))
    rows = train_all(Path(args.out) if args.out else None, seed=args.seed, names=names, epochs=args.epochs)
    for r in rows:
        print(f"{r['name']}: {r['params']:,} params, test top-1 {100 * r['test_acc']:.2f}%, "
              f"{r['seconds']:.0f}s, sha256 {r['sha256']}, {r['path']}")
    return 0
