"""Dataset specs and the embedded ``digits`` dataset.

``digits`` is scikit-learn's bundled handwritten digits (UCI optdigits test set: 1,797 8x8 grey
images, 10 classes, values 0-16), scaled to [0,1], upsampled to 32x32 with bilinear
interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``) and repeated to 3
channels. The split is fixed: ``sklearn.model_selection.train_test_split(test_size=0.3,
random_state=0, stratify=labels)``: 1,257 ``train`` and 540 ``test`` images.

A dataset spec is a registered name (``digits``, or ``digits:train`` to pick a split), a folder
path in the ImageNet layout (``folder:/data/x`` or a plain path), or a mapping with ``path`` (or
``name``) and options (``classes``, ``subset``, ``skip_corrupt``, ``unlabelled``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from robustvit.data import Source, TensorSource
from robustvit.errors import UserError

BUILTINS: dict[str, str] = {"digits": "robustvit.data.catalog:digits"}

SPLITS = ("train", "test")
DIGITS_SIZE = 32
FOLDER_OPTIONS = ("classes", "subset", "skip_corrupt", "unlabelled")


@lru_cache(maxsize=2)
def _digits_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        list(range(len(labels))), test_size=0.3, random_state=0, stratify=bunch.target
    )
    idx = torch.tensor(sorted(idx_train if split == "train" else idx_test))
    x = F.interpolate(images[idx, None], size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).repeat(1, 3, 1, 1).contiguous(), labels[idx]


def digits(split: str = "test") -> TensorSource:
    """scikit-learn's digits at 32x32 RGB; ``split`` is ``train`` (1,257) or ``test`` (540)."""
    if split not in SPLITS:
        raise UserError(f"dataset 'digits' has no split {split!r} (allowed: {', '.join(SPLITS)})")
    images, labels = _digits_tensors(split)
    fp = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()[:16]
    return TensorSource(images, labels, num_classes=10, name=f"digits:{split}", fingerprint=fp)


def spec_label(spec: str | Mapping[str, Any]) -> str:
    """The string stored in records' ``dataset`` column for a spec."""
    if isinstance(spec, str):
        return spec
    base = str(spec.get("path") or spec.get("name"))
    opts = {k: v for k, v in spec.items() if k not in ("path", "name")}
    return base + (json.dumps(opts, sort_keys=True) if opts else "")


def _split_dir(root: Path, split: str) -> Path:
    for name in ((split, "val") if split == "test" else (split,)):
        if (root / name).is_dir() and name in ("train", "val", "test"):
            return root / name
    return root


def open_source(spec: str | Mapping[str, Any], split: str = "test") -> Source:
    """Open the dataset a spec names (parsed by :func:`robustvit.data.spec.parse`).

    Folder specs use ``<root>/<split>`` (``val`` for ``test``) when such a sub-folder exists.
    """
    from robustvit.data.spec import parse
    from robustvit.registries import DATASETS

    parsed = parse(spec)
    options = dict(parsed.options)
    if parsed.path is not None:
        unknown = sorted(set(options) - set(FOLDER_OPTIONS))
        if unknown:
            raise UserError(f"dataset {str(parsed.path)!r}: unknown option {unknown[0]!r} "
                            f"(allowed: {', '.join(FOLDER_OPTIONS)})")
        if not parsed.path.is_dir():
            raise UserError(f"dataset folder {str(parsed.path)!r} does not exist")
        from robustvit.data.folder import ImageFolderSource

        return ImageFolderSource(_split_dir(parsed.path, split), **options)
    factory = DATASETS.get(str(parsed.name))
    try:
        return factory(parsed.split or split, **options)
    except TypeError as exc:
        raise UserError(f"dataset {parsed.name!r}: bad options {sorted(options)}: {exc}") from exc
