"""The released perturbation sequences on disk: ImageNet-P videos and CIFAR-10-P arrays.

* ImageNet-P (Hendrycks & Dietterich, 2019): ``<root>/<perturbation>/<wnid>/<image>.mp4``, one H.264
  video of 224x224 frames per validation image; the noise perturbations' harder sequences are the
  folders ``<perturbation>_2`` and ``<perturbation>_3``. Videos are listed class folder by class
  folder (sorted names), files sorted within; decoded with PyAV (``pip install av``), as
  ``ImageNet-P/utils/video_loader.py`` decodes them with OpenCV.
* CIFAR-10-P: ``<root>/<perturbation>.npy`` (and ``<perturbation>_2.npy``, ``_3.npy`` for noise),
  uint8 arrays ``(N, frames, 32, 32, 3)`` in the CIFAR-10 test order.

Frames are only resized (bilinear, antialiased) when the model's input size differs; like the
reference's ``test.py``, the stability metrics need no labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from robustvit.errors import UserError
from robustvit.stability import NOISE


def folder_name(name: str, difficulty: int) -> str:
    """The released name of a sequence set: ``gaussian_noise_2`` for harder noise, else the perturbation."""
    return f"{name}_{difficulty}" if name in NOISE and difficulty > 1 else name


def list_videos(root: str | Path, name: str, difficulty: int = 1) -> list[Path]:
    """The ``.mp4`` files of one ImageNet-P sequence set, class folder by class folder (sorted)."""
    folder = Path(root) / folder_name(name, difficulty)
    if not folder.is_dir():
        raise UserError(f"ImageNet-P folder {str(folder)!r} does not exist (layout: <root>/<perturbation>/<wnid>/*.mp4, "
                        f"noise difficulties 2-3 in <perturbation>_2, <perturbation>_3)")
    videos = sorted(p for p in folder.glob("*/*") if p.suffix.lower() == ".mp4" and p.is_file())
    if not videos:
        raise UserError(f"ImageNet-P folder {str(folder)!r} holds no <wnid>/*.mp4 videos")
    return videos


def read_video(path: str | Path) -> torch.Tensor:
    """All frames of a video as uint8 ``(T, 3, H, W)`` RGB (PyAV)."""
    try:
        import av
    except ImportError:
        raise UserError("reading ImageNet-P videos needs PyAV: pip install av") from None
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, OSError) as exc:
        raise UserError(f"cannot read video {str(path)!r}: {exc}") from None
    if not frames:
        raise UserError(f"video {str(path)!r} has no frames")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


def _groups(videos: list[torch.Tensor], index: list[int]) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """Stack videos of one frame count and size together (released sets have one of each)."""
    keys = [tuple(v.shape) for v in videos]
    for key in dict.fromkeys(keys):
        members = [i for i, k in enumerate(keys) if k == key]
        yield torch.stack([videos[i] for i in members]), [index[i] for i in members]


def _float_frames(x: torch.Tensor, size: tuple[int, int], device: torch.device | None) -> torch.Tensor:
    """uint8 ``(N, T, 3, H, W)`` -> float in [0, 1] at ``size`` on ``device``."""
    from robustvit.corruptions.disk import resize_to

    n, t = x.shape[:2]
    frames = x.to(device).flatten(0, 1).float().div_(255.0)
    return resize_to(frames, size).view(n, t, 3, *size)


def imagenet_p_batches(root: str | Path, name: str, difficulty: int, *, indices: list[int], videos: int,
                       size: tuple[int, int], device: torch.device | None = None,
                       workers: int = 0) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """``(frames, index)`` batches of one ImageNet-P set: float ``(N, T, 3, H, W)`` and the videos' positions.

    Args:
        indices: Positions (in :func:`list_videos` order) of the videos to read.
        videos: Videos per batch.
        workers: Threads decoding videos (0: decode in this thread).
    """
    paths = list_videos(root, name, difficulty)
    pool = ThreadPoolExecutor(workers) if workers > 0 else None
    try:
        for s in range(0, len(indices), max(1, videos)):
            chunk = indices[s: s + max(1, videos)]
            files = [paths[i] for i in chunk]
            decoded = list(pool.map(read_video, files) if pool else map(read_video, files))
            for x, idx in _groups(decoded, chunk):
                yield _float_frames(x, size, device), idx
    finally:
        if pool is not None:
            pool.shutdown()


def cifar10_p_array(root: str | Path, name: str, difficulty: int = 1) -> np.ndarray:
    """The memory-mapped ``(N, T, H, W, 3)`` uint8 array of one CIFAR-10-P set."""
    path = Path(root) / f"{folder_name(name, difficulty)}.npy"
    if not path.is_file():
        raise UserError(f"CIFAR-10-P file {str(path)!r} does not exist (layout: <root>/<perturbation>.npy, noise "
                        f"difficulties 2-3 in <perturbation>_2.npy, <perturbation>_3.npy)")
    array = np.load(path, mmap_mode="r")
    if array.ndim != 5 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise UserError(f"{str(path)!r}: expected uint8 sequences (N, frames, H, W, 3), got {array.dtype} {array.shape}")
    return array


def cifar10_p_batches(root: str | Path, name: str, difficulty: int, *, indices: list[int], videos: int,
                      size: tuple[int, int], device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """``(frames, index)`` batches of one CIFAR-10-P set, as :func:`imagenet_p_batches`."""
    array = cifar10_p_array(root, name, difficulty)
    for s in range(0, len(indices), max(1, videos)):
        chunk = indices[s: s + max(1, videos)]
        x = torch.from_numpy(np.ascontiguousarray(array[np.asarray(chunk, dtype=np.int64)])).permute(0, 1, 4, 2, 3)
        yield _float_frames(x, size, device), list(chunk)


def count(source: str, root: str | Path, name: str, difficulty: int) -> int:
    """Sequences in one released set (``source``: ``imagenet_p_disk`` or ``cifar10_p_disk``)."""
    if source == "cifar10_p_disk":
        return int(cifar10_p_array(root, name, difficulty).shape[0])
    return len(list_videos(root, name, difficulty))
