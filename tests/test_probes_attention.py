"""The attention probe: attention maps read from timm ViT / DeiT / BEiT / Swin against a direct
computation, mean attention distance on synthetic attention, rollout (ViT and Swin) and options."""

from __future__ import annotations

import itertools
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from robustvit.errors import UserError
from robustvit.models import load_model, wrap
from robustvit.probes.attention import (
    AttentionProbe,
    Geometry,
    attention_maps,
    attention_rollout,
    mean_attention_distance,
    read_attention,
    rollout_maps,
    rollout_saliency,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(side: int) -> dict:
    return {"input_size": (3, side, side), "mean": (0.5,) * 3, "std": (0.25,) * 3, "interpolation": "bilinear",
            "crop_pct": 1.0, "crop_mode": "center"}


def _randomise(net: torch.nn.Module) -> torch.nn.Module:
    """Relative position bias tables and q/v biases start at zero in timm: give them values to test."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "relative_position" in name or name.endswith(("q_bias", "v_bias")):
                p.copy_(torch.randn(p.shape, generator=gen))
    return net.eval()


def _model(kind: str, side: int = 32):
    torch.manual_seed(0)
    tiny = {"img_size": side, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}
    if kind == "test_vit":
        return load_model("timm:test_vit", pretrained=False, num_classes=10)
    if kind == "deit":
        from timm.models.deit import VisionTransformerDistilled

        net = VisionTransformerDistilled(**tiny)
    elif kind == "beit":
        from timm.models.beit import Beit

        net = Beit(**tiny, use_rel_pos_bias=True)
    elif kind == "beit_shared":
        from timm.models.beit import Beit

        net = Beit(**tiny, use_rel_pos_bias=False, use_shared_rel_pos_bias=True)
    else:  # swin: 16x16 tokens, 4x4 windows; swin_pad: 13x13 tokens, 5x5 windows (padding, odd merging)
        from timm.models.swin_transformer import SwinTransformer

        window = 5 if kind == "swin_pad" else 4
        net = SwinTransformer(img_size=side, patch_size=2, window_size=window, embed_dim=16, depths=(2, 2),
                              num_heads=(1, 2), num_classes=10)
    return wrap(_randomise(net), name=kind, family="vit", data_config=_cfg(side))


def _direct(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Softmax(q k^T / sqrt(d) + biases + mask) computed here from each attention module's input."""
    from timm.layers.attention import Attention
    from timm.models.beit import Attention as BeitAttention
    from timm.models.swin_transformer import WindowAttention

    maps: list[torch.Tensor] = []

    def hook(m, args, kwargs):
        inp = args[0]
        b, n, _ = inp.shape
        if isinstance(m, BeitAttention) and m.q_bias is not None:
            qkv = F.linear(inp, m.qkv.weight, torch.cat((m.q_bias, m.k_bias, m.v_bias)))
        else:
            qkv = m.qkv(inp)
        q, k, _v = qkv.reshape(b, n, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4)
        if isinstance(m, Attention):
            q, k = m.q_norm(q), m.k_norm(k)
        logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if isinstance(m, BeitAttention):
            if m.relative_position_bias_table is not None:
                logits = logits + m._get_rel_pos_bias()
            if kwargs.get("shared_rel_pos_bias") is not None:
                logits = logits + kwargs["shared_rel_pos_bias"]
        if isinstance(m, WindowAttention):
            logits = logits + m._get_rel_pos_bias()
            mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
            if mask is not None:
                logits = (logits.view(-1, len(mask), m.num_heads, n, n) + mask[None, :, None]).view(b, -1, n, n)
            maps.append(logits.softmax(-1).view(len(x), -1, m.num_heads, n, n))
        else:
            maps.append(logits.softmax(-1))

    net = model.model
    mods = [m for m in net.modules() if isinstance(m, (Attention, BeitAttention, WindowAttention))]
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in mods]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return maps


@pytest.mark.parametrize("kind", ["test_vit", "deit", "beit", "beit_shared", "swin", "swin_pad"])
def test_maps_equal_a_direct_computation_and_leave_the_model_alone(kind: str) -> None:
    side = {"test_vit": 160, "swin_pad": 26}.get(kind, 32)
    model = _model(kind, side)
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    fused = [getattr(m, "fused_attn", None) for m in model.model.modules()]
    with torch.no_grad():
        before = model(x)
    maps = attention_maps(model, x)
    direct = _direct(model, x)
    assert len(maps) == len(direct) == sum(1 for n, _ in model.model.named_modules() if n.endswith(".attn"))
    for got, want in zip(maps, direct, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)), atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)  # hooks removed, fused paths restored
    assert [getattr(m, "fused_attn", None) for m in model.model.modules()] == fused
    if kind.startswith("swin"):
        assert maps[0].dim() == 5 and maps[0].shape[:2] == (2, 9 if kind == "swin_pad" else 16)
    else:
        tokens = (side // 16) ** 2 + 1 if kind == "test_vit" else 64 + (2 if kind == "deit" else 1)
        assert maps[0].shape[-2:] == (tokens, tokens)


def _pairwise_mean(coords: list[tuple[float, float]]) -> float:
    return sum(math.dist(a, b) for a, b in itertools.product(coords, coords)) / len(coords) ** 2


def test_distance_of_uniform_and_identity_attention() -> None:
    g = Geometry((4, 3), (8.0, 6.0), prefix=1)
    coords = g.coords()
    assert coords.tolist()[:2] == [[4.0, 3.0], [4.0, 9.0]]
    n = 1 + 12
    uniform = torch.full((2, 3, n, n), 1.0 / n)  # class token included: renormalised over the patch keys
    want = _pairwise_mean([(8 * (r + 0.5), 6 * (c + 0.5)) for r in range(4) for c in range(3)])
    torch.testing.assert_close(mean_attention_distance(uniform, coords, 1), torch.full((2, 3), want))
    eye = torch.eye(n).expand(2, 3, n, n)
    assert mean_attention_distance(eye, coords, 1).abs().max() < 1e-6


def test_windowed_distance_leaves_out_padding() -> None:
    g = Geometry((3, 3), (2.0, 2.0), resolution=(4, 5))  # 4x5 tokens in 3x3 windows: padded to 6x6
    valid = g.valid()
    assert valid.shape == (4, 9) and valid.sum() == 20
    attn = torch.full((1, 4, 2, 9, 9), 1.0 / 9)
    per_window = []
    for w in range(4):
        real = [(2 * (p // 3 + 0.5), 2 * (p % 3 + 0.5)) for p in range(9) if valid[w, p]]
        per_window += [sum(math.dist(q, k) for k in real) / len(real) for q in real]
    want = sum(per_window) / len(per_window)  # mean over real queries of every window
    torch.testing.assert_close(mean_attention_distance(attn, g.coords(), 0, valid), torch.full((1, 2), want),
                               atol=1e-5, rtol=0)


def test_swin_window_distance_matches_full_image_distance() -> None:
    """Unpadded Swin: distances in window coordinates equal those between the tokens' true positions
    (shifted-window masks keep attention inside contiguous regions)."""
    model = _model("swin")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    got = read_attention(model, x, lambda a, g: mean_attention_distance(a, g.coords(), 0, g.valid()))
    full = read_attention(model, x, lambda a, g: (_full(a, g), g))
    for dist, (a, g) in zip(got, full, strict=True):
        h, w = g.resolution
        pos = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2)
        pos = (pos + 0.5) * torch.tensor(g.spacing)
        want = (a * torch.cdist(pos, pos)).sum(-1).mean(-1)
        torch.testing.assert_close(dist, want, atol=1e-3, rtol=1e-4)


def _full(a: torch.Tensor, g: Geometry) -> torch.Tensor:
    """(B, heads, L, L) full-image attention of a Swin block from its windows (padding dropped, rows renormalised)."""
    (h, w), (wh, ww), (sh, sw) = g.resolution, g.grid, g.shift
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
    index = torch.full((hp // wh * (wp // ww), wh * ww), -1)
    for win, p in itertools.product(range(index.shape[0]), range(wh * ww)):
        r, c = win // (wp // ww) * wh + p // ww, win % (wp // ww) * ww + p % ww
        if r < h and c < w:
            index[win, p] = (r + sh) % h * w + (c + sw) % w
    out = torch.zeros(a.shape[0], a.shape[2], h * w, h * w)
    for win in range(index.shape[0]):
        real = (index[win] >= 0).nonzero().flatten()
        rows, cols = index[win][real], index[win][real]
        out[:, :, rows[:, None], cols[None, :]] = a[:, win][:, :, real[:, None], real[None, :]]
    return out / out.sum(-1, keepdim=True)


def test_rollout_rows_sum_to_one_and_follow_the_recursion() -> None:
    gen = torch.Generator().manual_seed(0)
    maps = [torch.rand(2, 3, 5, 5, generator=gen).softmax(-1) for _ in range(3)]
    rollout = attention_rollout(maps)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 5))
    hats = [0.5 * m.mean(1) + 0.5 * torch.eye(5) for m in maps]
    torch.testing.assert_close(rollout, hats[2] @ hats[1] @ hats[0])
    with pytest.raises(ValueError):
        attention_rollout([])


@pytest.mark.parametrize("kind", ["test_vit", "deit", "beit"])
def test_rollout_saliency_of_class_token_models(kind: str) -> None:
    side = 160 if kind == "test_vit" else 32
    model = _model(kind, side)
    x = torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(0))
    own = rollout_maps(model, x)
    grid = tuple(model.model.patch_embed.grid_size)
    assert own.shape == (3, *grid)
    prefix = 2 if kind == "deit" else 1
    want = attention_rollout(attention_maps(model, x))[:, 0, prefix:]
    torch.testing.assert_close(own.flatten(1), want / want.sum(-1, keepdim=True))
    for g in (grid[0], 5, 3, 12):
        sal = rollout_saliency(model, x, g)
        assert sal.shape == (3, g * g)
        torch.testing.assert_close(sal.sum(-1), torch.ones(3))


@pytest.mark.parametrize("kind", ["swin", "swin_pad"])
def test_swin_rollout_equals_the_full_matrix_product(kind: str) -> None:
    side = 26 if kind == "swin_pad" else 32
    model = _model(kind, side)
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    blocks = read_attention(model, x, lambda a, g: (_full(a, g).mean(1), g.resolution))
    rollout = None
    for a, (h, w) in blocks:
        if rollout is not None and rollout.shape[1] != h * w:  # patch merging: each parent splits evenly
            fine = int(round(rollout.shape[1] ** 0.5))
            parent = torch.tensor([(r // 2) * w + c // 2 for r in range(fine) for c in range(fine)])
            merge = F.one_hot(parent, h * w).T.float()
            rollout = (merge / merge.sum(1, keepdim=True)) @ rollout
        hat = 0.5 * a + 0.5 * torch.eye(h * w)
        rollout = hat if rollout is None else hat @ rollout
    want = rollout.mean(1)
    got = rollout_maps(model, x)
    assert got.shape == (2, side // 2, side // 2)
    torch.testing.assert_close(got.flatten(1), want, atol=1e-5, rtol=1e-4)
    sal = rollout_saliency(model, x, 4)
    assert sal.shape == (2, 16)
    torch.testing.assert_close(sal.sum(-1), torch.ones(2))


def test_probe_options_cells_and_skips() -> None:
    probe = AttentionProbe(samples=2)
    assert probe.cells() == ["distance", "rollout/sample=0", "rollout/sample=1"]
    assert AttentionProbe().opts["samples"] == 4
    for bad in (-1, 2.5, True, "4", 65):
        with pytest.raises(UserError, match="samples"):
            AttentionProbe(samples=bad)
    with pytest.raises(UserError, match="allowed: samples"):
        AttentionProbe(sample=2)
    assert probe.skip_reason(load_model("zoo_resnet")) is not None
    assert probe.skip_reason(load_model("zoo_vit")) is None
    cnn_named_vit = wrap(timm.create_model("test_resnet", pretrained=False), name="x", family="vit",
                         data_config=_cfg(32))
    assert "no supported attention" in probe.skip_reason(cnn_named_vit)
