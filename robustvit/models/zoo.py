"""The embedded zoo: a small ViT and a small ResNet trained on the embedded ``digits`` dataset.

Both take 32x32 RGB in [0,1] and predict 10 classes. Their weights ship with the package
(``robustvit/models/zoo_weights/*.safetensors``) and are made by ``robustvit zoo train``
(:mod:`robustvit.models.zoo_train`); ``zoo_weights/MODEL_CARD.md`` states the command, parameter
counts, test accuracies and sha256 of each file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from robustvit.errors import UserError

BUILTINS: dict[str, str] = {
    "zoo_vit": "robustvit.models.zoo:zoo_vit",
    "zoo_resnet": "robustvit.models.zoo:zoo_resnet",
}

DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
}


def build_vit() -> nn.Module:
    """ViT with 8x8 patches (16 tokens + class token), width 128, depth 4, 4 heads (~0.8M params)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=8, num_classes=10, embed_dim=128, depth=4, num_heads=4,
                             mlp_ratio=3.0, drop_path_rate=0.1)


def build_resnet() -> nn.Module:
    """ResNet-10 style (one BasicBlock per stage), widths 24-48-96-192 (~0.7M params)."""
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, channels=(24, 48, 96, 192), stem_width=24)


ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "zoo_vit": (build_vit, "vit"),
    "zoo_resnet": (build_resnet, "cnn"),
}


def weights_path(name: str) -> Path:
    """The shipped safetensors file of a zoo model."""
    return Path(str(resources.files("robustvit.models").joinpath("zoo_weights", f"{name}.safetensors")))


def _load(zoo_name: str, *, name: str, family: str | None = None, checkpoint: str | None = None,
          unsafe_pickle: bool = False, preprocess: Mapping[str, Any] | None = None):
    from robustvit.models import wrap

    build, default_family = ARCHITECTURES[zoo_name]
    if checkpoint is None:
        path = weights_path(zoo_name)
        if not path.is_file():
            raise UserError(f"zoo weights {str(path)!r} are missing; make them with 'robustvit zoo train'")
        checkpoint = str(path)
    return wrap(build(), name=name, family=family or default_family, checkpoint=checkpoint,
                unsafe_pickle=unsafe_pickle, data_config=DATA_CONFIG, preprocess=preprocess, num_classes=10)


def zoo_vit(**kwargs: Any):
    """The zoo ViT (see :func:`build_vit`) with its shipped weights, wrapped."""
    return _load("zoo_vit", **kwargs)


def zoo_resnet(**kwargs: Any):
    """The zoo ResNet (see :func:`build_resnet`) with its shipped weights, wrapped."""
    return _load("zoo_resnet", **kwargs)
