"""Deterministic training of the zoo models on the embedded ``digits`` dataset.

``robustvit zoo train`` runs :func:`train` for both models and writes safetensors files plus
``MODEL_CARD.md`` to ``robustvit/models/zoo_weights`` (or ``--out``). Determinism: fixed seed,
``torch.use_deterministic_algorithms(True)``, one CPU thread, a fixed data order; the same
command on the same software versions gives the same bytes.

Recipe (both models): AdamW, cosine learning-rate decay with a linear warm-up, label smoothing 0.1,
augmentation by random translation (zero padding of 3 px and a random 32x32 crop) and a small
random affine (rotation up to 10 degrees, scale 0.9-1.1), batched in torch.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustvit.data.catalog import digits
from robustvit.models.zoo import ARCHITECTURES, DATA_CONFIG, weights_path


@dataclass(frozen=True)
class Recipe:
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int = 64
    warmup_epochs: int = 3


RECIPES: dict[str, Recipe] = {
    "zoo_vit": Recipe(epochs=100, lr=2e-3, weight_decay=0.05),
    "zoo_resnet": Recipe(epochs=30, lr=2e-3, weight_decay=0.01),
}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + torch.rand(n, generator=gen) * 0.2
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (3 / 16)  # up to 3 px in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(DATA_CONFIG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(DATA_CONFIG["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of a raw zoo model on [0,1] images."""
    model.eval()
    return float((model(_normalize(x)).argmax(1) == y).float().mean())


def train(name: str, *, seed: int = 0, epochs: int | None = None) -> tuple[nn.Module, float, float]:
    """Train one zoo model; returns (model, test accuracy, seconds)."""
    build, _ = ARCHITECTURES[name]
    recipe = RECIPES[name]
    epochs = epochs or recipe.epochs
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build()
    train_set, test_set = digits("train"), digits("test")
    x, y = train_set.images, train_set.labels
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(y) / recipe.batch_size)
    total, warmup = epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            xb = _augment(x[idx], gen)
            loss = F.cross_entropy(model(_normalize(xb)), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    return model, accuracy(model, test_set.images, test_set.labels), seconds


def train_all(out: Path | None = None, *, seed: int = 0, names: tuple[str, ...] = tuple(ARCHITECTURES),
              epochs: int | None = None) -> list[dict]:
    """Train the zoo models, write their safetensors and the model card; returns one row per model.

    ``epochs`` overrides the recipes' epoch counts (for quick checks; the shipped weights use the recipes).
    """
    from safetensors.torch import save_file

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rows = []
    try:
        for name in names:
            model, acc, seconds = train(name, seed=seed, epochs=epochs)
            path = (out / f"{name}.safetensors") if out else weights_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            # one metadata key: safetensors writes its metadata map in hash order, so two keys could
            # come out in either order and the same weights would give different bytes
            save_file(state, str(path), metadata={"robustvit_zoo": f"{name} seed={seed}"})
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            rows.append({"name": name, "params": sum(p.numel() for p in model.parameters()), "test_acc": acc,
                         "epochs": epochs or RECIPES[name].epochs, "seconds": seconds, "sha256": sha, "path": path,
                         "bytes": path.stat().st_size})
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    card = (out or weights_path("x").parent) / "MODEL_CARD.md"
    card.write_text(model_card(rows, seed))
    return rows


def model_card(rows: list[dict], seed: int) -> str:
    """Markdown model card for the zoo."""
    lines = [
        "# robustvit zoo models",
        "",
        "Trained on the embedded `digits` dataset (scikit-learn's 1,797 handwritten digits, 8x8 upsampled to",
        "32x32 RGB; fixed stratified split: 1,257 train / 540 test images, see `robustvit/data/catalog.py`).",
        "Inputs: float RGB in [0,1], 32x32; normalisation (mean 0.5, std 0.5) is inside the wrapper.",
        "",
        f"Made by: `robustvit zoo train` (seed {seed}; recipe in `robustvit/models/zoo_train.py`; one CPU thread,",
        "deterministic algorithms).",
        "",
        "| model | architecture | family | parameters | epochs | test top-1 | file size | sha256 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    arch = {"zoo_vit": "ViT, 8x8 patches, width 128, depth 4, 4 heads", "zoo_resnet": "ResNet, 1 BasicBlock/stage, widths 24-192"}
    for r in rows:
        family = ARCHITECTURES[r["name"]][1]
        lines.append(f"| {r['name']} | {arch[r['name']]} | {family} | {r['params']:,} | {r['epochs']} | "
                     f"{100 * r['test_acc']:.2f}% | {r['bytes'] / 1e6:.2f} MB | `{r['sha256']}` |")
    lines.append("")
    return "\n".join(lines)
