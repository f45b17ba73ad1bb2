"""Model specs, checkpoints (incl. a refused malicious pickle), the [0,1] wrapper and families."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from robustvit.errors import UserError
from robustvit.models import load_model
from robustvit.models.checkpoint import read_checkpoint
from robustvit.models.wrapper import infer_family
from robustvit.registries import MODELS

# Small configurations of the architectures the seeds compare (pretrained=False, CPU).
TINY_TIMM = {
    "vit_tiny_patch16_224": ({"depth": 2, "img_size": 64}, "vit"),
    "deit_tiny_distilled_patch16_224": ({"depth": 2, "img_size": 64}, "vit"),
    "swin_tiny_patch4_window7_224": ({"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 2, 4, 8),
                                      "img_size": 64, "window_size": 4}, "vit"),
    "crossvit_tiny_240": ({"depth": ((1, 1, 0),)}, "vit"),
    "beit_base_patch16_224": ({"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 64}, "vit"),
    "resnetv2_50x1_bit": ({}, "cnn"),
    "test_vit": ({}, "vit"),
    "test_resnet": ({}, "cnn"),
}


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


@pytest.mark.parametrize("arch", sorted(TINY_TIMM))
def test_timm_seed_architectures_run_through_wrapper(arch: str) -> None:
    kwargs, family = TINY_TIMM[arch]
    preprocess = {"input_size": (3, 64, 64)} if arch == "resnetv2_50x1_bit" else None
    w = load_model(f"timm:{arch}", pretrained=False, num_classes=7, model_kwargs=kwargs, preprocess=preprocess)
    assert w.family == family
    x = torch.rand(2, *w.input_size)
    with torch.no_grad():
        logits, feats = w.forward_features(x)
        assert torch.allclose(w(x), logits, atol=1e-5)
    assert logits.shape == (2, 7) and feats.ndim == 2 and feats.shape[0] == 2


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_runs(name: str) -> None:
    w = load_model(name)
    x = torch.rand(3, *w.input_size)
    with torch.no_grad():
        logits, feats = w.forward_features(x)
    assert logits.shape == (3, w.num_classes) and torch.isfinite(logits).all()
    assert feats.shape[0] == 3 and w.family in ("vit", "cnn", "hybrid") and len(w.sha) == 16


@pytest.mark.parametrize("spec", [*MODELS.names(), "deepvit:test", "vil:test"])
def test_checkpoint_round_trip_of_every_registered_and_native_model(spec: str, tmp_path: Path) -> None:
    """Weights saved from a loaded model (changed, so the default weights cannot pass) load back through
    ``--checkpoint``: the same logits, the file's hash, the same family."""
    kw = {"pretrained": False, "num_classes": 10} if ":" in spec else {}
    w = load_model(spec, **kw).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in w.model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    path = tmp_path / "w.safetensors"
    save_file({k: v.clone().contiguous() for k, v in w.model.state_dict().items()}, str(path))
    back = load_model(spec, checkpoint=str(path), **({"num_classes": 10} if ":" in spec else {}))
    x = torch.rand(2, *w.input_size)
    with torch.no_grad():
        torch.testing.assert_close(back(x), w(x))
    assert back.family == w.family and back.sha != w.sha and len(back.sha) == 16


def test_wrapper_equals_raw_timm_model_on_normalised_input() -> None:
    torch.manual_seed(0)
    w = load_model("timm:test_vit", pretrained=False)
    raw = w.model
    cfg = timm.data.resolve_data_config({}, model=raw)
    x = torch.rand(2, *w.input_size)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(w(x), raw((x - mean) / std))
    assert w.input_size == tuple(cfg["input_size"])


def test_family_inference_and_override() -> None:
    assert infer_family("timm:vit_base_patch16_224") == "vit"
    assert infer_family("deit_small_distilled_patch16_224") == "vit"
    assert infer_family("swin_base_patch4_window7_224") == "vit"
    assert infer_family("crossvit_15_240") == "vit"
    assert infer_family("beit_base_patch16_224") == "vit"
    assert infer_family("resnetv2_50x1_bit") == "cnn"
    assert infer_family("vit_small_r26_s32_224") == "hybrid"
    assert infer_family("convnext_tiny") == "cnn"
    w = load_model("timm:test_resnet", pretrained=False, family="hybrid")
    assert w.family == "hybrid"
    with pytest.raises(UserError, match="allowed: vit, cnn, hybrid"):
        load_model("timm:test_resnet", pretrained=False, family="mlp")


def test_preprocessing_override() -> None:
    w = load_model("timm:test_resnet", pretrained=False, preprocess={"input_size": 48, "mean": [0, 0, 0]})
    assert w.input_size == (3, 48, 48)
    assert w.mean.flatten().tolist() == [0, 0, 0]
    with pytest.raises(UserError, match="unknown preprocessing option"):
        load_model("timm:test_resnet", pretrained=False, preprocess={"size": 3})


def test_torchvision_spec() -> None:
    w = load_model("torchvision:mobilenet_v3_small", pretrained=False, num_classes=5)
    assert w.family == "cnn" and w.num_classes == 5 and w.input_size == (3, 224, 224)
    with torch.no_grad():
        logits, feats = w.forward_features(torch.rand(1, 3, 224, 224))
    assert logits.shape == (1, 5) and feats.shape == (1, 1024)


def test_torchscript_spec(tmp_path: Path) -> None:
    net = _tiny_net().eval()
    path = tmp_path / "tiny_vit_like.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    w = load_model(f"torchscript:{path}", family="cnn", preprocess={"input_size": 16})
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(w(x), net(w.normalize(x)))
    assert w.num_classes == 3


def test_python_spec_from_file_and_module(tmp_path: Path) -> None:
    src = tmp_path / "my_models.py"
    src.write_text("import torch.nn as nn\n"
                   "def make(num_classes=4):\n"
                   "    return nn.Sequential(nn.Flatten(), nn.Linear(3*8*8, num_classes))\n")
    w = load_model(f"python:{src}:make", num_classes=6, preprocess={"input_size": 8})
    assert w.num_classes == 6 and w(torch.rand(2, 3, 8, 8)).shape == (2, 6)
    w2 = load_model("python:robustvit.models.zoo:build_resnet", preprocess={"input_size": 32})
    assert w2.family == "cnn" and w2.num_classes == 10
    with pytest.raises(UserError, match="cannot load"):
        load_model("python:robustvit.models.zoo:nope")


def test_unknown_specs_are_user_errors() -> None:
    with pytest.raises(UserError, match="did you mean"):
        load_model("zoo_vitt")
    with pytest.raises(UserError, match="unknown timm architecture 'vit_tiny_patch16_2244'.*did you mean"):
        load_model("timm:vit_tiny_patch16_2244", pretrained=False)
    with pytest.raises(UserError, match="unknown model spec kind"):
        load_model("onnx:model.onnx")


def test_timm_pretrained_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot fetch timm pretrained weights.*--checkpoint"):
        load_model("timm:test_vit", pretrained=True)


# -- checkpoints -------------------------------------------------------------------------------
@pytest.fixture
def trained() -> nn.Module:
    torch.manual_seed(1)
    return timm.create_model("test_resnet", pretrained=False, num_classes=10)


def _check_same_weights(w, model: nn.Module) -> None:
    x = torch.rand(2, *w.input_size)
    with torch.no_grad():
        torch.testing.assert_close(w.model(x), model.eval()(x))


@pytest.mark.parametrize("layout", ["safetensors", "plain", "state_dict", "model", "model_ema", "module_prefix"])
def test_checkpoint_layouts(layout: str, trained: nn.Module, tmp_path: Path) -> None:
    state = trained.state_dict()
    if layout == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "w.pth"
        obj = {
            "plain": state,
            "state_dict": {"state_dict": state, "epoch": 3, "arch": "test_resnet"},
            "model": {"model": state, "optimizer": {"lr": 0.1}},
            "model_ema": {"model_ema": state, "model": {k: torch.zeros_like(v) for k, v in state.items()}},
            "module_prefix": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        }[layout]
        torch.save(obj, path)
    w = load_model("timm:test_resnet", checkpoint=str(path), num_classes=10)
    _check_same_weights(w, trained)
    import hashlib

    assert w.sha == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_checkpoint_key_and_shape_mismatch(trained: nn.Module, tmp_path: Path) -> None:
    state = trained.state_dict()
    path = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")} | {"extra.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError) as exc:
        load_model("timm:test_resnet", checkpoint=str(path), num_classes=10)
    assert "missing keys (first: fc." in str(exc.value) and "unexpected keys (first: extra.weight)" in str(exc.value)
    path2 = tmp_path / "shape.pth"
    torch.save(state, path2)
    with pytest.raises(UserError, match=r"shape mismatch.*fc\.weight is \(10, \d+\) in the checkpoint, \(5, \d+\)"):
        load_model("timm:test_resnet", checkpoint=str(path2), num_classes=5)


def test_missing_and_garbage_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(UserError, match="is not a checkpoint: unknown binary format"):
        read_checkpoint(bad)
    bad_st = tmp_path / "garbage.safetensors"
    bad_st.write_bytes(b"{}garbage")
    with pytest.raises(UserError, match="not a valid safetensors"):
        read_checkpoint(bad_st)


class _Exploit:
    """Unpickling this runs ``os.system`` (creating a file) — a real malicious payload."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "payload": _Exploit(pwned)}, path)
    with pytest.raises(UserError, match=r"refuses it \(.*GLOBAL (posix|os)\.system.*--unsafe-pickle"):
        load_model("timm:test_resnet", checkpoint=str(path), num_classes=10)
    assert not pwned.exists()
    # the same file really is malicious: unpickling it in full creates the file
    read_checkpoint(path, unsafe_pickle=True)
    assert pwned.exists()


def test_unsafe_pickle_opt_in_loads_trusted_objects(trained: nn.Module, tmp_path: Path) -> None:
    import argparse

    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": trained.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UserError, match="--unsafe-pickle"):
        load_model("timm:test_resnet", checkpoint=str(path), num_classes=10)
    w = load_model("timm:test_resnet", checkpoint=str(path), num_classes=10, unsafe_pickle=True)
    _check_same_weights(w, trained)
