"""Counter-based random streams, one per image: the same image gets the same numbers in any batch.

A ``torch.Generator`` hands out numbers in call order, so what image ``i`` of a batch receives
depends on the images before it, on the batch size and on the shard a worker was given. Here each
image has a key derived from (run seed, *parts, its dataset index), and the ``p``-th number of its
stream is a hash of (key, p): every draw is one batched tensor expression, the numbers depend only on
the image and the position in its stream, and CPU and CUDA give the same bits. This is the design
of counter-based generators (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; JAX
keys), with a 32-bit integer hash (two rounds of xor-shift-multiply, constants from Wellons'
hash-prospector) as the bijection, computed in int64 without overflow.

A draw takes a shape whose first axis is the images; image ``i`` gets the next ``prod(shape[1:])``
positions of its stream (its cursor moves on). Slicing (``streams[a:b]``) gives the streams of a
sub-batch sharing the cursors, so a loop over chunks draws what one call on the whole batch would. Used by the corruption engine
(:func:`robustvit.corruptions.corrupt` accepts an :class:`ImageStreams` as ``generator``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_M32 = 0xFFFFFFFF
_C1, _C2 = 0x21F0AAAD, 0x735A2D97  # both < 2**31: x * c < 2**63 for any 32-bit x


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijection of 32-bit values (int64 tensor holding values in [0, 2**32)), well mixed."""
    x = x ^ (x >> 16)
    x = (x * _C1) & _M32
    x = x ^ (x >> 15)
    x = (x * _C2) & _M32
    return x ^ (x >> 15)


class ImageStreams:
    """One counter-based random stream per image (see the module docstring)."""

    def __init__(self, keys: torch.Tensor, cursors: torch.Tensor | None = None) -> None:
        if keys.dim() != 2 or keys.shape[1] != 2:
            raise ValueError("keys must be (n, 2) 32-bit words")
        self.keys = keys.to(torch.int64)
        #: per image, the next position of its stream (a slice shares the parent's storage)
        self.cursors = torch.zeros(len(keys), dtype=torch.int64, device=keys.device) if cursors is None else cursors

    @classmethod
    def for_images(cls, seed: int, index: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu") -> ImageStreams:
        """Streams of the images at dataset positions ``index`` under a 63-bit ``seed`` (e.g. from
        :func:`robustvit.context.derive_seed` of the run seed, suite and cell)."""
        idx = torch.as_tensor(index, dtype=torch.int64).reshape(-1).to(device)
        lo = torch.full_like(idx, seed & _M32)
        hi = torch.full_like(idx, (seed >> 32) & _M32)
        w0 = mix32(lo ^ mix32(idx & _M32))
        w1 = mix32(hi ^ mix32((idx >> 32) ^ w0))
        return cls(torch.stack([w0, w1], 1))

    def __len__(self) -> int:
        return self.keys.shape[0]

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def __getitem__(self, item: slice) -> ImageStreams:
        """The streams of a sub-batch; their draws advance this object's cursors of those images too."""
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("ImageStreams can only be sliced contiguously")
        return ImageStreams(self.keys[item], self.cursors[item])

    def bits(self, shape: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
        """Uniform 32-bit integers (int64 tensor of ``shape``; ``shape[0]`` = number of images)."""
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self):
            raise ValueError(f"a draw's first axis must be the {len(self)} images, got shape {shape}")
        per = math.prod(shape[1:])
        pos = self.cursors[:, None] + torch.arange(per, dtype=torch.int64, device=self.keys.device)
        self.cursors += per  # in place: a slice moves its parent's cursors of the same images
        h = mix32(mix32(pos ^ self.keys[:, 1:2]) ^ self.keys[:, 0:1])
        return h.view(shape) if device is None else h.view(shape).to(device)

    def uniform(self, shape: Sequence[int], device: torch.device | None = None, low: float = 0.0, high: float = 1.0,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``U[low, high)``; float64 draws use 53 bits (two stream positions per number)."""
        if dtype == torch.float64:
            b = self.bits((*shape, 2), device)
            u = ((b[..., 0] >> 6) * 67108864 + (b[..., 1] >> 5)).to(torch.float64) * 2.0 ** -53
        else:
            u = (self.bits(shape, device) >> 8).to(torch.float32).mul_(2.0 ** -24).to(dtype)
        if low != 0.0 or high != 1.0:
            u = u.mul_(high - low).add_(low)
        return u

    def normal(self, shape: Sequence[int], device: torch.device | None = None, mean: float = 0.0,
               std: float = 1.0) -> torch.Tensor:
        """``N(mean, std^2)`` in float32 by the Box-Muller transform of two uniforms per number."""
        b = self.bits((*shape, 2), device)
        u1 = ((b[..., 0] >> 8) + 1).to(torch.float32).mul_(2.0 ** -24)  # (0, 1]: the log stays finite
        u2 = (b[..., 1] >> 8).to(torch.float32).mul_(2.0 ** -24)
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
        if std != 1.0 or mean != 0.0:
            z = z.mul_(std).add_(mean)
        return z
