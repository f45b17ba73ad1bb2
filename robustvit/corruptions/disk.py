"""The released corrupted datasets on disk: ImageNet-C folders and CIFAR-10-C arrays.

* ImageNet-C (Hendrycks & Dietterich, 2019): ``<root>/<corruption>/<severity>/<wnid>/*.JPEG``,
  224x224 images already resized and centre-cropped; read with
  :class:`robustvit.data.folder.ImageFolderSource` per (corruption, severity).
* CIFAR-10-C: ``<root>/<corruption>.npy`` (50000, 32, 32, 3) uint8, the five severities stacked in
  order (10000 images each), and ``<root>/labels.npy``.

The images are only resized to the model's input size when it differs (no crop: the released
images are already cropped, and Hendrycks' ``test.py`` feeds them as they are).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustvit.errors import UserError


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float batch resized (bilinear, antialiased) to ``size`` when it is not already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)


def imagenet_c_folder(root: str | Path, corruption: str, severity: int) -> Path:
    """``<root>/<corruption>/<severity>``, or a clear error naming what is missing."""
    folder = Path(root) / corruption / str(severity)
    if not folder.is_dir():
        raise UserError(f"ImageNet-C folder {str(folder)!r} does not exist (layout: <root>/<corruption>/<severity>/<wnid>/*.JPEG)")
    return folder


def imagenet_c_batches(root: str | Path, corruption: str, severity: int, *, indices: list[int] | None,
                       batch_size: int, size: tuple[int, int], classes: str | None, workers: int = 0,
                       device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(x, y)`` of one ImageNet-C (corruption, severity) folder, x in [0, 1] at ``size``."""
    from torchvision.transforms import v2

    from robustvit.data.folder import ImageFolderSource

    source = ImageFolderSource(imagenet_c_folder(root, corruption, severity), classes=classes)
    source.transform = v2.Compose([v2.ToImage(), v2.RGB(), v2.ToDtype(torch.float32, scale=True)])
    subset = torch.utils.data.Subset(source, list(range(len(source))) if indices is None else indices)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_stack)
    for x, y in loader:
        yield resize_to(x.to(device), size), y.to(device)


def _stack(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(b[0].shape) for b in batch}
    if len(shapes) > 1:  # not the released layout; bring odd sizes to the first one
        first = batch[0][0].shape[-2:]
        return (torch.stack([resize_to(b[0][None], tuple(first))[0] for b in batch]),
                torch.tensor([b[1] for b in batch], dtype=torch.long))
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.long)


def cifar10_c_arrays(root: str | Path, corruption: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped ``<corruption>.npy`` and ``labels.npy`` of a CIFAR-10-C folder."""
    root = Path(root)
    images_path, labels_path = root / f"{corruption}.npy", root / "labels.npy"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise UserError(f"CIFAR-10-C file {str(path)!r} does not exist (layout: <root>/<corruption>.npy, <root>/labels.npy)")
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path, mmap_mode="r")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] % 5 or len(labels) != images.shape[0]:
        raise UserError(f"{str(images_path)!r}: expected (5*N, H, W, 3) images with as many labels in labels.npy, "
                        f"got {images.shape} and {len(labels)} labels")
    return images, labels


def cifar10_c_batches(root: str | Path, corruption: str, severity: int, *, indices: list[int] | None,
                      batch_size: int, size: tuple[int, int],
                      device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of one CIFAR-10-C corruption at one severity (rows ``(s-1)*N .. s*N - 1``)."""
    images, labels = cifar10_c_arrays(root, corruption)
    per = images.shape[0] // 5
    rows = np.arange(per) if indices is None else np.asarray(indices, dtype=np.int64)
    rows = rows + (severity - 1) * per
    for i in range(0, len(rows), batch_size):
        sel = rows[i: i + batch_size]
        x = torch.from_numpy(np.ascontiguousarray(images[sel])).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(np.asarray(labels[sel]).astype(np.int64)).to(device)
        yield resize_to(x, size), y


def cifar10_c_count(root: str | Path, corruption: str) -> int:
    """Images per severity in a CIFAR-10-C corruption file."""
    images, _ = cifar10_c_arrays(root, corruption)
    return images.shape[0] // 5
