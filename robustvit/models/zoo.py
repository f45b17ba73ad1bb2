"""The embedded zoo: one small model per seed family, trained on the embedded ``digits`` dataset.

Every model takes 32x32 RGB in [0,1] and predicts 10 classes, has 0.5-0.8M parameters, and was trained
by the same recipe (:mod:`robustvit.models.zoo_train`). Their weights ship with the package
(``robustvit/models/zoo_weights/*.safetensors``) and are made by ``robustvit zoo train``;
``zoo_weights/MODEL_CARD.md`` states the command, recipe, parameter counts, test accuracies, training
times and sha256 of each file.

The families the project compares: ViT (Dosovitskiy et al. 2021), DeiT with a distillation token (Touvron
et al. 2021; teacher: the zoo ResNet), Swin (Liu et al. 2021), CrossViT (Chen et al. 2021), BEiT (Bao et al.
2022; architecture only: relative position bias, layer scale, mean pooling; no masked-image pre-training),
DeepViT (Zhou et al. 2021, :mod:`robustvit.models.deepvit`), ViL (Zhang et al. 2021,
:mod:`robustvit.models.vil`), and the CNNs ResNet (He et al. 2016) and BiT (Kolesnikov et al. 2020:
pre-activation ResNetV2 with GroupNorm and weight standardisation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from robustvit.errors import UserError

BUILTINS: dict[str, str] = {
    "zoo_vit": "robustvit.models.zoo:zoo_vit",
    "zoo_resnet": "robustvit.models.zoo:zoo_resnet",
    "zoo_deit": "robustvit.models.zoo:zoo_deit",
    "zoo_swin": "robustvit.models.zoo:zoo_swin",
    "zoo_crossvit": "robustvit.models.zoo:zoo_crossvit",
    "zoo_beit": "robustvit.models.zoo:zoo_beit",
    "zoo_bit": "robustvit.models.zoo:zoo_bit",
    "zoo_deepvit": "robustvit.models.zoo:zoo_deepvit",
    "zoo_vil": "robustvit.models.zoo:zoo_vil",
}

DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
}


def build_vit(drop_path_rate: float = 0.0) -> nn.Module:
    """ViT with 8x8 patches (16 tokens + class token), width 128, depth 4, 4 heads, MLP 3x."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=8, num_classes=10, embed_dim=128, depth=4, num_heads=4,
                             mlp_ratio=3.0, drop_path_rate=drop_path_rate)


def build_resnet(drop_path_rate: float = 0.0) -> nn.Module:
    """ResNet-10 style (one BasicBlock per stage), widths 24-48-96-192."""
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, channels=(24, 48, 96, 192), stem_width=24,
                  drop_path_rate=drop_path_rate)


def build_deit(drop_path_rate: float = 0.0) -> nn.Module:
    """DeiT: the zoo ViT plus a distillation token and head (eval: mean of the two heads)."""
    from timm.models.deit import VisionTransformerDistilled

    return VisionTransformerDistilled(img_size=32, patch_size=8, num_classes=10, embed_dim=128, depth=4,
                                      num_heads=4, mlp_ratio=3.0, drop_path_rate=drop_path_rate)


def build_swin(drop_path_rate: float = 0.0) -> nn.Module:
    """Swin: 2x2 patches, 4x4 windows (shifted every other block), 3 stages of 2 blocks, widths 36-72-144."""
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=32, patch_size=2, window_size=4, embed_dim=36, depths=(2, 2, 2),
                           num_heads=(1, 2, 4), mlp_ratio=3.0, num_classes=10, drop_path_rate=drop_path_rate)


def build_crossvit(drop_path_rate: float = 0.0) -> nn.Module:
    """CrossViT: 4x4-patch branch (width 48) and 8x8-patch branch (width 96), 2 multi-scale blocks with
    cross-attention between the branches' class tokens."""
    from timm.models.crossvit import CrossVit

    return CrossVit(img_size=32, img_scale=(1.0, 1.0), patch_size=(4, 8), embed_dim=(48, 96),
                    depth=((1, 2, 0), (1, 2, 0)), num_heads=(2, 4), mlp_ratio=(3.0, 3.0, 1.0), num_classes=10,
                    drop_path_rate=drop_path_rate)


def build_beit(drop_path_rate: float = 0.0) -> nn.Module:
    """BEiT: 8x8 patches, width 128, depth 4, 4 heads, relative position bias per block and absolute position
    embeddings (both options of the BEiT code; with the relative bias alone it reached 96.1% under the shared
    recipe, 99.8% with both), layer scale 0.1, mean-pooled head."""
    from timm.models.beit import Beit

    return Beit(img_size=32, patch_size=8, num_classes=10, embed_dim=128, depth=4, num_heads=4, mlp_ratio=3.0,
                use_abs_pos_emb=True, use_rel_pos_bias=True, init_values=0.1, drop_path_rate=drop_path_rate)


def build_bit(drop_path_rate: float = 0.0) -> nn.Module:
    """BiT: pre-activation ResNetV2, one bottleneck per stage, widths 128-256-512, GroupNorm (32 groups) and
    weight-standardised convolutions."""
    from timm.models.resnetv2 import ResNetV2

    return ResNetV2([1, 1, 1], channels=(128, 256, 512), num_classes=10, stem_chs=64, drop_path_rate=drop_path_rate)


def build_deepvit(drop_path_rate: float = 0.0) -> nn.Module:
    """DeepViT: 8x8 patches, width 80, depth 8, 4 heads, MLP 3x, re-attention in every block."""
    from robustvit.models.deepvit import DeepViT, Variant

    return DeepViT(Variant(embed_dim=80, depth=8, num_heads=4, img_size=32, patch_size=8, crop_pct=1.0),
                   num_classes=10, drop_path_rate=drop_path_rate)


def build_vil(drop_path_rate: float = 0.0) -> nn.Module:
    """ViL: 3 stages (16x16, 8x8, 4x4 tokens; widths 32-64-128; 1-2-2 blocks; 1-2-4 heads), one global token
    per stage, Longformer attention with one-sided window 2 in the first two stages, full attention in the last."""
    from robustvit.models.vil import Stage, ViL

    stages = (Stage(n=1, p=2, h=1, d=32, f=2), Stage(n=2, p=2, h=2, d=64, f=2), Stage(n=2, p=2, h=4, d=128, s=False))
    return ViL(stages, img_size=32, num_classes=10, drop_path_rate=drop_path_rate)


@dataclass(frozen=True)
class ZooArch:
    """How a zoo model is built: ``build(drop_path_rate)``, family tag, one line for the model card."""

    build: Callable[..., nn.Module]
    family: str
    summary: str
    note: str = ""  # why the configuration departs from the family's usual one, for the model card


#: in training order (the DeiT's teacher, the ResNet, comes first)
ARCHITECTURES: dict[str, ZooArch] = {
    "zoo_vit": ZooArch(build_vit, "vit", "ViT, 8x8 patches, width 128, depth 4, 4 heads"),
    "zoo_resnet": ZooArch(build_resnet, "cnn", "ResNet, 1 BasicBlock/stage, widths 24-192"),
    "zoo_deit": ZooArch(build_deit, "vit", "DeiT, as zoo_vit + distillation token (teacher zoo_resnet)"),
    "zoo_swin": ZooArch(build_swin, "vit", "Swin, 2x2 patches, 4x4 windows, depths 2-2-2, widths 36-144"),
    "zoo_crossvit": ZooArch(build_crossvit, "vit", "CrossViT, 4x4 + 8x8 patch branches, widths 48/96"),
    "zoo_beit": ZooArch(build_beit, "vit", "BEiT, 8x8 patches, width 128, depth 4, abs. + rel. pos.",
                        "absolute position embeddings besides the relative position bias (both are options of the "
                        "BEiT code): with the relative bias alone it reached 96.1% under the shared recipe"),
    "zoo_bit": ZooArch(build_bit, "cnn", "BiT ResNetV2, GroupNorm + StdConv, widths 128-512"),
    "zoo_deepvit": ZooArch(build_deepvit, "vit", "DeepViT, 8x8 patches, width 80, depth 8, re-attention"),
    "zoo_vil": ZooArch(build_vil, "vit", "ViL, 3 stages (16x16, 8x8, 4x4 tokens), widths 32-128"),
}


def weights_path(name: str) -> Path:
    """The shipped safetensors file of a zoo model."""
    return Path(str(resources.files("robustvit.models").joinpath("zoo_weights", f"{name}.safetensors")))


def _load(zoo_name: str, *, name: str, family: str | None = None, checkpoint: str | None = None,
          unsafe_pickle: bool = False, preprocess: Mapping[str, Any] | None = None):
    from robustvit.models import wrap

    arch = ARCHITECTURES[zoo_name]
    if checkpoint is None:
        path = weights_path(zoo_name)
        if not path.is_file():
            raise UserError(f"zoo weights {str(path)!r} are missing; make them with 'robustvit zoo train'")
        checkpoint = str(path)
    return wrap(arch.build(), name=name, family=family or arch.family, checkpoint=checkpoint,
                unsafe_pickle=unsafe_pickle, data_config=DATA_CONFIG, preprocess=preprocess, num_classes=10)


def zoo_vit(**kwargs: Any):
    """The zoo ViT (see :func:`build_vit`) with its shipped weights, wrapped."""
    return _load("zoo_vit", **kwargs)


def zoo_resnet(**kwargs: Any):
    """The zoo ResNet (see :func:`build_resnet`) with its shipped weights, wrapped."""
    return _load("zoo_resnet", **kwargs)


def zoo_deit(**kwargs: Any):
    """The zoo DeiT (see :func:`build_deit`) with its shipped weights, wrapped."""
    return _load("zoo_deit", **kwargs)


def zoo_swin(**kwargs: Any):
    """The zoo Swin (see :func:`build_swin`) with its shipped weights, wrapped."""
    return _load("zoo_swin", **kwargs)


def zoo_crossvit(**kwargs: Any):
    """The zoo CrossViT (see :func:`build_crossvit`) with its shipped weights, wrapped."""
    return _load("zoo_crossvit", **kwargs)


def zoo_beit(**kwargs: Any):
    """The zoo BEiT (see :func:`build_beit`) with its shipped weights, wrapped."""
    return _load("zoo_beit", **kwargs)


def zoo_bit(**kwargs: Any):
    """The zoo BiT (see :func:`build_bit`) with its shipped weights, wrapped."""
    return _load("zoo_bit", **kwargs)


def zoo_deepvit(**kwargs: Any):
    """The zoo DeepViT (see :func:`build_deepvit`) with its shipped weights, wrapped."""
    return _load("zoo_deepvit", **kwargs)


def zoo_vil(**kwargs: Any):
    """The zoo ViL (see :func:`build_vil`) with its shipped weights, wrapped."""
    return _load("zoo_vil", **kwargs)
