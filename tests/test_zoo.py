"""The embedded zoo: shipped weights match the model card, reach the target accuracies, and the
training command is deterministic."""

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
from robustvit.models.zoo import weights_path

TARGETS = {"zoo_vit": 0.96, "zoo_resnet": 0.98}


def test_model_card_matches_shipped_weights() -> None:
    card = (weights_path("zoo_vit").parent / "MODEL_CARD.md").read_text()
    for name in TARGETS:
        path = weights_path(name)
        assert path.stat().st_size < 5_000_000
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        row = next(line for line in card.splitlines() if line.startswith(f"| {name} |"))
        assert sha in row
        params = load_model(name).params
        assert f"{params:,}" in row


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_zoo_accuracy_on_digits_test_split(name: str) -> None:
    model = load_model(name)
    ctx = SuiteContext(model=model, suite="clean", dataset="digits", device=torch.device("cpu"), batch_size=270)
    fs = ctx.features()
    acc = top1(fs.logits, fs.labels)
    assert len(fs.labels) == 540 and acc >= TARGETS[name]
    card = (weights_path(name).parent / "MODEL_CARD.md").read_text()
    stated = float(re.search(rf"\| {name} \|.*?\| ([\d.]+)% \|", card).group(1)) / 100
    assert abs(acc - stated) < 1e-3


def test_training_command_is_deterministic(tmp_path: Path) -> None:
    """``robustvit zoo train`` twice, each a fresh process as a user runs it: the same bytes."""
    shas = []
    for out in ("a", "b"):
        subprocess.run([sys.executable, "-m", "robustvit", "zoo", "train", "--model", "zoo_resnet", "--epochs", "1",
                        "--out", str(tmp_path / out)], check=True, capture_output=True, timeout=300)
        shas.append(hashlib.sha256((tmp_path / out / "zoo_resnet.safetensors").read_bytes()).hexdigest())
    assert shas[0] == shas[1]
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert shas[0] in card and "| zoo_resnet |" in card
    trained = load_model("zoo_resnet", checkpoint=str(tmp_path / "a" / "zoo_resnet.safetensors"))
    assert trained.sha == shas[0][:16]
