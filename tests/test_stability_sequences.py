"""ImageNet-P perturbation sequences made on the fly (frame counts and parameters of Hendrycks' generators,
per-image seeding, exact identities at the neutral frames) and the readers of the released sets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustvit.errors import UserError
from robustvit.stability import ALL, NOISE, TEST, VALIDATION, list_perturbations
from robustvit.stability.disk import cifar10_p_batches, imagenet_p_batches, list_videos, read_video
from robustvit.stability.presets import frame_count, params
from robustvit.stability.sequences import RANDOM, drip, sequence, tilt_homography

pytestmark = pytest.mark.usefixtures("one_thread")

#: frames per sequence in make_imagenet_p.py / make_cifar_p.py (range(0, 31), range(0, 41), ...)
FRAMES = {"imagenet_p": {"translate": 41}, "cifar10_p": {"motion_blur": 21, "translate": 16}}


def _images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 255).floor() / 255  # 8-bit values, as the reference's


def _gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_names_follow_the_paper() -> None:
    assert len(TEST) == 10 and len(VALIDATION) == 4 and set(NOISE) <= set(ALL)
    assert list_perturbations("validation") == ["speckle_noise", "gaussian_blur", "spatter", "shear"]
    assert list_perturbations(["snow", "snow", "tilt"]) == ["snow", "tilt"]
    for bad in ("fog", ["snow", "frost"], [], 3):
        with pytest.raises(UserError):
            list_perturbations(bad)


@pytest.mark.parametrize("preset", ["imagenet_p", "cifar10_p"])
@pytest.mark.parametrize("name", ALL)
def test_every_sequence_has_the_reference_frame_count_and_8_bit_frames(name: str, preset: str) -> None:
    x = _images()
    frames = list(sequence(x, name, preset=preset, generators=_gens([1, 2, 3])))
    assert len(frames) == frame_count(name, preset) == FRAMES[preset].get(name, 31)
    stack = torch.stack(frames)
    assert stack.shape == (len(frames), *x.shape) and stack.dtype == x.dtype
    assert stack.min() >= 0 and stack.max() <= 1
    assert torch.equal(stack * 255, (stack * 255).round())  # quantised like the reference's PNG frames
    steps = (stack[1:] - stack[:-1]).abs().flatten(1).mean(1)
    assert (steps > 0).sum() >= len(frames) // 2, "a sequence must move"


@pytest.mark.parametrize("name", RANDOM)
def test_random_draws_are_per_image(name: str) -> None:
    x = _images(4)
    batch = torch.stack(list(sequence(x, name, preset="cifar10_p", generators=_gens([10, 11, 12, 13]))))
    alone = torch.stack(list(sequence(x[2:3], name, preset="cifar10_p", generators=_gens([12]))))
    assert torch.equal(batch[:, 2:3], alone)  # the same image and seed: the same sequence in any batch
    again = torch.stack(list(sequence(x, name, preset="cifar10_p", generators=_gens([10, 11, 12, 99]))))
    assert torch.equal(again[:, :3], batch[:, :3]) and not torch.equal(again[:, 3], batch[:, 3])


@pytest.mark.parametrize("name", NOISE)
def test_noise_sequences_start_clean_and_grow_with_difficulty(name: str) -> None:
    x = _images(2, 64)
    spread = []
    for d in (1, 2, 3):
        frames = list(sequence(x, name, preset="imagenet_p", difficulty=d, generators=_gens([5, 6])))
        assert torch.equal(frames[0], x)
        spread.append(float(torch.stack([(f - x).abs().mean() for f in frames[1:]]).mean()))
    assert spread[0] < spread[1] < spread[2]


def test_neutral_frames_are_the_image_itself() -> None:
    x = _images(2)
    for name, neutral in (("brightness", 15), ("rotate", 15), ("shear", 15), ("translate", 20)):
        assert torch.equal(list(sequence(x, name, preset="imagenet_p"))[neutral], x), name
    assert torch.equal(list(sequence(x, "scale", preset="cifar10_p"))[15], x)  # scale (15 * 2 + 70) / 100 = 1
    for name in ("zoom_blur", *NOISE):
        assert torch.equal(next(sequence(x, name, preset="imagenet_p")), x), name


def test_translate_moves_the_image_one_pixel_a_frame() -> None:
    x = _images(2)
    frames = list(sequence(x, "translate", preset="cifar10_p"))  # shifts -7 .. 8 px
    for i, frame in enumerate(frames):
        s = i - 7
        expected = torch.zeros_like(x)
        if s >= 0:
            expected[..., s:] = x[..., :32 - s]
        else:
            expected[..., :s] = x[..., -s:]
        assert torch.equal(frame, expected), s


def test_tilt_is_opencvs_warp_perspective_of_the_reference_homography() -> None:
    x = _images(2)
    frames = list(sequence(x, "tilt", preset="imagenet_p"))
    for i in (0, 9, 30):
        # cv2.warpPerspective: output pixel (u, v) samples the source at H^-1 (u, v, 1), pixel centres at integers
        inv = torch.from_numpy(np.linalg.inv(tilt_homography(i - 15.0, 32, 32)))
        v, u = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        src = inv.float() @ torch.stack([u.flatten(), v.flatten(), torch.ones(1024)])
        grid = (src[:2] / src[2]).T.reshape(1, 32, 32, 2) / 31 * 2 - 1
        ref = F.grid_sample(x, grid.expand(2, -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=True)
        diff = (frames[i] - (ref * 255).round() / 255).abs() * 255
        assert diff.max() <= 1.0 and diff.mean() < 0.05, (i, float(diff.max()))
    centre = tilt_homography(0.0, 32, 32) @ [16, 16, 1]
    assert np.allclose(centre / centre[2], [16, 16, 1])  # untilted, the centre stays


def test_zoom_blur_is_a_running_mean_of_zooms() -> None:
    from robustvit.stability.sequences import _affine

    x = _images(2)
    frames = list(sequence(x, "zoom_blur", preset="cifar10_p"))
    zooms = [(_affine(x, scale=1 + 0.004 * k) * 255).round() / 255 for k in range(1, 3)]
    assert torch.equal(frames[2], ((x + zooms[0] + zooms[1]) / 3 * 255 + 1e-3).floor() / 255)


def test_snow_and_spatter_move_their_layer_not_the_image() -> None:
    x = _images(2, 64)
    snow = list(sequence(x, "snow", preset="imagenet_p", generators=_gens([1, 2])))
    layers = [(f - snow[0]).abs().mean() for f in snow]
    assert 0 < float(max(layers)) < 0.2  # the same flakes, streaked at another angle
    spatter = list(sequence(x, "spatter", preset="imagenet_p", generators=_gens([1, 2])))
    assert not torch.equal(spatter[0], spatter[-1])


@pytest.mark.parametrize("kernel", [[0.05, 0.1, 0.15, 0.7], [0.2, 0.8], [1.0, 2.0, 3.0]])
def test_drip_is_numpys_same_mode_convolution_down_columns(kernel: list[float]) -> None:
    a = np.random.default_rng(0).random((9, 5))
    expected = np.apply_along_axis(lambda col: np.convolve(col, np.array(kernel), mode="same"), 0, a)
    np.testing.assert_allclose(drip(torch.from_numpy(a)[None], kernel)[0].numpy(), expected, atol=1e-12)


def test_reference_parameters() -> None:
    assert params("gaussian_noise")["std"] == (0.03, 0.05, 0.08)
    assert params("shot_noise", "cifar10_p")["rate"] == (700.0, 400.0, 200.0)
    assert params("scale")["scale"][0] + 30 * params("scale")["scale"][1] == pytest.approx(1.15)
    assert params("brightness", "cifar10_p")["shift"][0] == pytest.approx(-15 * 1.5 / 100)


def test_bad_inputs_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown perturbation"):
        next(sequence(_images(), "fog"))
    with pytest.raises(UserError, match="difficulty"):
        next(sequence(_images(), "snow", difficulty=4))
    with pytest.raises(UserError, match="preset"):
        next(sequence(_images(), "snow", preset="imagenet_c"))
    with pytest.raises(UserError, match="at least 32"):
        next(sequence(_images(size=16), "snow"))


# -- the released sets ---------------------------------------------------------------------------------
def write_video(path: Path, frames: np.ndarray) -> None:
    """(T, H, W, 3) uint8 frames as an H.264 mp4 (as ImageNet-P's), with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def grey_frames(t: int, size: int = 32) -> np.ndarray:
    """``t`` flat grey frames, brighter by 8 levels each (exactly representable in YUV)."""
    return np.stack([np.full((size, size, 3), 40 + 8 * i, dtype=np.uint8) for i in range(t)])


def test_video_reader_reads_back_what_was_written(tmp_path: Path) -> None:
    pytest.importorskip("av")
    write_video(tmp_path / "rotate" / "n02" / "b.mp4", grey_frames(5))
    write_video(tmp_path / "rotate" / "n01" / "a.mp4", grey_frames(5)[::-1])
    write_video(tmp_path / "gaussian_noise_2" / "n01" / "a.mp4", grey_frames(3))
    (tmp_path / "rotate" / "n01" / "notes.txt").write_text("not a video")
    videos = list_videos(tmp_path, "rotate")
    assert [p.relative_to(tmp_path).as_posix() for p in videos] == ["rotate/n01/a.mp4", "rotate/n02/b.mp4"]
    frames = read_video(videos[1])
    assert frames.shape == (5, 3, 32, 32) and frames.dtype == torch.uint8
    assert (frames.float().mean((1, 2, 3)) - torch.tensor([40.0, 48, 56, 64, 72])).abs().max() <= 2
    batches = list(imagenet_p_batches(tmp_path, "rotate", 1, indices=[1, 0], videos=8, size=(48, 48)))
    (x, index), = batches
    assert x.shape == (2, 5, 3, 48, 48) and index == [1, 0] and 0 <= x.min() and x.max() <= 1
    assert len(list_videos(tmp_path, "gaussian_noise", 2)) == 1  # harder noise: <name>_<difficulty>
    with pytest.raises(UserError, match="does not exist"):
        list_videos(tmp_path, "tilt")
    (tmp_path / "bad.mp4").write_text("nope")
    with pytest.raises(UserError, match="cannot read video"):
        read_video(tmp_path / "bad.mp4")


def test_cifar10_p_arrays(tmp_path: Path) -> None:
    seq = np.random.default_rng(0).integers(0, 256, size=(4, 16, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "translate.npy", seq)
    (x, index), = list(cifar10_p_batches(tmp_path, "translate", 1, indices=[3, 1], videos=5, size=(32, 32)))
    assert index == [3, 1] and torch.equal((x * 255).round().byte(), torch.from_numpy(seq[[3, 1]]).permute(0, 1, 4, 2, 3))
    np.save(tmp_path / "shot_noise_3.npy", seq[..., 0])
    with pytest.raises(UserError, match="expected uint8 sequences"):
        next(cifar10_p_batches(tmp_path, "shot_noise", 3, indices=[0], videos=1, size=(32, 32)))
    with pytest.raises(UserError, match="does not exist"):
        next(cifar10_p_batches(tmp_path, "shot_noise", 2, indices=[0], videos=1, size=(32, 32)))
    assert math.isclose(float(x.mean()), seq[[3, 1]].mean() / 255, rel_tol=1e-6)
