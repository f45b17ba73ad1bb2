"""Make ``random_stats.npz``: imagecorruptions 1.1.2's statistics on photos other than the fixtures'.

Run with a Python that imports imagecorruptions 1.1.2 (``tests/benchmarks/reference_env.sh`` builds
one: ``REF_ENV=/tmp/icref tests/benchmarks/reference_env.sh --help``)::

    /tmp/icref/bin/python tests/data/imagecorruptions/make_random_stats.py   # about 15 min on 1 core

Source images: scikit-image's ``chelsea``, ``rocket`` and ``immunohistochemistry`` (none of them in
``deterministic_subset.npz``), centre-cropped to a square and resized (PIL bicubic) to 224 and 32 px.
For every draw, on the uint8 output and pixel values scaled to [0, 1] (as in ``stats.json``):
``mad`` = mean |corrupted - clean|, ``mean_shift`` = mean(corrupted) - mean(clean), ``grad_ratio`` =
mean absolute finite difference of the grey image, corrupted / clean.

Keys (``{size}`` is 224 or 32; the statistics axis is ``STATS``):

* ``images``, ``stats`` (names), ``clean_{size}`` (3, size, size, 3) uint8: the inputs.
* ``stream_seeds_{size}``: the seeds of the per-draw records; ``{name}_{severity}_{size}_stream``
  (3 images, seeds, 3) float32: one record per image and seed, ``np.random.seed(seed)`` before each
  call (what ``robustvit.corruptions.corrupt`` reproduces with ``generator=RandomState(seed)``), for
  the corruptions in ``STREAM``. 64 seeds at 32 px include draws whose water spatter holds no water
  at all (seeds 35 and 62 at severity 1), which the reference turns black.
* ``{name}_{severity}_{size}_population`` (3 images, 2, 3) float64: mean and standard deviation over
  ``{name}_{size}_draws`` independent draws per image (a seed of its own for every draw, image,
  severity and size: 32 consecutive seeds share frost's texture choice across images and severities,
  which biases a small sample), for every corruption that draws random numbers.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

warnings.filterwarnings("ignore")

from imagecorruptions import corrupt  # noqa: E402
from skimage import data  # noqa: E402

IMAGES = ("chelsea", "rocket", "immunohistochemistry")
SIZES = (224, 32)
STATS = ("mad", "mean_shift", "grad_ratio")
STREAM = ("fog", "frost", "snow", "spatter")
STREAM_SEEDS = {224: 4, 32: 64}
#: independent draws per image for the population statistics: enough that the reference's own
#: sampling error is a small part of the fidelity test's tolerance (10% of mad and grad_ratio,
#: 0.01 of mean_shift), given each corruption's spread from draw to draw
DRAWS = {
    32: {"gaussian_noise": 256, "shot_noise": 256, "impulse_noise": 256, "speckle_noise": 256, "glass_blur": 64,
         "motion_blur": 1024, "snow": 1024, "frost": 2048, "fog": 2048, "spatter": 4096, "elastic_transform": 256},
    224: {"gaussian_noise": 32, "shot_noise": 32, "impulse_noise": 32, "speckle_noise": 32, "glass_blur": 8,
          "motion_blur": 128, "snow": 256, "frost": 512, "fog": 512, "spatter": 256, "elastic_transform": 32},
}
NAMES = tuple(DRAWS[32])
POPULATION_SEED0, MAX_DRAWS = 1_000_000, 8192


def prepare(name: str, size: int) -> np.ndarray:
    a = getattr(data, name)()
    a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
    h, w = a.shape[:2]
    m = min(h, w)
    a = a[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    return np.array(Image.fromarray(a).resize((size, size), Image.BICUBIC))


def grad(a: np.ndarray) -> float:
    g = a.astype(np.float64).mean(-1)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def draw(x: np.ndarray, name: str, severity: int, seed: int) -> tuple[float, float, float]:
    np.random.seed(seed)
    y = np.uint8(np.clip(corrupt(x, corruption_name=name, severity=severity), 0, 255)).astype(np.float64)
    xf = x.astype(np.float64)
    return float(np.abs(y - xf).mean() / 255), float((y.mean() - xf.mean()) / 255), grad(y) / grad(xf)


def population_seed(name: str, severity: int, size: int, image: int, k: int) -> int:
    cell = ((NAMES.index(name) * 5 + severity - 1) * len(SIZES) + SIZES.index(size)) * len(IMAGES) + image
    return POPULATION_SEED0 + cell * MAX_DRAWS + k


def main() -> None:
    out: dict[str, np.ndarray] = {"images": np.array(IMAGES), "stats": np.array(STATS)}
    for size in SIZES:
        clean = np.stack([prepare(n, size) for n in IMAGES])
        out[f"clean_{size}"] = clean
        seeds = np.arange(STREAM_SEEDS[size])
        out[f"stream_seeds_{size}"] = seeds
        for name in NAMES:
            start = time.perf_counter()
            n = DRAWS[size][name]
            out[f"{name}_{size}_draws"] = np.array(n)
            for severity in range(1, 6):
                if name in STREAM:
                    out[f"{name}_{severity}_{size}_stream"] = np.array(
                        [[draw(x, name, severity, int(s)) for s in seeds] for x in clean], dtype=np.float32)
                records = np.array([[draw(x, name, severity, population_seed(name, severity, size, i, k))
                                     for k in range(n)] for i, x in enumerate(clean)])
                out[f"{name}_{severity}_{size}_population"] = np.stack([records.mean(1), records.std(1)], axis=1)
            print(f"{name} {size} px: {time.perf_counter() - start:.0f} s", flush=True)
    np.savez_compressed(Path(__file__).with_name("random_stats.npz"), **out)


if __name__ == "__main__":
    main()
