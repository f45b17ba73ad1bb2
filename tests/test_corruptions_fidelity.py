"""Fidelity to imagecorruptions 1.1.2 (reference outputs in tests/data/imagecorruptions).

* The 8 corruptions that draw no random numbers: mean absolute difference from the reference's
  uint8 outputs at most 1/255 (JPEG 2/255), every severity, at 224 and 32 px.
* The 11 random ones: statistics over the same two clean images and 8 draws each (``mad``,
  ``grad_ratio`` within 10% of the reference, ``mean_shift`` within 0.01).

  Fog, frost, snow and spatter are checked with the reference's own random streams (reference
  mode: a ``numpy.random.RandomState(seed)`` per image, as ``np.random.seed(seed)`` before each
  reference call): the reference's 16 draws of these are too few for the band (frost's texture
  choice; spatter's mad_sd is 50-60% of its mean at severity 1; fog's and snow's mean shift vary by
  more than 0.01 between samples of 16: 64 fresh draws of fog put the population mean shift 0.024
  below the reference's sample at severity 2), so comparing fresh draws with them tests the luck
  of the draw. With the same draws the statistics must agree, and do within 2%.

On three other photos (``random_stats.npz``, made by ``make_random_stats.py`` beside it: scikit-image's
chelsea, rocket and immunohistochemistry) the random corruptions are checked twice:

* Draw by draw on the reference's streams (fog, frost, snow, spatter at 32 px: seeds 0-15 and every
  seed of the 64 recorded at which the reference's output is black; fog, frost, spatter at 224 px:
  seeds 0-3): each draw's statistics must match the reference's record of the same seed, whatever
  the luck of the draw. This catches a wrong texture choice or crop, a wrong plasma mapping, or
  water spatter that holds no water, which the reference turns black (0 / 0 cast to uint8).
* As populations (fresh ``torch.Generator`` draws, the sampling path of every run; every random
  corruption at 32 px, frost, fog and spatter at 224 px): the mean over the photos of each
  statistic must be within 10% (mad, grad_ratio) or 0.01 (mean_shift) of the reference's, a mean
  over 256-4096 (224 px: 8-512) independent draws per photo. A sample mean is only as precise as the
  spread of its draws allows (frost's mean shift varies by 0.11 from draw to draw, by its texture
  choice), so the bound is widened to 4 standard errors of the difference where that is larger: at
  32 px only for frost's mean shift (by up to 1.3x) and spatter's mad at severity 1 (2.3x: its black
  draws); at 224 px, with 24-48 draws per photo, for frost's and fog's mean shift by 1.5-3.6x (the
  draw-by-draw check is the tight one there). 32 draws from consecutive seeds, shared by the photos
  and the severities, are too few: seeds 0-31 pick frost's bright textures frost2-frost4 23 times in
  32 (19 expected), which puts the reference's 32-seed mean shift 0.011-0.022 above its population
  mean on these photos at 224 px.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from robustvit.corruptions import ALL, corrupt

DATA = Path(__file__).parent / "data" / "imagecorruptions"
DETERMINISTIC = ["defocus_blur", "zoom_blur", "brightness", "contrast", "saturate", "pixelate", "jpeg_compression",
                 "gaussian_blur"]
RANDOM = [c for c in ALL if c not in DETERMINISTIC]
SAME_STREAM = ["fog", "frost", "snow", "spatter"]
SEEDS = 8
SIZES = [pytest.param(224, marks=pytest.mark.slow), 32]  # 224 px: about a minute in all on 2 CPU cores


@lru_cache(maxsize=1)
def fixture() -> dict[str, np.ndarray]:
    with np.load(DATA / "deterministic_subset.npz") as d:
        return {k: d[k] for k in d.files}


@lru_cache(maxsize=1)
def reference_stats() -> dict[str, dict[str, float]]:
    return json.loads((DATA / "stats.json").read_text())["stats"]


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2).float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """The reference's ``np.uint8(np.clip(out, 0, 255))`` (truncation) of our [0, 1] output."""
    return np.uint8(np.clip(x.permute(0, 2, 3, 1).numpy() * 255.0, 0, 255))


def image_stats(out: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Mean over images of stats.json's ``mad``, ``mean_shift`` and ``grad_ratio``."""
    y, x = out.astype(np.float64), clean.astype(np.float64)

    def grad(a: np.ndarray) -> np.ndarray:
        g = a.mean(-1)
        return np.abs(np.diff(g, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(g, axis=2)).mean(axis=(1, 2))

    return {"mad": float((np.abs(y - x).mean(axis=(1, 2, 3)) / 255).mean()),
            "mean_shift": float(((y.mean(axis=(1, 2, 3)) - x.mean(axis=(1, 2, 3))) / 255).mean()),
            "grad_ratio": float((grad(y) / grad(x)).mean())}


def check_stats(ours: dict[str, float], ref: dict[str, float], where: str, rel: float = 0.10) -> None:
    assert abs(ours["mad"] / ref["mad"] - 1) <= rel, f"{where}: mad {ours['mad']:.4f} vs {ref['mad']:.4f}"
    assert abs(ours["grad_ratio"] / ref["grad_ratio"] - 1) <= rel, \
        f"{where}: grad_ratio {ours['grad_ratio']:.4f} vs {ref['grad_ratio']:.4f}"
    assert abs(ours["mean_shift"] - ref["mean_shift"]) <= 0.01, \
        f"{where}: mean_shift {ours['mean_shift']:+.4f} vs {ref['mean_shift']:+.4f}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_match_reference(name: str, size: int) -> None:
    d = fixture()
    clean = to_tensor(d[f"clean_{size}"])
    tol = (2.0 if name == "jpeg_compression" else 1.0) / 255.0
    for severity in range(1, 6):
        ours = to_uint8(corrupt(clean, name, severity)).astype(np.float64)
        if size == 224:
            ours = ours[:, ::4, ::4]  # the fixture keeps every 4th row and column
        mad = np.abs(ours - d[f"{name}_{severity}_{size}"]).mean() / 255.0
        assert mad <= tol, f"{name}/{severity}/{size}: MAD {mad * 255:.3f}/255"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", [c for c in RANDOM if c not in SAME_STREAM])
def test_random_corruptions_match_reference_statistics(name: str, size: int) -> None:
    clean_u8 = fixture()[f"clean_{size}"]
    batch = np.concatenate([clean_u8] * SEEDS)  # 8 independent draws of each image, one batched call
    for severity in range(1, 6):
        g = torch.Generator().manual_seed(severity)
        ours = to_uint8(corrupt(to_tensor(batch), name, severity, generator=g))
        check_stats(image_stats(ours, batch), reference_stats()[f"{name}/{severity}/{size}"],
                    f"{name}/{severity}/{size}")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", SAME_STREAM)
def test_random_corruptions_on_the_reference_streams(name: str, size: int) -> None:
    clean_u8 = fixture()[f"clean_{size}"]
    for severity in range(1, 6):
        outs, cleans = [], []
        for seed in range(SEEDS):
            for image in clean_u8:
                rs = np.random.RandomState(seed)  # as np.random.seed(seed) before each reference call
                outs.append(to_uint8(corrupt(to_tensor(image[None]), name, severity, generator=rs)))
                cleans.append(image[None])
        stats = image_stats(np.concatenate(outs), np.concatenate(cleans))
        check_stats(stats, reference_stats()[f"{name}/{severity}/{size}"], f"{name}/{severity}/{size}", rel=0.02)


# -- other photos: random_stats.npz ---------------------------------------------------------------

#: fresh draws per photo for the population check, at a few seconds per corruption: at 32 px, with
#: the reference's 256-4096, 4 standard errors of the difference stay within the tolerance but for
#: frost's mean shift and spatter's mad at severity 1 (see the module docstring). At 224 px the
#: check is for the three reported to drift (frost, fog, spatter), with fewer draws: the others are
#: checked by test_random_corruptions_match_reference_statistics, and they draw as they do at 32 px.
POPULATION_DRAWS = {
    32: {"gaussian_noise": 32, "shot_noise": 32, "impulse_noise": 32, "speckle_noise": 32, "glass_blur": 16,
         "motion_blur": 192, "snow": 256, "frost": 512, "fog": 512, "spatter": 1024, "elastic_transform": 32},
    224: {"frost": 48, "fog": 48, "spatter": 24},
}
STAT_NAMES = ("mad", "mean_shift", "grad_ratio")
STREAM_SEEDS = 16  # per-draw check: the first 16 seeds, and every seed at which the reference's output is black


@lru_cache(maxsize=1)
def other_photos() -> dict[str, np.ndarray]:
    with np.load(DATA / "random_stats.npz") as d:
        return {k: d[k] for k in d.files}


def draw_stats(out: torch.Tensor, clean: torch.Tensor) -> np.ndarray:
    """``(mad, mean_shift, grad_ratio)`` of each image of ``out`` ([0, 1] floats) against ``clean``
    (0-255 levels), ``(N, 3)``: ``image_stats`` per image, on ``to_uint8``'s truncated levels."""
    y = out.mul(255.0).clamp_(0.0, 255.0).floor_().double()
    x = clean.double()

    def grad(a: torch.Tensor) -> torch.Tensor:
        g = a.mean(1)
        return (g.diff(dim=1).abs().mean(dim=(1, 2)) + g.diff(dim=2).abs().mean(dim=(1, 2)))

    return torch.stack([(y - x).abs().mean(dim=(1, 2, 3)) / 255, (y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))) / 255,
                        grad(y) / grad(x)], dim=-1).numpy()


def stream_seeds(name: str, size: int) -> np.ndarray:
    d = other_photos()
    black = np.concatenate([np.nonzero((d[f"{name}_{s}_{size}_stream"][..., 2] == 0).any(0))[0] for s in range(1, 6)])
    return d[f"stream_seeds_{size}"][np.union1d(np.arange(min(STREAM_SEEDS, len(d[f"stream_seeds_{size}"]))), black)]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("name", "size"), [(n, 32) for n in SAME_STREAM] + [
    pytest.param(n, 224, marks=pytest.mark.slow) for n in ("fog", "frost", "spatter")])
def test_random_corruptions_draw_by_draw_on_other_photos(name: str, size: int) -> None:
    """Every draw of ours under ``RandomState(seed)`` against the reference's record of that seed
    (snow at 224 px: test_random_corruptions_on_the_reference_streams)."""
    d = other_photos()
    clean = torch.from_numpy(d[f"clean_{size}"]).permute(0, 3, 1, 2).float()
    seeds = stream_seeds(name, size)
    assert size != 32 or name != "spatter" or {35, 62} <= set(seeds.tolist()), "the black draws are checked"
    for severity in range(1, 6):
        ref = d[f"{name}_{severity}_{size}_stream"][:, seeds].astype(np.float64)  # (image, seed, stat)
        ours = np.stack([np.concatenate([
            draw_stats(corrupt(image[None] / 255.0, name, severity, generator=np.random.RandomState(int(seed))),
                       image[None]) for seed in seeds]) for image in clean])
        where = f"{name}/{severity}/{size}"
        # one draw: spatter's rims use the exact Euclidean distance where OpenCV uses a chamfer
        # approximation, which moves a draw's (additive) change by up to ~10%
        slack = 0.1 * ref[..., 0] + 0.002
        bad = np.argwhere((np.abs(ours[..., 0] - ref[..., 0]) > slack) | (np.abs(ours[..., 1] - ref[..., 1]) > slack)
                          | (np.abs(ours[..., 2] - ref[..., 2]) > 0.1 * ref[..., 2] + 0.02))
        assert len(bad) == 0, (f"{where}: {len(bad)} draws differ, first: image {bad[0][0]} seed "
                               f"{seeds[bad[0][1]]}: ours {ours[tuple(bad[0])]} reference {ref[tuple(bad[0])]}")
        for i in range(len(clean)):  # and their means, per image, as closely as on the fixtures' photos
            check_stats(dict(zip(STAT_NAMES, ours[i].mean(0))), dict(zip(STAT_NAMES, ref[i].mean(0))),
                        f"{where} image {i}", rel=0.02)


def population(name: str, severity: int, size: int, draws: int) -> np.ndarray:
    """Mean and standard deviation ``(image, 2, stat)`` of our statistics over ``draws`` fresh draws
    per photo (batches of the photos repeated, one generator per severity)."""
    clean = torch.from_numpy(other_photos()[f"clean_{size}"]).permute(0, 3, 1, 2).float()
    per_batch = max(1, (32 if size == 224 else 512) // len(clean))
    g = torch.Generator().manual_seed(1000 + severity)
    records = []
    for start in range(0, draws, per_batch):
        batch = clean.repeat(min(per_batch, draws - start), 1, 1, 1)
        records.append(draw_stats(corrupt(batch / 255.0, name, severity, generator=g), batch).reshape(-1, len(clean), 3))
    r = np.concatenate(records)  # (draw, image, stat)
    return np.stack([r.mean(0), r.std(0)], axis=1)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("name", "size"), [(n, 32) for n in RANDOM] + [
    pytest.param(n, 224, marks=pytest.mark.slow) for n in POPULATION_DRAWS[224]])
def test_random_corruptions_match_reference_populations(name: str, size: int) -> None:
    """Fresh draws against the reference's population: the mean over the photos of each statistic."""
    d = other_photos()
    n_ref, n_ours = int(d[f"{name}_{size}_draws"]), POPULATION_DRAWS[size][name]
    for severity in range(1, 6):
        ref = d[f"{name}_{severity}_{size}_population"]
        ours = population(name, severity, size, n_ours)
        # standard error of (our mean - the reference's mean), averaged over the photos
        se = np.sqrt((ref[:, 1] ** 2 / n_ref + ours[:, 1] ** 2 / n_ours).sum(0)) / ref.shape[0]
        ref_mean, ours_mean = ref[:, 0].mean(0), ours[:, 0].mean(0)
        tolerance = np.array([0.10 * ref_mean[0], 0.01, 0.10 * ref_mean[2]])
        bound = np.maximum(tolerance, 4 * se)
        for k, stat in enumerate(STAT_NAMES):
            assert abs(ours_mean[k] - ref_mean[k]) <= bound[k], (
                f"{name}/{severity}/{size}: {stat} {ours_mean[k]:.4f} vs {ref_mean[k]:.4f} (allowed "
                f"+-{bound[k]:.4f}: tolerance {tolerance[k]:.4f}, 4 standard errors {4 * se[k]:.4f})")
