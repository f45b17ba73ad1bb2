"""The frost textures of ImageNet-C, read from where they already are.

They ship as data files of the ``imagecorruptions`` distribution (``imagecorruptions/frost/``).
That package no longer imports on current releases, so it is never imported: its files are found
through ``importlib.metadata``. Install it without its dependencies
(``pip install --no-deps imagecorruptions==1.1.2``) or point ``frost_dir`` (or the environment
variable ``ROBUSTVIT_FROST_DIR``) at a folder holding ``frost1.png`` ... ``frost6.jpg``.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustvit.errors import UserError

FROST_FILES: tuple[str, ...] = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
ENV_VAR = "ROBUSTVIT_FROST_DIR"
_HINT = ("install the texture files with 'pip install --no-deps imagecorruptions==1.1.2', or pass "
         f"frost_dir=<folder with {', '.join(FROST_FILES)}> (or set {ENV_VAR})")


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FROST_FILES)


def _from_distribution() -> Path | None:
    from importlib import metadata

    try:
        dist = metadata.distribution("imagecorruptions")
    except metadata.PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file("imagecorruptions/frost")))
    return folder if _complete(folder) else None


def frost_dir(folder: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the frost textures: ``folder``, else ``$ROBUSTVIT_FROST_DIR``, else the
    installed ``imagecorruptions`` distribution's data files.

    Raises:
        UserError: if the named folder lacks a texture, or no texture folder can be found.
    """
    for source, candidate in (("frost_dir", folder), (ENV_VAR, os.environ.get(ENV_VAR) or None)):
        if candidate is not None:
            path = Path(candidate).expanduser()
            if not _complete(path):
                missing = [n for n in FROST_FILES if not (path / n).is_file()]
                raise UserError(f"{source}={str(path)!r} lacks frost texture(s) {', '.join(missing)}; {_HINT}")
            return path
    found = _from_distribution()
    if found is None:
        raise UserError(f"the frost corruption needs the ImageNet-C frost textures: {_HINT}")
    return found


@lru_cache(maxsize=8)
def _load(path: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:  # alpha is dropped, as cv2.imread(IMREAD_COLOR) does
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float()


def _fit_scale(th: int, tw: int, h: int, w: int) -> float:
    """imagecorruptions' frost rule: grow the texture to cover the image if needed, then by 1.1."""
    if th >= h and tw >= w:
        scale = 1.0
    elif th < h and tw >= w:
        scale = h / th
    elif th >= h and tw < w:
        scale = w / tw
    else:
        scale = max(h / th, w / tw)
    return scale * 1.1


@lru_cache(maxsize=32)
def frost_textures(folder: str, count: int, h: int, w: int, scale: float | None, interpolation: str,
                   device: torch.device) -> tuple[torch.Tensor, ...]:
    """The first ``count`` textures, resized for ``(h, w)`` images, as float (3, th, tw) in [0, 1].

    ``scale=None`` applies imagecorruptions' size-adaptive rule (``cv2.INTER_CUBIC`` to
    ``ceil(side * s)``); a number resizes by ``scale * max(h, w)`` (the CIFAR-10-C generator shrinks
    by 0.2 at 32 px with ``cv2.INTER_LINEAR``).
    """
    out = []
    for name in FROST_FILES[:count]:
        tex = _load(str(Path(folder) / name))
        th, tw = tex.shape[-2:]
        if scale is None:
            s = _fit_scale(th, tw, h, w)
            size = (math.ceil(th * s), math.ceil(tw * s))
        else:
            s = scale * max(h, w)
            size = (max(round(th * s), h + 1), max(round(tw * s), w + 1))
        resized = F.interpolate(tex.unsqueeze(0), size=size, mode=interpolation, align_corners=False)
        out.append((resized[0].round().clamp(0, 255) / 255.0).to(device))  # cv2.resize returns uint8
    return tuple(out)
