"""``ood_letters``: near-OOD for the digits zoo, letters made the way scikit-learn's digits were.

scikit-learn's digits (UCI optdigits) are 32x32 binary bitmaps of handwritten digits, size
normalised and centred, then reduced to 8x8 by counting the "on" pixels of each 4x4 block
(values 0-16). Here each image is one letter of the Latin alphabet drawn with the font Pillow
ships (``ImageFont.load_default``, Aileron Regular), with a random stroke width, slant, rotation
and aspect ratio, binarised, size normalised into the 32x32 box, block-counted to 8x8 and then
passed through the ``digits`` pipeline of :mod:`robustvit.data.catalog` (/16, bilinear upsampling
to 32x32, grey to RGB). Letters identical to a digit in most hands (O, o, I, l) are left out;
letters that merely resemble digits (S, Z, B, g, q, ...) stay: that is what makes the set near-OOD.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from robustvit.errors import UserError

LETTERS = "".join(c for c in "ABCDEFGHIJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz")
RENDER = 96  # drawing canvas (pixels); reduced to the 32x32 box afterwards


def _glyph(letter: str, rng: np.random.Generator) -> np.ndarray:
    """One letter as a binary 32x32 bitmap, size normalised and centred like optdigits."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.load_default(size=64)
    canvas = Image.new("L", (RENDER, RENDER), 0)
    ImageDraw.Draw(canvas).text((RENDER // 2, RENDER // 2), letter, fill=255, font=font, anchor="mm")
    stroke = int(rng.choice([1, 3, 5, 7]))
    if stroke > 1:
        canvas = canvas.filter(ImageFilter.MaxFilter(stroke))
    shear = float(rng.uniform(-0.3, 0.3))
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, (1, shear, -shear * RENDER / 2, 0, 1, 0),
                              resample=Image.Resampling.BILINEAR)
    canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    box = canvas.point(lambda v: 255 if v > 96 else 0).getbbox()
    if box is None:  # pragma: no cover - every glyph draws something
        return np.zeros((32, 32), dtype=np.float32)
    crop = canvas.crop(box)
    w, h = crop.size
    # size normalisation: the longer side fills the box (height 32, as optdigits), width to scale
    scale = 32 / max(w, h) * float(rng.uniform(0.8, 1.0))
    crop = crop.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    out = Image.new("L", (32, 32), 0)
    out.paste(crop, ((32 - crop.size[0]) // 2, (32 - crop.size[1]) // 2))
    return (np.asarray(out, dtype=np.float32) > 127).astype(np.float32)


def letters_8x8(n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(n, 8, 8) block counts in 0..16 and the letter of each image."""
    rng = np.random.default_rng(seed)
    chosen = [LETTERS[i % len(LETTERS)] for i in rng.permutation(n)]
    bitmaps = np.stack([_glyph(c, rng) for c in chosen]) if n else np.zeros((0, 32, 32), np.float32)
    counts = bitmaps.reshape(n, 8, 4, 8, 4).sum(axis=(2, 4))
    return counts, chosen


@lru_cache(maxsize=4)
def _images(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 32, 32) letters through the digits pipeline, made once per process."""
    import torch.nn.functional as F

    from robustvit.data.catalog import DIGITS_SIZE

    counts, _ = letters_8x8(n, seed)
    images = torch.from_numpy(counts).float()[:, None] / 16.0
    images = F.interpolate(images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    return images.clamp(0, 1).repeat(1, 3, 1, 1).contiguous()


def ood_letters(split: str = "test", n: int = 500, seed: int = 0):
    """Near-OOD letters in the style of ``digits`` (see the module docstring); label -1.

    Args:
        split: Only ``"test"``.
        n: Number of images; default 500 (about the size of the digits test split).
        seed: Seed of the random glyph styles.
    """
    from robustvit.ood.embedded import _source

    if split != "test":
        raise UserError(f"dataset 'ood_letters' has no split {split!r} (allowed: test)")
    if n < 1:
        raise UserError(f"dataset 'ood_letters': n must be >= 1, got {n}")
    return _source("ood_letters", _images(int(n), int(seed)))
