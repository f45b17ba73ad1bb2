"""Model loading: seeded random init, unreadable checkpoints, offline pretrained weights, torch.export archives."""

from __future__ import annotations

import http.server
import random
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from robustvit.errors import UserError
from robustvit.models import IMAGENET_DEFAULT, load_model
from robustvit.models.checkpoint import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
ACCEPTED = "accepted: a safetensors file, or a torch state dict saved with torch.save"


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


# -- 3: random initialisation is seeded --------------------------------------------------------
@pytest.mark.parametrize("spec", ["timm:test_vit", "torchvision:squeezenet1_1", "python:robustvit.models.zoo:build_resnet"])
def test_random_init_is_a_function_of_spec_and_seed(spec: str) -> None:
    kwargs = {"pretrained": False, "preprocess": {"input_size": 32}} if not spec.startswith("timm") else {"pretrained": False}
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(6)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    a = load_model(spec, seed=7, **kwargs)
    b = load_model(spec, seed=7, **kwargs)
    c = load_model(spec, seed=8, **kwargs)
    assert a.sha == b.sha != c.sha
    assert load_model(spec, **kwargs).sha == load_model(spec, seed=0, **kwargs).sha  # seed defaults to 0
    # the caller's global RNGs are untouched: the next draws are those it would have made anyway
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state(), states[2]))  # noqa: B905


# -- 6: unreadable checkpoints are one clear line ------------------------------------------------
def _bad_checkpoints(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say)."""
    full = tmp / "full.pth"
    torch.save({"w": torch.zeros(64)}, full)
    data = full.read_bytes()
    files = {
        "text": ("notes.txt", b"some notes\nline two\n", "is a text file, not a checkpoint"),  # IndexError in torch
        "text_pth": ("notes.pth", b"epoch 3: loss 0.1\n" * 50, "is a text file, not a checkpoint"),
        "random": ("random.bin", bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)),
                   "unknown binary format"),
        "empty": ("empty.pth", b"", "is an empty file"),
        "truncated_zip": ("truncated.pth", data[: len(data) // 2], "damaged or truncated zip archive"),
        "foreign_zip": ("other.zip", None, "zip archive without torch.save data"),
        "bad_safetensors": ("bad.safetensors", b"{}garbage", "not a valid safetensors file"),
        "truncated_safetensors": ("cut.safetensors", None, "damaged safetensors file"),
        "truncated_pickle": ("legacy.pth", None, "cannot be read as a torch checkpoint"),
        "tensor": ("tensor.pth", None, "holds a Tensor, not a state dict"),
    }
    out: dict[str, tuple[Path, str]] = {}
    for key, (name, content, message) in files.items():
        path = tmp / name
        if content is not None:
            path.write_bytes(content)
        out[key] = (path, message)
    with zipfile.ZipFile(out["foreign_zip"][0], "w") as archive:
        archive.writestr("readme.txt", "hello")
    save_file({"w": torch.zeros(256)}, str(tmp / "whole.safetensors"))
    out["truncated_safetensors"][0].write_bytes((tmp / "whole.safetensors").read_bytes()[:-100])
    torch.save({"w": torch.zeros(256)}, tmp / "whole_legacy.pth", _use_new_zipfile_serialization=False)
    out["truncated_pickle"][0].write_bytes((tmp / "whole_legacy.pth").read_bytes()[:120])
    torch.save(torch.zeros(3), out["tensor"][0])
    (tmp / "folder").mkdir()
    out["directory"] = (tmp / "folder", "is a directory")
    return out


def test_unreadable_checkpoints_are_one_clear_line(tmp_path: Path) -> None:
    for key, (path, message) in _bad_checkpoints(tmp_path).items():
        with pytest.raises(UserError) as exc:
            read_checkpoint(path)
        text = str(exc.value)
        assert message in text and str(path) in text, (key, text)
        assert "\n" not in text and "Traceback" not in text
        if key not in ("tensor", "directory", "truncated_pickle"):
            assert ACCEPTED in text, (key, text)


def test_format_is_told_by_content_not_suffix(tmp_path: Path) -> None:
    state = {"w": torch.arange(4.0)}
    save_file(state, str(tmp_path / "st.pth"))  # safetensors under a .pth name
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)  # pre-1.6 torch.save
    for name in ("st.pth", "legacy.bin"):
        torch.testing.assert_close(read_checkpoint(tmp_path / name)["w"], state["w"])


def test_whole_model_archives_as_checkpoints_point_to_the_right_spec(tmp_path: Path) -> None:
    net = _tiny_net().eval()
    torch.jit.save(torch.jit.script(net), str(tmp_path / "m.pt"))
    torch.export.save(torch.export.export(net, (torch.rand(1, 3, 8, 8),)), str(tmp_path / "m.pt2"))
    with pytest.raises(UserError, match="TorchScript archive.*--model torchscript:PATH"):
        read_checkpoint(tmp_path / "m.pt")
    with pytest.raises(UserError, match="torch.export archive.*--model export:PATH"):
        read_checkpoint(tmp_path / "m.pt2")


@pytest.mark.parametrize("key", ["text", "random", "empty", "truncated_zip", "directory"])
def test_cli_unreadable_checkpoint_exit_2_one_line(key: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from robustvit.cli import main

    path, message = _bad_checkpoints(tmp_path)[key]
    store = tmp_path / "s.sqlite"
    rc = main(["eval", "--model", "timm:test_resnet", "--checkpoint", str(path), "--suite", "clean", "--limit", "8",
               "--store", str(store)])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustvit: error:") and str(path) in lines[0], err
    if key != "directory":  # a directory is refused by the config check ("does not exist") before loading
        assert message in lines[0], err
    assert not store.exists()


# -- 8: pretrained weights without network fail in seconds ----------------------------------------
@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no torch hub cache either
    return cache


@pytest.fixture
def online_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE unset (the test suite sets it, also in huggingface_hub's import-time constants)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _assert_fast_clear_error(spec: str, *fragments: str) -> None:
    start = time.perf_counter()
    with pytest.raises(UserError) as exc:
        load_model(spec)
    elapsed = time.perf_counter() - start
    assert elapsed < 5, elapsed
    for fragment in ("--no-pretrained", "--checkpoint PATH", *fragments):
        assert fragment in str(exc.value), str(exc.value)


def test_offline_and_not_cached_fails_fast(monkeypatch: pytest.MonkeyPatch, empty_hf_cache: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_fast_clear_error("timm:resnet18", "HF_HUB_OFFLINE", str(empty_hf_cache))


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch, empty_hf_cache: Path, online_mode: None) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    _assert_fast_clear_error("timm:resnet18", "127.0.0.1:9")


def test_hanging_hub_fails_within_the_probe_timeout(monkeypatch: pytest.MonkeyPatch, empty_hf_cache: Path,
                                                    online_mode: None) -> None:
    from robustvit.models import hub as hub_mod

    with socket.socket() as server:  # accepts connections (the kernel's backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setattr(hub_mod, "PROBE_TIMEOUT_S", 0.5)
        _assert_fast_clear_error("timm:resnet18", "did not answer within 0.5 s")


@pytest.fixture
def http_server() -> Iterator[str]:
    """A local HTTP server that answers every request (also proxy-style ones) with 200."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_honours_endpoint_and_proxy(monkeypatch: pytest.MonkeyPatch, http_server: str) -> None:
    from robustvit.models import hub as hub_mod

    monkeypatch.setenv("HF_ENDPOINT", http_server + "/")
    assert hub_mod.hf_endpoint() == http_server
    assert hub_mod.unreachable_reason(hub_mod.hf_endpoint()) is None
    assert "cannot be reached" in hub_mod.unreachable_reason("http://127.0.0.1:9")
    # behind a proxy, the proxy is what must answer (the hub's name need not resolve here)
    for key in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("http_proxy", http_server)
    assert hub_mod.unreachable_reason("http://huggingface.invalid") is None


def test_weights_source_of_tagged_architecture() -> None:
    from robustvit.models import hub as hub_mod

    source = hub_mod.timm_weights_source("resnet18.a1_in1k")
    assert source is not None and source.kind == "hf-hub" and source.location == "timm/resnet18.a1_in1k"
    assert source.filenames == ("model.safetensors", "pytorch_model.bin")
    with pytest.raises(UserError, match="resnet18.nope"):
        hub_mod.timm_weights_source("resnet18.nope")


def _fake_hf_cache(cache: Path, repo: str, state: dict[str, torch.Tensor]) -> None:
    """The layout huggingface_hub writes: refs/main -> a commit, snapshots/<commit>/model.safetensors."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123456789abcdef")
    snapshot = folder / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))


@pytest.mark.parametrize("mode", ["offline", "unreachable"])
def test_cached_weights_are_used_without_network(mode: str, monkeypatch: pytest.MonkeyPatch,
                                                  empty_hf_cache: Path) -> None:
    repo = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    torch.manual_seed(3)
    reference = timm.create_model("test_resnet", pretrained=False).eval()
    _fake_hf_cache(empty_hf_cache, repo, reference.state_dict())
    if mode == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        from huggingface_hub import constants

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    w = load_model("timm:test_resnet")
    assert time.perf_counter() - start < 5
    x = torch.rand(2, *w.input_size)
    with torch.no_grad():
        torch.testing.assert_close(w.model(x), reference(x))


# -- 18: torch.export archives ------------------------------------------------------------------
def _export(model: nn.Module, path: Path, size: int, *, dynamic_batch: bool, batch: int = 2) -> None:
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    program = torch.export.export(model.eval(), (torch.rand(batch, 3, size, size),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_DEFAULT["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std)


def test_export_archive_matches_original_at_any_batch_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    path = tmp_path / "test_resnet.pt2"
    _export(model, path, 64, dynamic_batch=True)
    w = load_model(f"export:{path}")
    assert w.family == "cnn" and w.num_classes == 10 and w.input_size == (3, 64, 64) and len(w.sha) == 16
    w.eval()
    w.train(False)
    for n in (1, 3, 5):
        x = torch.rand(n, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(w(x), _reference(model, x), rtol=1e-4, atol=1e-4)
    x = torch.rand(3, 3, 64, 64)  # penultimate features (OOD detectors, the clean suite): timm's pre-logits
    with torch.no_grad():
        logits, feats = w.forward_features(x)
        z = w.normalize(x)
        expected = model.forward_head(model.forward_features(z), pre_logits=True)
    torch.testing.assert_close(logits, w(x))
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-4)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)  # attacks need input gradients
    w(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert load_model(f"export:{path}", family="vit").family == "vit"


def test_export_archive_with_static_batch_is_fed_in_chunks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _tiny_net().eval()
    path = tmp_path / "tiny.pt2"
    _export(net, path, 16, dynamic_batch=False, batch=2)
    w = load_model(f"export:{path}", family="cnn")
    assert w.input_size == (3, 16, 16) and w.num_classes == 3
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(w(x), _reference(net, x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        logits, feats = w.forward_features(x)
        torch.testing.assert_close(feats, net[:-1](w.normalize(x)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, w(x))
    with pytest.raises(UserError, match=r"takes input \(3, 16, 16\) \(static shape\)"):
        load_model(f"export:{path}", preprocess={"input_size": 32})


def test_archive_specs_refuse_the_wrong_file(tmp_path: Path) -> None:
    net = _tiny_net().eval()
    torch.jit.save(torch.jit.script(net), str(tmp_path / "ts.pt"))
    _export(net, tmp_path / "ep.pt2", 8, dynamic_batch=True)
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    (tmp_path / "notes.txt").write_text("hello")
    cases = [
        (f"export:{tmp_path / 'ts.pt'}", "TorchScript archive, not a torch.export one: load it with torchscript:"),
        (f"torchscript:{tmp_path / 'ep.pt2'}", "torch.export archive, not a TorchScript one: load it with export:"),
        (f"export:{tmp_path / 'weights.pth'}", "torch.save weights, not a whole model.*--checkpoint PATH"),
        (f"export:{tmp_path / 'notes.txt'}", r"not a torch.export archive \(.pt2\); make one with torch.export.save"),
        (f"torchscript:{tmp_path / 'notes.txt'}", "not a TorchScript archive"),
        (f"export:{tmp_path / 'missing.pt2'}", "does not exist"),
    ]
    for spec, message in cases:
        with pytest.raises(UserError, match=message):
            load_model(spec)
    with pytest.raises(UserError, match="archive with its own weights"):
        load_model(f"export:{tmp_path / 'ep.pt2'}", checkpoint=str(tmp_path / "weights.pth"))
