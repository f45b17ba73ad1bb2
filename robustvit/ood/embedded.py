"""Far-OOD image sets built offline from scikit-image's bundled sample data, plus a noise set.

All images are float (3, 32, 32) in [0, 1] with label -1, deterministic for a given ``n`` and
``seed`` (the fingerprint is a hash of the pixels):

* ``ood_faces``: the 100 face images of ``skimage.data.lfw_subset()`` (25x25 grey crops of
  Labeled Faces in the Wild) and their mirror images, upsampled to 32x32 bilinearly.
* ``ood_textures``: random square crops (48 to 192 px) of the grey texture photographs
  ``brick``, ``grass`` and ``gravel``, reduced to 32x32 with antialiasing.
* ``ood_photos``: random square crops (64 to 256 px) of colour photographs (``astronaut``,
  ``coffee``, ``chelsea``, ``rocket``, ``hubble_deep_field``, ``immunohistochemistry``,
  ``motorcycle``), reduced to 32x32 with antialiasing.
* ``ood_noise``: a sanity set of i.i.d. uniform RGB noise.

These need scikit-image (the ``ood`` extra) and no network.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from robustvit.errors import UserError

SIZE = 32
TEXTURES = ("brick", "grass", "gravel")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle")


@lru_cache(maxsize=16)
def _fingerprint(images: torch.Tensor) -> str:
    return hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]


def _source(name: str, images: torch.Tensor):
    """A :class:`robustvit.data.TensorSource` of unlabelled images (label -1), fingerprinted by its pixels."""
    from robustvit.data import TensorSource

    labels = torch.full((len(images),), -1, dtype=torch.long)
    return TensorSource(images, labels, num_classes=0, name=name, fingerprint=_fingerprint(images))


def _check(name: str, split: str, n: int) -> None:
    if split != "test":
        raise UserError(f"dataset {name!r} has no split {split!r} (allowed: test)")
    if n < 1:
        raise UserError(f"dataset {name!r}: n must be >= 1, got {n}")


def _skimage(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as exc:
        raise UserError("the embedded OOD image sets need scikit-image: pip install 'robustvit[ood]'") from exc
    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle -> left view


def _as_rgb(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3|4) uint8/float image -> (3, H, W) float in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(image)).float()
    if image.dtype == np.uint8:
        t = t / 255.0
    t = t[None].expand(3, -1, -1) if t.ndim == 2 else t[..., :3].permute(2, 0, 1)
    return t.contiguous()


def _crops(images: list[torch.Tensor], n: int, sizes: tuple[int, int], seed: int) -> torch.Tensor:
    """``n`` random square crops, cycling through ``images``, each reduced to 32x32."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = images[i % len(images)]
        _, h, w = img.shape
        side = int(torch.randint(sizes[0], min(sizes[1], h, w) + 1, (1,), generator=gen))
        top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
        crop = img[None, :, top : top + side, left : left + side]
        out.append(F.interpolate(crop, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out)


@lru_cache(maxsize=8)
def _build(name: str, n: int, seed: int) -> torch.Tensor:
    """The images of a set, made once per process (a few MB each)."""
    if name == "ood_faces":
        faces = torch.from_numpy(_skimage("lfw_subset")[:100]).float()[:, None]  # the first 100 are faces
        faces = torch.cat([faces, faces.flip(-1)])
        images = F.interpolate(faces, size=(SIZE, SIZE), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    elif name == "ood_textures":
        images = _crops([_as_rgb(_skimage(t)) for t in TEXTURES], n, (48, 192), seed)
    elif name == "ood_photos":
        images = _crops([_as_rgb(_skimage(p)) for p in PHOTOS], n, (64, 256), seed)
    else:
        images = torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return images.clamp(0, 1).contiguous()


def ood_faces(split: str = "test"):
    """Far-OOD: 200 faces (100 LFW faces and their mirror images); see the module docstring."""
    _check("ood_faces", split, 1)
    return _source("ood_faces", _build("ood_faces", 200, 0))


def ood_textures(split: str = "test", n: int = 300, seed: int = 0):
    """Far-OOD: crops of grey texture photographs (brick, grass, gravel)."""
    _check("ood_textures", split, n)
    return _source("ood_textures", _build("ood_textures", int(n), int(seed)))


def ood_photos(split: str = "test", n: int = 300, seed: int = 0):
    """Far-OOD: crops of colour photographs of natural scenes, objects and microscopy."""
    _check("ood_photos", split, n)
    return _source("ood_photos", _build("ood_photos", int(n), int(seed)))


def ood_noise(split: str = "test", n: int = 300, seed: int = 0):
    """Sanity set: i.i.d. uniform RGB noise in [0, 1]."""
    _check("ood_noise", split, n)
    return _source("ood_noise", _build("ood_noise", int(n), int(seed)))

