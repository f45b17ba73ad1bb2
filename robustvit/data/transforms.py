"""Preprocessing from a model's data config, ending in [0,1] tensors at the model's input size.

Follows timm's eval transform (``timm.data.create_transform(is_training=False)``): resize the
shorter side to ``input_size / crop_pct`` with the configured interpolation, centre-crop to
``input_size``, convert to float in [0,1]; normalisation is left to the model wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2

_MODES = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
          "nearest": InterpolationMode.NEAREST, "lanczos": InterpolationMode.LANCZOS,
          "box": InterpolationMode.BOX, "hamming": InterpolationMode.HAMMING}


def _sizes(cfg: Mapping[str, Any]) -> tuple[tuple[int, int], int | tuple[int, int]]:
    _, h, w = cfg["input_size"]
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    if h == w:
        scale: int | tuple[int, int] = math.floor(h / crop_pct)
    else:
        scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    return (h, w), scale


def build_transform(cfg: Mapping[str, Any]) -> v2.Compose:
    """Per-image eval transform (PIL image or uint8/float tensor -> float (3,H,W) in [0,1])."""
    size, scale = _sizes(cfg)
    mode = _MODES.get(str(cfg.get("interpolation", "bilinear")), InterpolationMode.BILINEAR)
    return v2.Compose([
        v2.ToImage(),
        v2.RGB(),
        v2.Resize(scale, interpolation=mode, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Lambda(lambda t: t.clamp_(0.0, 1.0)),
    ])


def fit_batch(images: torch.Tensor, cfg: Mapping[str, Any]) -> torch.Tensor:
    """Batched version of :func:`build_transform` for float batches; a no-op at the right size."""
    size, scale = _sizes(cfg)
    if tuple(images.shape[-2:]) == size:
        return images
    mode = str(cfg.get("interpolation", "bilinear"))
    mode = mode if mode in ("bilinear", "bicubic", "nearest") else "bilinear"
    h, w = images.shape[-2:]
    if isinstance(scale, int):
        ratio = scale / min(h, w)
        target = (max(1, round(h * ratio)), max(1, round(w * ratio)))
    else:
        target = scale
    images = F.interpolate(images, size=target, mode=mode, antialias=mode != "nearest",
                           align_corners=False if mode != "nearest" else None)
    top, left = (target[0] - size[0]) // 2, (target[1] - size[1]) // 2
    return images[..., top:top + size[0], left:left + size[1]].clamp(0.0, 1.0)
