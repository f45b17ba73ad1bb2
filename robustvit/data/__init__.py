"""Datasets: what a suite evaluates on.

A :class:`Source` is a map-style torch Dataset of ``(image, label)``: images as float tensors
(3,H,W) in [0,1] (or PIL images, turned into such tensors by the model's transform), labels as
ints (``-1`` for unlabelled OOD data). It carries ``num_classes``, ``valid_labels`` (the logit
indices a class subset such as ImageNet-R's 200 classes maps onto, else ``None``) and a
``fingerprint`` that identifies its content for caching.

Specs a user can type: a registered dataset name (``digits``, ``digits:train``) or a folder path
in the ImageNet layout (``/data/imagenet-r``, ``folder:/data/x``; options in suite files).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset


class Source(Dataset):
    """Base of dataset sources; subclasses implement ``__len__`` and ``load(i)``."""

    num_classes: int = 0
    valid_labels: list[int] | None = None
    fingerprint: str = ""
    name: str = ""

    def __init__(self) -> None:
        self.transform: Callable[[Any], torch.Tensor] | None = None

    def load(self, index: int) -> tuple[Any, int]:
        raise NotImplementedError

    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of the stored images (of the first, where sizes vary); None if unknown."""
        return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


class TensorSource(Source):
    """Images already in memory as a float tensor (N,3,H,W) in [0,1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, name: str,
                 fingerprint: str, valid_labels: list[int] | None = None) -> None:
        super().__init__()
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N,3,H,W), got {tuple(images.shape)}")
        self.images = images.float()
        self.labels = labels.long()
        self.num_classes = num_classes
        self.name = name
        self.fingerprint = fingerprint
        self.valid_labels = valid_labels

    def __len__(self) -> int:
        return len(self.labels)

    def image_size(self) -> tuple[int, int] | None:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
