"""ImageNet-9 background variants for the backgrounds suite (Xiao et al., ICLR 2021, "Noise or Signal").

An *ImageNet-9 source* is one variant of a background benchmark: a :class:`~robustvit.data.Source`
whose label is the image's class (``categories`` names them) and which carries:

* ``variant``: which variant it is (:data:`VARIANTS`) and ``variants``: the variants its benchmark has;
* ``class_map``: for each class the model outputs that mean it (a 1000-class model's top-1 ImageNet
  class is mapped onto the nine superclasses, and a class outside them is a wrong answer, as the
  released ``in9_eval.py`` does), or ``None`` when the model's outputs are the classes themselves;
* ``keys``: an id per image (its path below the variant folder); the variants of one benchmark hold
  the same images in the same order, so a per-image comparison of two variants pairs equal keys.

Registered datasets (table :data:`BUILTINS`); the backgrounds suite reads the evaluation dataset's
other variants through :func:`variant_spec`:

* ``imagenet9``: the released test sets, ``<root>/<variant>/val/<nn_class>/<image>`` (``val`` may be
  left out), class folders ``00_dog`` ... ``08_fish``, labelled by their number. Options: ``root``
  (required), ``variant`` (default ``original``) and ``space``: ``"imagenet"`` (default: 1000-class
  models through ``robustvit/data/mappings/imagenet9.json``, the released ``in_to_in9.json``) or
  ``"in9"`` (a 9-class model trained on ImageNet-9).
* ``backgrounds_digits``: an embedded set in the class space of the digits zoo, made at run time
  (:func:`digit_backgrounds`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustvit.data import TensorSource
from robustvit.data.folder import IMAGE_SUFFIXES, ImageFolderSource
from robustvit.errors import UserError

BUILTINS: dict[str, str] = {
    "imagenet9": "robustvit.data.imagenet9:imagenet9",
    "backgrounds_digits": "robustvit.data.imagenet9:backgrounds_digits",
}
#: the variants of Xiao et al.: foreground and background signal in different amounts
VARIANTS = ("original", "only_fg", "mixed_same", "mixed_rand", "mixed_next", "no_fg", "only_bg_t")
SPACES = ("imagenet", "in9")
CLASS_FOLDER = re.compile(r"^(?P<num>\d{2})_(?P<name>.+)$")
SCENE_CONTRAST = 0.5  # the digits' "background": a faint copy of another digit of the class
SCENE_SHIFT = 6  # ... moved by up to this many pixels each way
MASK_LEVEL = 0.1  # the foreground region: where the (3x3-dilated) digit is at least this bright


@lru_cache(maxsize=1)
def imagenet9_classes() -> list[dict[str, Any]]:
    """The nine superclasses in label order: ``name``, ``folder``, ``wnid`` and ImageNet-1k ``indices``."""
    text = resources.files("robustvit.data").joinpath("mappings", "imagenet9.json").read_text()
    return list(json.loads(text)["classes"])


def is_imagenet9(source: Any) -> bool:
    """Whether a source carries what the backgrounds suite reads (see the module docstring)."""
    return all(hasattr(source, a) for a in ("variant", "variants", "categories", "class_map", "keys"))


def variant_spec(spec: str | Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The spec of another variant of the benchmark a (registered) dataset spec names."""
    from robustvit.data.spec import parse

    parsed = parse(spec)
    if parsed.path is not None:
        raise UserError(f"dataset {str(parsed.path)!r} is a plain folder, not a background benchmark (use "
                        "data = { name = \"imagenet9\", root = \"<folder of the variants>\" })")
    name = f"{parsed.name}:{parsed.split}" if parsed.split else str(parsed.name)
    return {"name": name, **parsed.options, "variant": variant}


def _variant_folder(root: Path, variant: str) -> Path:
    return root / variant / "val" if (root / variant / "val").is_dir() else root / variant


@lru_cache(maxsize=8)
def _tree_digest(root: str) -> str:
    """A digest of every variant folder's file names, sizes and times (the benchmark's fingerprint)."""
    digest = hashlib.sha256(root.encode())
    for variant in VARIANTS:
        folder = _variant_folder(Path(root), variant)
        for top, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(top, name))
                digest.update(f"{variant}/{os.path.relpath(os.path.join(top, name), folder)}:{st.st_size}:"
                              f"{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


class ImageNet9Folder(ImageFolderSource):
    """One variant of the released ImageNet-9 test sets (see the module docstring)."""

    def __init__(self, root: Path, *, variant: str, space: str) -> None:
        self.space, self.variant, self.benchmark = space, variant, root
        self.variants = [v for v in VARIANTS if _variant_folder(root, v).is_dir()]
        super().__init__(_variant_folder(root, variant))
        self.name = f"imagenet9:{variant}"
        self.fingerprint = hashlib.sha256(f"{_tree_digest(str(root.resolve()))}|{variant}|{space}".encode()).hexdigest()[:16]

    def _labelled(self, classes: str | None, subset: str | None) -> list[tuple[Path, int]]:
        known = imagenet9_classes()
        self.categories = [c["name"] for c in known]
        self.class_map: list[list[int]] | None = [list(c["indices"]) for c in known] if self.space == "imagenet" else None
        self.num_classes = 1000 if self.space == "imagenet" else len(known)
        samples, keys = [], []
        for folder in sorted(p.name for p in self.root.iterdir() if p.is_dir()):
            match = CLASS_FOLDER.match(folder)
            if match is None or int(match["num"]) >= len(known):
                raise UserError(f"dataset folder {str(self.root)!r}: class folder {folder!r} is not one of the nine "
                                f"ImageNet-9 classes ({', '.join(c['folder'] for c in known)})")
            for path in sorted((self.root / folder).iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    samples.append((path, int(match["num"])))
                    keys.append(f"{folder}/{path.name}")
        self.keys = keys
        return samples


def imagenet9(split: str = "test", root: str | None = None, variant: str = "original",
              space: str = "imagenet") -> ImageNet9Folder:
    """One variant of the released ImageNet-9 test sets (see the module docstring)."""
    if split != "test":
        raise UserError(f"dataset 'imagenet9' has no split {split!r} (allowed: test)")
    if not root or not isinstance(root, str):
        raise UserError("dataset 'imagenet9' needs root = <the folder holding original/, mixed_rand/, ...> "
                        "(e.g. data = { name = \"imagenet9\", root = \"/data/bg_challenge\" })")
    if variant not in VARIANTS:
        raise UserError(f"dataset 'imagenet9': unknown variant {variant!r} (allowed: {', '.join(VARIANTS)})")
    if space not in SPACES:
        raise UserError(f"dataset 'imagenet9': unknown space {space!r} (allowed: {', '.join(SPACES)})")
    base = Path(root).expanduser()
    folder = _variant_folder(base, variant)
    if not folder.is_dir():
        raise UserError(f"dataset 'imagenet9': variant folder {str(folder)!r} does not exist")
    return ImageNet9Folder(base, variant=variant, space=space)


def _shifted(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each (H, W) image moved by its (dy, dx), zeros shifted in."""
    n, h, w = images.shape
    rows = torch.arange(h)[None, :] - shifts[:, :1]
    cols = torch.arange(w)[None, :] - shifts[:, 1:]
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    out = images[torch.arange(n)[:, None, None], rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return out * inside


@lru_cache(maxsize=2)
def digit_backgrounds(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The seven variants of the digits test split: ``({variant: (540, 3, 32, 32)}, labels)``.

    Digits have no background, so each image gets a class-correlated *scene*, the analogue of the
    backgrounds that co-occur with ImageNet classes (Xiao et al. find backgrounds alone classify
    ImageNet-9 far above chance): a faint (contrast 0.5) copy of another test digit of its class,
    moved by up to 6 px each way. The foreground is the digit itself, laid over a scene with its
    intensity as opacity (``fg + (1 - fg) * scene``); its region is where the 3x3-dilated digit is at
    least 0.1. The variants, following Xiao et al.: ``original`` (the digit on its own scene),
    ``only_fg`` (on black), ``no_fg`` (the scene with the foreground region black), ``only_bg_t``
    (the scene alone: it has no hole to fill), ``mixed_same`` / ``mixed_rand`` / ``mixed_next`` (the
    digit on the scene of another image of its class / of a random other image / of an image of the
    next class, ``(y + 1) % 10``). Draws: ``numpy.random.default_rng(seed)``.
    """
    from robustvit.data.catalog import digits

    source = digits("test")
    fg, labels = source.images[:, 0], source.labels
    y = labels.numpy()
    n = len(y)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in range(10)]

    def other(pool: np.ndarray, i: int) -> int:
        return int(rng.choice(pool[pool != i]))

    own = [other(by_class[y[i]], i) for i in range(n)]
    shifts = torch.from_numpy(rng.integers(-SCENE_SHIFT, SCENE_SHIFT + 1, size=(n, 2)))
    scene = SCENE_CONTRAST * _shifted(fg[own], shifts)  # scene[i]: the background of image i
    same = [other(by_class[y[i]], i) for i in range(n)]
    rand = [other(np.arange(n), i) for i in range(n)]
    nxt = [int(rng.choice(by_class[(y[i] + 1) % 10])) for i in range(n)]
    region = F.max_pool2d(fg[:, None], 3, 1, 1)[:, 0] >= MASK_LEVEL

    def over(background: torch.Tensor) -> torch.Tensor:
        return fg + (1 - fg) * background

    grey = {"original": over(scene), "only_fg": fg, "mixed_same": over(scene[same]), "mixed_rand": over(scene[rand]),
            "mixed_next": over(scene[nxt]), "no_fg": scene * ~region, "only_bg_t": scene}
    return {v: grey[v].clamp(0, 1)[:, None].repeat(1, 3, 1, 1).contiguous() for v in VARIANTS}, labels


def backgrounds_digits(split: str = "test", variant: str = "original", seed: int = 0) -> TensorSource:
    """One variant of the embedded digit backgrounds benchmark (:func:`digit_backgrounds`), 540 images."""
    if split != "test":
        raise UserError(f"dataset 'backgrounds_digits' has no split {split!r} (allowed: test)")
    if variant not in VARIANTS:
        raise UserError(f"dataset 'backgrounds_digits': unknown variant {variant!r} (allowed: {', '.join(VARIANTS)})")
    images, labels = digit_backgrounds(int(seed))
    x = images[variant]
    fp = hashlib.sha256(x.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()[:16]
    source = TensorSource(x, labels, num_classes=10, name=f"backgrounds_digits:{variant}", fingerprint=fp)
    source.variant, source.variants = variant, list(VARIANTS)  # type: ignore[attr-defined]
    source.categories = [str(d) for d in range(10)]  # type: ignore[attr-defined]
    source.class_map = None  # type: ignore[attr-defined]
    source.keys = [f"digits:test/{i}" for i in range(len(labels))]  # type: ignore[attr-defined]
    return source
