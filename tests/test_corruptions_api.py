"""The corruption engine's contract, over every registered corruption and both presets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robustvit.corruptions import ALL, BENCHMARK, BUILTINS, EXTRA, corrupt, list_corruptions
from robustvit.corruptions.presets import PRESETS, params
from robustvit.errors import UserError

DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "saturate", "pixelate", "jpeg_compression",
                 "gaussian_blur"}
NAMES = list_corruptions()


def images(n: int = 3, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, h // 8, w // 8, generator=g)  # smooth content, as photos are
    return torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def test_registry_tables() -> None:
    assert len(BENCHMARK) == 15 and len(EXTRA) == 4 and set(ALL) == set(BUILTINS)
    assert NAMES[:19] == list(ALL)
    assert list_corruptions("benchmark") == list(BENCHMARK) and list_corruptions("extra") == list(EXTRA)
    assert list_corruptions("*_noise") == ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]
    for preset, table in PRESETS.items():
        assert set(table) == set(ALL), preset
        assert all(len(rows) == 5 for rows in table.values()), preset


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range_and_seeding(name: str, preset: str) -> None:
    x = images()
    for severity in (1, 5):
        a = corrupt(x, name, severity, preset=preset, generator=torch.Generator().manual_seed(7))
        b = corrupt(x, name, severity, preset=preset, generator=torch.Generator().manual_seed(7))
        assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
        assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, b), "same seed, same output"
        assert not torch.equal(a, x) or (name == "elastic_transform" and preset == "cifar10_c" and severity == 1)
        if name not in DETERMINISTIC:
            c = corrupt(x, name, severity, preset=preset, generator=torch.Generator().manual_seed(8))
            assert not torch.equal(a, c), "another seed, other draws"
    assert corrupt(x.double(), name, 3, preset=preset, generator=torch.Generator().manual_seed(0)).dtype == torch.float64


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_corruptions_work_image_by_image(name: str) -> None:
    x = images(4, 48, 36)
    whole = corrupt(x, name, 3)
    single = torch.cat([corrupt(x[i:i + 1], name, 3) for i in range(4)])
    assert torch.allclose(whole, single, atol=1e-5)


def test_minimum_size_and_non_square() -> None:
    assert corrupt(images(2, 32, 32), "glass_blur", 5).shape == (2, 3, 32, 32)
    assert corrupt(images(2, 32, 97), "fog", 5).shape == (2, 3, 32, 97)
    assert corrupt(images(1, 33, 257), "frost", 5).shape == (1, 3, 33, 257)
    with pytest.raises(UserError, match="at least 32"):
        corrupt(torch.rand(1, 3, 31, 64), "gaussian_noise", 1)


@pytest.mark.parametrize(("call", "message"), [
    (lambda x: corrupt(x, "gausian_noise", 1), "did you mean"),
    (lambda x: corrupt(x, "gaussian_noise", 0), "severity"),
    (lambda x: corrupt(x, "gaussian_noise", 6), "severity"),
    (lambda x: corrupt(x, "gaussian_noise", 1, preset="imagenet"), "preset"),
    (lambda x: corrupt(x[0], "gaussian_noise", 1), r"\(N, 3, H, W\)"),
    (lambda x: corrupt((x * 255).to(torch.uint8), "gaussian_noise", 1), "float"),
])
def test_user_errors(call, message: str) -> None:
    with pytest.raises(UserError, match=message):
        call(images(1, 32, 32))


def test_empty_batch() -> None:
    assert corrupt(torch.rand(0, 3, 32, 32), "snow", 2).shape == (0, 3, 32, 32)


@pytest.mark.parametrize(("h", "w"), [(32, 32), (37, 41), (50, 77), (224, 224), (123, 64)])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_pixelate_equals_pillow_box_then_nearest(h: int, w: int, severity: int) -> None:
    """Pillow itself, as the reference calls it, at square and odd non-square sizes (123 -> 30 has
    windows whose edge pixels double rounding leaves out of both neighbours)."""
    from PIL import Image

    c = params("pixelate", severity, "imagenet_c")["factor"]
    x = (images(2, h, w, seed=severity) * 255).round() / 255
    ours = corrupt(x, "pixelate", severity)
    for i in range(2):
        im = Image.fromarray((x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        ref = im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.NEAREST)
        ref = torch.from_numpy(np.asarray(ref).astype(np.float32) / 255).permute(2, 0, 1)
        diff = (ours[i] - ref).abs()
        # rows are reduced before columns (Pillow: columns first): the 8-bit rounding between the
        # passes moves a few pixels by one level, nothing else differs
        assert diff.max() <= 1.01 / 255
        assert diff.mean() <= 0.15 / 255


def test_pixelate_way_back_is_pillows_nearest() -> None:
    """Pillow's NEAREST index for every reduction of 32-96 px (torch's nearest-exact differs on
    thousands of such pairs, e.g. 77 <- 30, where a plain ``(o + 0.5) * scale`` rounds otherwise)."""
    from PIL import Image

    from robustvit.corruptions.digital import _box_plan

    for n_in in range(32, 97):
        for n_out in range(1, n_in):
            row = np.arange(n_out, dtype=np.uint8)[None, :]
            ref = np.asarray(Image.fromarray(row).resize((n_in, 1), Image.NEAREST))[0]
            assert np.array_equal(_box_plan(n_in, n_out, torch.device("cpu"))[2].numpy(), ref), (n_in, n_out)


def _reference_glass_blur(x: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    """imagecorruptions 1.1.2's glass_blur, its loop as published (skimage's channel_axis for multichannel)."""
    from skimage.filters import gaussian

    c = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255.0, sigma=c[0], channel_axis=-1) * 255)
    for _ in range(c[2]):
        for h in range(x.shape[0] - c[1], c[1], -1):
            for w in range(x.shape[1] - c[1], c[1], -1):
                dx, dy = rs.randint(-c[1], c[1], size=(2,))
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(gaussian(x / 255.0, sigma=c[0], channel_axis=-1), 0, 1) * 255


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_glass_blur_reproduces_the_sequential_reference_loop(severity: int) -> None:
    u8 = (images(1, 40, 44, seed=severity)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ref = np.uint8(_reference_glass_blur(u8, severity, np.random.RandomState(3)))
    x = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255
    ours = corrupt(x, "glass_blur", severity, generator=np.random.RandomState(3))[0].permute(1, 2, 0).numpy()
    assert np.abs(np.uint8(np.clip(ours * 255, 0, 255)).astype(float) - ref).max() <= 1.0


@pytest.mark.parametrize("rate_severity", [1, 3, 5])
def test_shot_noise_samples_poisson(rate_severity: int) -> None:
    rate = params("shot_noise", rate_severity)["rate"]
    level = 100
    x = torch.full((8, 3, 64, 64), level / 255.0)
    out = corrupt(x, "shot_noise", rate_severity, generator=torch.Generator().manual_seed(0))
    k = (out * rate).round().flatten().long().numpy()
    from scipy.stats import poisson

    # frequencies of 0 .. rate-1 (clipping at 1 lumps everything from `rate` up into one value)
    counts = np.bincount(k, minlength=rate + 1)[:rate] / len(k)
    assert np.abs(counts - poisson.pmf(np.arange(rate), level * rate / 255.0)).max() < 0.005


def test_frost_textures_from_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustvit.corruptions import textures

    installed = textures.frost_dir()
    for name in textures.FROST_FILES:
        shutil.copy(installed / name, tmp_path / name)
    x = images(2, 32, 32)
    a = corrupt(x, "frost", 3, generator=torch.Generator().manual_seed(0))
    b = corrupt(x, "frost", 3, generator=torch.Generator().manual_seed(0), frost_dir=str(tmp_path))
    assert torch.equal(a, b)
    monkeypatch.setattr(textures, "_from_distribution", lambda: None)
    with pytest.raises(UserError, match="imagecorruptions"):
        corrupt(x, "frost", 3)
    monkeypatch.setenv(textures.ENV_VAR, str(tmp_path))
    assert torch.equal(corrupt(x, "frost", 3, generator=torch.Generator().manual_seed(0)), a)
    (tmp_path / "frost3.png").unlink()
    with pytest.raises(UserError, match="frost3.png"):
        corrupt(x, "frost", 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cpu_and_cuda_agree(name: str) -> None:
    # 32 px: the batch is one CPU chunk, so both devices take the same draws from a CPU generator
    x = images(4, 32, 32)
    cpu = corrupt(x, name, 3, generator=torch.Generator().manual_seed(0))
    gpu = corrupt(x.cuda(), name, 3, generator=torch.Generator().manual_seed(0)).cpu()
    assert (cpu - gpu).abs().mean() < 1e-3, name
