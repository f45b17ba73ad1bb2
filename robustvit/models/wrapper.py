"""The model wrapper every suite sees: [0,1] RGB in, logits (and penultimate features) out.

Normalisation (mean/std) lives inside the wrapper, so attacks' epsilons and corruptions work in
pixel space for every model alike. Resizing and cropping happen in the data pipeline
(:mod:`robustvit.data.transforms`) from :attr:`ModelWrapper.data_config`, so the tensors handed to
a suite are already at :attr:`ModelWrapper.input_size`.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from robustvit.errors import UserError

FAMILIES = ("vit", "cnn", "hybrid")

# Architecture-name patterns (timm / torchvision names) -> family; first match wins.
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("vit_*_r26_*", "hybrid"), ("vit_*_r50_*", "hybrid"), ("vit_*_resnet*", "hybrid"), ("*levit*", "hybrid"),
    ("*coat*", "hybrid"), ("*convit*", "hybrid"), ("*mobilevit*", "hybrid"), ("*maxvit*", "hybrid"),
    ("*maxxvit*", "hybrid"), ("*efficientformer*", "hybrid"), ("*fastvit*", "hybrid"), ("*next_vit*", "hybrid"),
    ("*vit*", "vit"), ("*deit*", "vit"), ("*swin*", "vit"), ("*beit*", "vit"), ("*crossvit*", "vit"),
    ("*cait*", "vit"), ("*eva*", "vit"), ("*xcit*", "vit"), ("pit_*", "vit"), ("tnt_*", "vit"),
    ("*twins*", "vit"), ("*pvt*", "vit"), ("*mvit*", "vit"), ("*volo*", "vit"), ("*hiera*", "vit"),
    ("*transformer*", "vit"), ("*former*", "vit"),
)


def infer_family(arch: str) -> str:
    """``vit``, ``hybrid`` or ``cnn`` from an architecture name (``cnn`` when nothing matches)."""
    name = arch.lower().rsplit(":", 1)[-1]
    for pattern, family in _FAMILY_PATTERNS:
        if fnmatch.fnmatchcase(name, pattern):
            return family
    return "cnn"


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise UserError(f"unknown model family {family!r} (allowed: {', '.join(FAMILIES)})")
    return family


def _last_linear(model: nn.Module, num_classes: int) -> nn.Module | None:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            last = module
    return last


class ModelWrapper(nn.Module):
    """A classifier that takes float RGB in [0,1] at its native input size.

    Args:
        model: The raw classifier, taking normalised input.
        name: Name shown in results (as the user typed it).
        family: ``vit`` | ``cnn`` | ``hybrid``.
        sha: Checkpoint / weights hash (hex).
        data_config: timm-style preprocessing: ``input_size`` (C,H,W), ``mean``, ``std``,
            ``interpolation``, ``crop_pct``, ``crop_mode``.
        num_classes: Number of logits.
        features_fn: Optional ``fn(model, x_normalised) -> (logits, features)``; timm models use
            ``forward_features`` + ``forward_head(pre_logits=True)``; other modules the input of
            their last ``Linear`` layer with ``num_classes`` outputs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        family: str,
        sha: str,
        data_config: Mapping[str, Any],
        num_classes: int,
        features_fn: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.name = name
        self.family = check_family(family)
        self.sha = sha
        self.data_config = dict(data_config)
        self.input_size = tuple(int(v) for v in self.data_config["input_size"])
        self.num_classes = int(num_classes)
        self.params = sum(p.numel() for p in model.parameters())
        self.register_buffer("mean", torch.tensor(self.data_config["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(self.data_config["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self._features_fn = features_fn
        self.valid_labels: list[int] | None = None
        self._hook_module = None if features_fn else _last_linear(model, self.num_classes)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0,1] RGB to the model's normalised input."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def with_valid_labels(self, valid_labels: list[int] | None) -> ModelWrapper:
        """A view that returns only the logits of a class subset (timm's ``--valid-labels``).

        Used for the 200-class ImageNet-R / ImageNet-A subsets of 1000-class models; shares the
        weights with ``self``.
        """
        if not valid_labels:
            return self
        if max(valid_labels) >= self.num_classes:
            raise UserError(f"model {self.name!r} has {self.num_classes} classes; the dataset's class subset needs more")
        view = copy.copy(self)
        view.valid_labels = list(valid_labels)
        view.num_classes = len(valid_labels)
        return view

    def _select(self, logits: torch.Tensor) -> torch.Tensor:
        if self.valid_labels is None:
            return logits
        return logits[:, torch.as_tensor(self.valid_labels, device=logits.device)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch ``x`` (N,3,H,W) in [0,1] at :attr:`input_size`."""
        return self._select(self.model(self.normalize(x)))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, penultimate features) from one forward pass."""
        z = self.normalize(x)
        if self._features_fn is not None:
            logits, feats = self._features_fn(self.model, z)
            return self._select(logits), feats
        if self._hook_module is None:
            raise UserError(f"model {self.name!r} exposes no penultimate features (no final Linear layer found)")
        captured: list[torch.Tensor] = []
        handle = self._hook_module.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
        try:
            logits = self.model(z)
        finally:
            handle.remove()
        return self._select(logits), captured[-1].flatten(1)

    def describe(self) -> dict[str, Any]:
        """Name, family, hash, parameter count and preprocessing, for manifests and listings."""
        return {"name": self.name, "family": self.family, "sha": self.sha, "params": self.params,
                "num_classes": self.num_classes, **self.data_config}


def timm_features(model: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm models: shared trunk, then the head with and without ``pre_logits``."""
    trunk = model.forward_features(z)
    return model.forward_head(trunk), model.forward_head(trunk, pre_logits=True)
