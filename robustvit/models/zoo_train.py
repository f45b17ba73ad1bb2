"""Deterministic training of the zoo models on the embedded ``digits`` dataset.

``robustvit zoo train`` runs :func:`train` for each model and writes safetensors files plus
``MODEL_CARD.md`` to ``robustvit/models/zoo_weights`` (or ``--out``). Determinism: fixed seed,
``torch.use_deterministic_algorithms(True)``, one CPU thread, a fixed data order; the same command on
the same software versions gives the same bytes.

One recipe for every model (:data:`RECIPE`), because recipe differences rather than architecture explain
much of the reported ViT-vs-CNN robustness gap (Bai et al. 2021, "Are Transformers More Robust Than
CNNs?", NeurIPS): AdamW, linear warm-up then cosine decay, label smoothing 0.1, stochastic depth 0.1,
augmentation by a small random affine map (rotation up to 10 degrees, scale 0.9-1.1, translation up to
3 px), batched in torch. The one architecture-given difference: the DeiT learns from the zoo ResNet by
hard-label distillation through its distillation token (Touvron et al. 2021: the mean of the cross-entropy
of the class head with the label and of the distillation head with the teacher's predicted class), as
DeiT is defined; :data:`EXCEPTIONS` lists such differences with the reason, and the model card repeats it.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustvit.data.catalog import digits
from robustvit.models.zoo import ARCHITECTURES, DATA_CONFIG, weights_path

TEACHER = "zoo_resnet"


@dataclass(frozen=True)
class Recipe:
    epochs: int = 100
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    drop_path_rate: float = 0.1

    def describe(self) -> str:
        return (f"{self.epochs} epochs, AdamW (lr {self.lr:g}, weight decay {self.weight_decay:g}), batch "
                f"{self.batch_size}, {self.warmup_epochs} warm-up epochs then cosine decay, label smoothing "
                f"{self.label_smoothing:g}, stochastic depth {self.drop_path_rate:g}, random affine augmentation "
                "(rotation <= 10 deg, scale 0.9-1.1, shift <= 3 px)")


#: the recipe of every zoo model
RECIPE = Recipe()
#: models whose training differs from :data:`RECIPE`: what differs and why
EXCEPTIONS: dict[str, str] = {
    "zoo_deit": (f"loss: hard-label distillation from {TEACHER} through the distillation token (0.5 x cross-entropy "
                 "of the class head with the smoothed label + 0.5 x cross-entropy of the distillation head with the "
                 "teacher's class, Touvron et al. 2021), because that token and loss are what DeiT is"),
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


def _loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, recipe: Recipe,
          teacher: nn.Module | None) -> torch.Tensor:
    out = model(xb)
    if teacher is None:
        return F.cross_entropy(out, yb, label_smoothing=recipe.label_smoothing)
    cls_logits, dist_logits = out
    with torch.no_grad():
        target = teacher(xb).argmax(1)
    return 0.5 * F.cross_entropy(cls_logits, yb, label_smoothing=recipe.label_smoothing) + \
        0.5 * F.cross_entropy(dist_logits, target)


def train(name: str, *, seed: int = 0, epochs: int | None = None, teacher: nn.Module | None = None,
          limit: int | None = None) -> tuple[nn.Module, float, float]:
    """Train one zoo model; returns (model, test accuracy, seconds).

    Args:
        name: A zoo model (:data:`~robustvit.models.zoo.ARCHITECTURES`).
        seed: Seeds the initial weights, the data order and the augmentation.
        epochs: Override :data:`RECIPE`'s epochs (quick checks only).
        teacher: The trained teacher of ``zoo_deit`` (raw model on normalised input); required for it.
        limit: Train on the first ``limit`` training images only (quick checks only).
    """
    recipe = RECIPE
    epochs = epochs or recipe.epochs
    if name == "zoo_deit" and teacher is None:
        raise ValueError(f"zoo_deit needs its teacher ({TEACHER})")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ARCHITECTURES[name].build(drop_path_rate=recipe.drop_path_rate)
    if name == "zoo_deit":
        model.set_distilled_training(True)
        teacher = teacher.eval()  # type: ignore[union-attr]
    else:
        teacher = None
    train_set, test_set = digits("train"), digits("test")
    x, y = train_set.images[:limit], train_set.labels[:limit]
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
            loss = _loss(model, _normalize(_augment(x[idx], gen)), y[idx], recipe, teacher)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    model.eval()
    return model, accuracy(model, test_set.images, test_set.labels), seconds


def _teacher(trained: dict[str, nn.Module], out: Path | None) -> nn.Module:
    """The DeiT's teacher: trained in this run, else the weights in ``out``, else the shipped ones."""
    if TEACHER in trained:
        return trained[TEACHER]
    from safetensors.torch import load_file

    path = out / f"{TEACHER}.safetensors" if out else None
    path = path if path is not None and path.is_file() else weights_path(TEACHER)
    model = ARCHITECTURES[TEACHER].build()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def train_all(out: Path | None = None, *, seed: int = 0, names: tuple[str, ...] = tuple(ARCHITECTURES),
              epochs: int | None = None, limit: int | None = None, log=None) -> list[dict]:
    """Train the zoo models, write their safetensors and the model card; returns one row per model.

    ``epochs`` and ``limit`` override the recipe's epochs and the training-set size (for quick checks; the
    shipped weights use the recipe). Models are trained in :data:`ARCHITECTURES` order. The card keeps the
    rows of models that were not retrained. ``log(row)`` is called after each model.
    """
    from safetensors.torch import save_file

    names = tuple(n for n in ARCHITECTURES if n in names)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rows, trained = [], {}
    try:
        for name in names:
            teacher = _teacher(trained, out) if name == "zoo_deit" else None
            model, acc, seconds = train(name, seed=seed, epochs=epochs, teacher=teacher, limit=limit)
            trained[name] = model
            path = (out / f"{name}.safetensors") if out else weights_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            # clones: modules registered under two names (ViL's shared projections) share tensors, which
            # safetensors refuses; the file holds both names, as the model's state dict does
            state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            # one metadata key: safetensors writes its metadata map in hash order, so two keys could
            # come out in either order and the same weights would give different bytes
            save_file(state, str(path), metadata={"robustvit_zoo": f"{name} seed={seed}"})
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            rows.append({"name": name, "params": sum(p.numel() for p in model.parameters()), "test_acc": acc,
                         "epochs": epochs or RECIPE.epochs, "seconds": seconds, "sha256": sha, "path": path,
                         "bytes": path.stat().st_size})
            if log is not None:
                log(rows[-1])
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    card = (out or weights_path("x").parent) / "MODEL_CARD.md"
    card.write_text(model_card(rows, seed, card.read_text() if card.is_file() else ""))
    return rows


def _row(r: dict) -> str:
    arch = ARCHITECTURES[r["name"]]
    return (f"| {r['name']} | {arch.summary} | {arch.family} | {r['params']:,} | {r['epochs']} | "
            f"{100 * r['test_acc']:.2f}% | {r['seconds'] / 60:.1f} min | {r['bytes'] / 1e6:.2f} MB | `{r['sha256']}` |")


def model_card(rows: list[dict], seed: int, previous: str = "") -> str:
    """Markdown model card for the zoo; rows of ``previous`` (an older card) are kept for models not in ``rows``."""
    new = {r["name"]: _row(r) for r in rows}
    kept = {m.group(1): line for line in previous.splitlines() if (m := re.match(r"\| (zoo_\w+) \|", line))}
    table = [new.get(name) or kept[name] for name in ARCHITECTURES if name in new or name in kept]
    exceptions = [f"- `{name}`: {why}." for name, why in EXCEPTIONS.items()]
    notes = [f"- `{name}`: {arch.note}." for name, arch in ARCHITECTURES.items() if arch.note]
    lines = [
        "# robustvit zoo models",
        "",
        "Trained on the embedded `digits` dataset (scikit-learn's 1,797 handwritten digits, 8x8 upsampled to",
        "32x32 RGB; fixed stratified split: 1,257 train / 540 test images, see `robustvit/data/catalog.py`).",
        "Inputs: float RGB in [0,1], 32x32; normalisation (mean 0.5, std 0.5) is inside the wrapper.",
        "",
        f"Made by: `robustvit zoo train` (seed {seed}; `robustvit/models/zoo_train.py`; one CPU thread,",
        "deterministic algorithms: the same command on the same software versions gives the same weight files).",
        "",
        f"Recipe, the same for every model (Bai et al. 2021): {RECIPE.describe()}.",
        "Differences from it:",
        *exceptions,
        "",
        "Training time: wall time of the training loop on one CPU thread of the machine that made the files.",
        "",
        "| model | architecture | family | parameters | epochs | test top-1 | training time | file size | sha256 |",
        "|---|---|---|---|---|---|---|---|---|",
        *table,
        "",
        "Architecture notes:",
        *notes,
        "",
    ]
    return "\n".join(lines)
