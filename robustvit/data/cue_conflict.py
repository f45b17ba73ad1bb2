"""Cue-conflict datasets for the shape-bias suite (Geirhos et al., ICLR 2019; model-vs-human, NeurIPS 2021).

A *cue-conflict source* is a :class:`~robustvit.data.Source` whose images each show the shape of one
category and the texture of another. Besides the usual fields it carries:

* ``categories``: the decision categories (names), in label order;
* ``textures``: per image, the index of its texture category (a long tensor); the label is the
  index of its shape category;
* ``class_map``: how a model's outputs become category probabilities: for each category the output
  indices whose softmax probabilities are averaged (model-vs-human's
  ``ImageNetProbabilitiesTo16ClassesMapping``), or ``None`` when the outputs are the categories;
* ``num_classes``: the class space of the models it is meant for (1,000 ImageNet classes, or the
  number of categories), which the runner checks against every model before any work.

Registered datasets (table :data:`BUILTINS`):

* ``cue_conflict``: the released folder layout of model-vs-human (``datasets/cue-conflict``):
  ``<root>/<shape category>/<image>``, each file name ending in ``-<texture category><number>``
  (``airplane/airplane1-bicycle2.png``). The shape comes from the folder, the texture from the file
  name (as model-vs-human reads it: the part after the last ``_`` and the last ``-``, digits
  dropped). Options: ``root`` (the folder, required) and ``space``: ``"imagenet"`` (default; the
  16 categories and their ImageNet-1k classes, ``robustvit/data/mappings/imagenet16.json``, for
  1000-class models) or ``"categories"`` (the sorted folder names are the model's own classes).
* ``cue_conflict_digits``: an embedded set in the class space of the digits zoo, made at run time
  (:func:`digit_cue_conflict`).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustvit.data import TensorSource
from robustvit.data.folder import IMAGE_SUFFIXES, ImageFolderSource
from robustvit.errors import UserError

BUILTINS: dict[str, str] = {
    "cue_conflict": "robustvit.data.cue_conflict:cue_conflict",
    "cue_conflict_digits": "robustvit.data.cue_conflict:cue_conflict_digits",
}
SPACES = ("imagenet", "categories")
SHAPE_THRESHOLD = 0.25  # a pixel of the 32x32 shape digit at least this bright is inside its silhouette
TILE = 8  # side of one texture element: the texture digit at the 8x8 resolution of the optdigits bitmaps


@lru_cache(maxsize=1)
def imagenet16() -> dict[str, list[int]]:
    """The 16 categories (sorted, as model-vs-human orders them) -> their ImageNet-1k class indices."""
    text = resources.files("robustvit.data").joinpath("mappings", "imagenet16.json").read_text()
    return {name: list(entry["indices"]) for name, entry in json.loads(text)["categories"].items()}


def texture_name(filename: str) -> str:
    """The texture category a model-vs-human file name encodes: ``airplane1-bicycle2.png`` -> ``bicycle``."""
    stem = PurePath(filename).stem.split("_")[-1]
    return "".join(ch for ch in stem.rsplit("-", 1)[-1] if not ch.isdigit())


def is_cue_conflict(source: Any) -> bool:
    """Whether a source carries what the shape-bias suite reads (see the module docstring)."""
    return all(hasattr(source, a) for a in ("categories", "textures", "class_map"))


class CueConflictFolder(ImageFolderSource):
    """The model-vs-human cue-conflict folder layout (see the module docstring)."""

    def __init__(self, root: str | Path, *, space: str = "imagenet") -> None:
        if space not in SPACES:
            raise UserError(f"dataset 'cue_conflict': unknown space {space!r} (allowed: {', '.join(SPACES)})")
        self.space = space
        super().__init__(root)

    def _labelled(self, classes: str | None, subset: str | None) -> list[tuple[Path, int]]:
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if self.space == "imagenet":
            mapping = imagenet16()
            self.categories = list(mapping)
            self.class_map: list[list[int]] | None = [mapping[c] for c in self.categories]
            self.num_classes = 1000
        else:
            self.categories, self.class_map = folders, None
            self.num_classes = len(folders)
        position = {c: i for i, c in enumerate(self.categories)}
        unknown = [f for f in folders if f not in position]
        if unknown:
            raise UserError(f"dataset folder {str(self.root)!r}: shape folder {unknown[0]!r} is not one of the categories "
                            f"({', '.join(self.categories)})")
        samples, textures = [], []
        for folder in folders:
            for path in sorted((self.root / folder).iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                texture = texture_name(path.name)
                if texture not in position:
                    raise UserError(f"cue-conflict image {str(path)!r}: its name gives the texture {texture!r}, not one "
                                    f"of the categories (expected <shape><n>-<texture><m>{path.suffix})")
                samples.append((path, position[folder]))
                textures.append(position[texture])
        self.textures = torch.tensor(textures, dtype=torch.long)
        return samples


def cue_conflict(split: str = "test", root: str | None = None, space: str = "imagenet") -> CueConflictFolder:
    """A cue-conflict folder in model-vs-human's layout (see the module docstring)."""
    if split != "test":
        raise UserError(f"dataset 'cue_conflict' has no split {split!r} (allowed: test)")
    if not root or not isinstance(root, str):
        raise UserError("dataset 'cue_conflict' needs root = <the cue-conflict folder> "
                        "(e.g. data = { name = \"cue_conflict\", root = \"/data/model-vs-human/cue-conflict\" })")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(f"dataset 'cue_conflict': folder {root!r} does not exist")
    return CueConflictFolder(folder, space=space)


def digit_cue_conflict(per_pair: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digit shapes cut out of a wallpaper of another digit: ``(images, shapes, textures)``.

    Why this is a cue conflict: Geirhos et al. (2019) keep the shape of one image and replace its
    local statistics by those of another (style transfer). A handwritten digit has no photographic
    texture; its local statistics are stroke fragments. So the *texture* of digit B is a wallpaper of
    B at the scale of the optdigits bitmaps (8x8 px, a quarter of the image; the 32x32 test image of B
    reduced by 4x4 average pooling), and the *shape* of digit A is its silhouette (its 32x32 test image
    thresholded at 0.25), cut out of that wallpaper: a global A made of local Bs, the hierarchical
    figures of Navon (1977) that psychology uses to set global shape against local features. The
    wallpaper starts at a random phase, so its tiles do not line up with a ViT's patch grid (with the
    zoo ViT's 8 px patches an aligned wallpaper would put one whole B in every patch).

    Every (shape, texture) pair of the 10 digits gets ``per_pair`` images (the 10 pairs with equal
    digits are made too; the suite leaves them out as model-vs-human does); shapes and textures are
    distinct test-split images (the zoo never trained on them), drawn with ``numpy.random.default_rng(seed)``.
    """
    from robustvit.data.catalog import digits

    source = digits("test")
    grey, labels = source.images[:, 0], source.labels.numpy()
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    shapes, textures, shape_idx, texture_idx = [], [], [], []
    for s in range(10):
        for t in range(10):
            for _ in range(per_pair):
                a = int(rng.choice(by_class[s]))
                b = int(rng.choice(by_class[t][by_class[t] != a]))
                shapes.append(s), textures.append(t), shape_idx.append(a), texture_idx.append(b)
    n, side = len(shapes), grey.shape[-1]
    phase = torch.from_numpy(rng.integers(0, TILE, size=(n, 2)))
    tiles = F.avg_pool2d(grey[texture_idx][:, None], side // TILE)[:, 0]  # (n, 8, 8)
    rows = (torch.arange(side)[None, :] + phase[:, :1]) % TILE  # (n, side)
    cols = (torch.arange(side)[None, :] + phase[:, 1:]) % TILE
    wallpaper = tiles[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    silhouette = (grey[shape_idx] > SHAPE_THRESHOLD).float()
    images = (silhouette * wallpaper).clamp(0, 1)[:, None].repeat(1, 3, 1, 1).contiguous()
    return images, torch.tensor(shapes), torch.tensor(textures)


@lru_cache(maxsize=4)
def _digits_source(per_pair: int, seed: int) -> TensorSource:
    images, shapes, textures = digit_cue_conflict(per_pair, seed)
    digest = hashlib.sha256(images.numpy().tobytes() + shapes.numpy().tobytes() + textures.numpy().tobytes())
    source = TensorSource(images, shapes, num_classes=10, name="cue_conflict_digits",
                          fingerprint=digest.hexdigest()[:16])
    source.categories = [str(d) for d in range(10)]  # type: ignore[attr-defined]
    source.textures = textures  # type: ignore[attr-defined]
    source.class_map = None  # type: ignore[attr-defined]
    return source


def cue_conflict_digits(split: str = "test", per_pair: int = 8, seed: int = 0) -> TensorSource:
    """Embedded cue-conflict digits (:func:`digit_cue_conflict`): 800 images by default, 720 with a conflict."""
    if split != "test":
        raise UserError(f"dataset 'cue_conflict_digits' has no split {split!r} (allowed: test)")
    if isinstance(per_pair, bool) or not isinstance(per_pair, int) or per_pair < 1:
        raise UserError(f"dataset 'cue_conflict_digits': per_pair must be a positive integer, got {per_pair!r}")
    return _digits_source(int(per_pair), int(seed))
