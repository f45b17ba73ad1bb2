"""The embedded zoo: one model per seed family, shipped weights match the model card and reach the target
accuracy, and the training command is deterministic."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustvit.context import SuiteContext
from robustvit.metrics.classification import top1
from robustvit.models import load_model
from robustvit.models.zoo import ARCHITECTURES, BUILTINS, weights_path
from robustvit.models.zoo_train import RECIPE

pytestmark = pytest.mark.usefixtures("one_thread")

TARGET = 0.97
FAMILIES = {"zoo_vit": "vit", "zoo_resnet": "cnn", "zoo_deit": "vit", "zoo_swin": "vit", "zoo_crossvit": "vit",
            "zoo_beit": "vit", "zoo_bit": "cnn", "zoo_deepvit": "vit", "zoo_vil": "vit"}
CARD = weights_path("zoo_vit").parent / "MODEL_CARD.md"


def _card_row(name: str) -> str:
    return next(line for line in CARD.read_text().splitlines() if line.startswith(f"| {name} |"))


def test_zoo_has_one_model_per_seed_family() -> None:
    assert set(BUILTINS) == set(ARCHITECTURES) == set(FAMILIES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_card_matches_shipped_weights(name: str) -> None:
    path = weights_path(name)
    assert path.stat().st_size < 3_000_000
    row = _card_row(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() in row
    model = load_model(name)
    assert 450_000 <= model.params <= 800_000 and f"| {model.params:,} |" in row
    assert model.family == FAMILIES[name] and f"| {FAMILIES[name]} |" in row
    assert f"| {RECIPE.epochs} |" in row and re.search(r"\| [\d.]+ min \|", row)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_zoo_accuracy_on_digits_test_split(name: str) -> None:
    model = load_model(name)
    ctx = SuiteContext(model=model, suite="clean", dataset="digits", device=torch.device("cpu"), batch_size=270)
    fs = ctx.features()
    acc = top1(fs.logits, fs.labels)
    assert len(fs.labels) == 540 and acc >= TARGET
    stated = float(re.search(r"\| ([\d.]+)% \|", _card_row(name)).group(1)) / 100
    assert abs(acc - stated) < 1e-3


def test_training_command_is_deterministic(tmp_path: Path) -> None:
    """``robustvit zoo train`` twice, each a fresh process as a user runs it, one epoch on 96 images: the same
    bytes. The DeiT learns from the shipped zoo ResNet; the ViL's file holds its shared projections twice."""
    names = ("zoo_deit", "zoo_vil")
    shas: dict[str, list[str]] = {n: [] for n in names}
    for out in ("a", "b"):
        subprocess.run([sys.executable, "-m", "robustvit", "zoo", "train", *(f"--model={n}" for n in names),
                        "--epochs", "1", "--limit", "96", "--out", str(tmp_path / out)],
                       check=True, capture_output=True, timeout=600)
        for n in names:
            shas[n].append(hashlib.sha256((tmp_path / out / f"{n}.safetensors").read_bytes()).hexdigest())
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    for n, (first, second) in shas.items():
        assert first == second
        assert first in card and f"| {n} |" in card
        trained = load_model(n, checkpoint=str(tmp_path / "a" / f"{n}.safetensors"))
        assert trained.sha == first[:16]
        assert trained.sha != load_model(n).sha  # one epoch on 96 images is not the shipped model
    assert "| zoo_vit |" not in card  # rows only for models that exist in that folder


def test_card_keeps_rows_of_models_not_retrained(tmp_path: Path) -> None:
    from robustvit.models.zoo_train import model_card

    old = CARD.read_text()
    row = {"name": "zoo_bit", "params": 1, "test_acc": 0.5, "epochs": 1, "seconds": 6.0, "sha256": "f" * 64,
           "bytes": 10}
    new = model_card([row], 0, old)
    assert "| zoo_bit | " in new and "| 50.00% |" in new and _card_row("zoo_bit") not in new
    for name in FAMILIES:
        if name != "zoo_bit":
            assert _card_row(name) in new


def test_zoo_command_rejects_unknown_models(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "robustvit", "zoo", "train", "--model", "zoo_vgg", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown zoo model 'zoo_vgg' (allowed: zoo_vit, zoo_resnet" in proc.stderr
    assert not any(tmp_path.iterdir())
