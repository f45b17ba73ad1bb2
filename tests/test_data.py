"""Dataset layouts built in temporary folders, subsets, transforms and the embedded digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustvit.context import SuiteContext, subset_indices
from robustvit.data.catalog import digits, open_source
from robustvit.data.folder import ImageFolderSource, wnid_list
from robustvit.data.transforms import build_transform
from robustvit.errors import UserError
from robustvit.models import load_model


def _write_images(folder: Path, n: int, seed: int, size=(40, 30), suffix=".JPEG") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i}{suffix}")


@pytest.fixture
def imagenet_like(tmp_path: Path) -> Path:
    root = tmp_path / "val"
    for i, wnid in enumerate(["n01443537", "n01440764", "n01484850"]):  # deliberately not sorted by index
        _write_images(root / wnid, 2 + i, seed=i)
    return root


def test_sorted_folder_classes(imagenet_like: Path) -> None:
    src = ImageFolderSource(imagenet_like)
    assert src.num_classes == 3 and len(src) == 2 + 3 + 4
    labels = [label for _, label in src.samples]
    # sorted wnids: n01440764 (3 images) -> 0, n01443537 (2) -> 1, n01484850 (4) -> 2
    assert labels == [0, 0, 0, 1, 1, 2, 2, 2, 2]


def test_class_list_orders(imagenet_like: Path, tmp_path: Path) -> None:
    src = ImageFolderSource(imagenet_like, classes="imagenet_1k")
    full = wnid_list("imagenet_1k")
    assert src.num_classes == 1000
    assert {label for _, label in src.samples} == {full.index(w) for w in ["n01443537", "n01440764", "n01484850"]}
    class_file = tmp_path / "classes.txt"
    class_file.write_text("n01484850\nn01443537\nn01440764\nn09999999\n")
    src2 = ImageFolderSource(imagenet_like, classes=str(class_file))
    assert src2.num_classes == 4
    assert sorted({label for _, label in src2.samples}) == [0, 1, 2]
    class_file.write_text("n01484850\n")
    with pytest.raises(UserError, match="not in the class list"):
        ImageFolderSource(imagenet_like, classes=str(class_file))


def test_imagenet_r_subset_maps_onto_1000_logits(tmp_path: Path) -> None:
    r_wnids = wnid_list("imagenet_r")
    full = wnid_list("imagenet_1k")
    root = tmp_path / "imagenet-r"
    for w in (r_wnids[0], r_wnids[5], r_wnids[199]):
        _write_images(root / w, 1, seed=3)
    src = ImageFolderSource(root, subset="imagenet_r")
    assert len(src.valid_labels) == 200
    assert src.valid_labels == [full.index(w) for w in r_wnids]
    assert [label for _, label in src.samples] == [0, 5, 199]  # positions within the 200
    # the model view keeps the 200 logits of the subset, in the subset's order
    model = load_model("timm:test_resnet", pretrained=False, num_classes=1000)
    view = model.with_valid_labels(src.valid_labels)
    x = torch.rand(2, *model.input_size)
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x)[:, src.valid_labels])
    assert view.num_classes == 200 and model.num_classes == 1000
    assert len(wnid_list("imagenet_a")) == 200 and set(wnid_list("imagenet_a")) <= set(full)


def test_corrupt_image_named_or_skipped(imagenet_like: Path) -> None:
    bad = imagenet_like / "n01440764" / "broken.JPEG"
    bad.write_bytes(b"this is not a jpeg")
    src = ImageFolderSource(imagenet_like)
    idx = [p for p, _ in src.samples].index(bad)
    with pytest.raises(UserError, match="cannot read image .*broken.JPEG"):
        src[idx]
    model = load_model("timm:test_resnet", pretrained=False, num_classes=3, preprocess={"input_size": 32})
    ctx = SuiteContext(model=model, suite="clean", dataset={"path": str(imagenet_like), "skip_corrupt": True},
                       device=torch.device("cpu"), batch_size=4)
    n = sum(len(y) for _, y in ctx.loader())
    assert n == len(src) - 1 and ctx.skipped == 1
    ctx2 = SuiteContext(model=model, suite="clean", dataset=str(imagenet_like), device=torch.device("cpu"),
                        batch_size=4)
    with pytest.raises(UserError, match="broken.JPEG"):
        list(ctx2.loader())


def test_loader_gives_unit_range_at_model_size_and_seeded_subset(imagenet_like: Path) -> None:
    model = load_model("timm:test_resnet", pretrained=False, num_classes=3, preprocess={"input_size": 24, "crop_pct": 0.875})
    ctx = SuiteContext(model=model, suite="clean", dataset=str(imagenet_like), device=torch.device("cpu"),
                       batch_size=4, limit=5, seed=7)
    batches = list(ctx.loader())
    x = torch.cat([b[0] for b in batches])
    assert x.shape == (5, 3, 24, 24) and x.min() >= 0 and x.max() <= 1 and x.dtype == torch.float32
    assert subset_indices(9, 5, 7) == subset_indices(9, 5, 7) != subset_indices(9, 5, 8)
    assert subset_indices(9, None, 7) == list(range(9))


def test_transform_follows_crop_pct() -> None:
    img = Image.fromarray(np.zeros((100, 200, 3), dtype=np.uint8))
    t = build_transform({"input_size": (3, 64, 64), "crop_pct": 0.5, "interpolation": "bicubic"})
    assert t(img).shape == (3, 64, 64)


def test_digits_embedded_split() -> None:
    train, test = digits("train"), digits("test")
    assert len(train) == 1257 and len(test) == 540
    assert train.images.shape[1:] == (3, 32, 32) and 0 <= float(test.images.min()) <= float(test.images.max()) <= 1
    counts = torch.bincount(test.labels)
    assert len(counts) == 10 and int(counts.min()) >= 52 and int(counts.max()) <= 55  # stratified
    assert digits("test").fingerprint == test.fingerprint != train.fingerprint
    assert open_source("digits:train").fingerprint == train.fingerprint
    with pytest.raises(UserError, match="no split 'val'"):
        digits("val")


def test_folder_split_subfolder_and_missing(tmp_path: Path) -> None:
    _write_images(tmp_path / "ds" / "train" / "a", 2, 0)
    _write_images(tmp_path / "ds" / "val" / "a", 1, 1)
    assert len(open_source(str(tmp_path / "ds"), "train")) == 2
    assert len(open_source(str(tmp_path / "ds"), "test")) == 1
    with pytest.raises(UserError, match="does not exist"):
        open_source(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="did you mean 'digits'"):
        open_source("digit")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no images"):
        open_source(str(tmp_path / "empty"))
