"""Image folders in the ImageNet layout: ``<root>/<class>/<image>``.

Class order comes from a class-list file (one wnid per line; ``imagenet_1k`` names the standard
1000-class list shipped in ``robustvit/data/wnids``), or from the sorted folder names. The 200-class
subsets of ImageNet-R (Hendrycks et al., 2021) and ImageNet-A (Hendrycks et al., 2021) are mapped
onto 1000-class logits as timm's ``--valid-labels`` does: the suite sees only the 200 logits of
the subset (``valid_labels``, indices into the 1000 classes) and labels are positions in that list.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from robustvit.data import Source
from robustvit.errors import UserError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
SUBSETS = ("imagenet_r", "imagenet_a")


def wnid_list(name: str) -> list[str]:
    """A shipped wnid list: ``imagenet_1k``, ``imagenet_r`` or ``imagenet_a``."""
    try:
        text = resources.files("robustvit.data").joinpath("wnids", f"{name}.txt").read_text()
    except FileNotFoundError as exc:
        raise UserError(f"unknown class list {name!r} (allowed: imagenet_1k, {', '.join(SUBSETS)}, or a file path)") from exc
    return text.split()


def read_class_list(spec: str) -> list[str]:
    """Class names from a shipped list name or a text file with one class per line."""
    path = Path(spec)
    if path.suffix or path.exists():
        if not path.is_file():
            raise UserError(f"class-list file {spec!r} does not exist")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return wnid_list(spec)


class ImageFolderSource(Source):
    """Images under ``<root>/<class>/``, decoded lazily with PIL.

    Args:
        root: The folder.
        classes: Class-list file or shipped list name; default: sorted sub-folder names.
        subset: ``imagenet_r`` or ``imagenet_a``: restrict logits to that 200-class subset.
        skip_corrupt: Skip unreadable images (counted by the loader) instead of failing.
        unlabelled: OOD data: any folder structure, every label ``-1``.
    """

    def __init__(self, root: str | Path, *, classes: str | None = None, subset: str | None = None,
                 skip_corrupt: bool = False, unlabelled: bool = False) -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"dataset folder {str(self.root)!r} does not exist")
        self.name = self.root.name
        self.skip_corrupt = skip_corrupt
        if unlabelled:
            files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            self.samples = [(p, -1) for p in files]
            self.num_classes = 0
        else:
            self.samples = self._labelled(classes, subset)
        if not self.samples:
            raise UserError(f"dataset folder {str(self.root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        digest = hashlib.sha256(str(self.root.resolve()).encode())
        for path, label in self.samples:
            st = path.stat()
            digest.update(f"{path.relative_to(self.root)}:{label}:{st.st_size}:{st.st_mtime_ns}".encode())
        digest.update(f"{classes}|{subset}".encode())
        self.fingerprint = digest.hexdigest()[:16]

    def _labelled(self, classes: str | None, subset: str | None) -> list[tuple[Path, int]]:
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if subset is not None:
            if subset not in SUBSETS:
                raise UserError(f"unknown class subset {subset!r} (allowed: {', '.join(SUBSETS)})")
            full = read_class_list(classes or "imagenet_1k")
            index = {w: i for i, w in enumerate(full)}
            wnids = wnid_list(subset)
            self.valid_labels = [index[w] for w in wnids]
            self.num_classes = len(full)
            order = wnids
        else:
            order = read_class_list(classes) if classes else folders
            self.num_classes = len(order)
        position = {w: i for i, w in enumerate(order)}
        unknown = [f for f in folders if f not in position]
        if unknown:
            raise UserError(
                f"dataset folder {str(self.root)!r}: class folder {unknown[0]!r} is not in the class list "
                f"({len(unknown)} such folders)"
            )
        samples = []
        for folder in folders:
            label = position[folder]
            for path in sorted((self.root / folder).iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    samples.append((path, label))
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of the first readable image (PIL reads only its header)."""
        for path, _ in self.samples[:8]:
            try:
                with Image.open(path) as im:
                    return im.height, im.width
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
                continue
        return None

    def load(self, index: int) -> tuple[Image.Image | None, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                im.load()
                image = im.convert("RGB")
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            if self.skip_corrupt:
                return None, label
            raise UserError(f"cannot read image {str(path)!r}: {exc}") from exc
        return image, label

    def __getitem__(self, index: int):  # type: ignore[override]
        image, label = self.load(index)
        if image is None:
            return None
        return (self.transform(image) if self.transform is not None else image), label
