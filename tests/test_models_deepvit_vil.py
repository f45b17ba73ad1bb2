"""DeepViT and ViL (robustvit.models.deepvit / .vil): the papers' configurations, re-attention and the
Longformer neighbourhood against direct computations, specs, checkpoints, and attention for the probes."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from robustvit.errors import UserError
from robustvit.models import deepvit, load_model, vil
from robustvit.probes.attention import attention_maps, read_attention, rollout_maps

pytestmark = pytest.mark.usefixtures("one_thread")

#: parameter counts of the authors' own code for the same configurations (1000 classes), checked once by
#: loading weights across: dvit_repo models/deep_vision_transformer.py, vision-longformer src/models/msvit.py
AUTHORS_CODE_PARAMS = {("deepvit", "16b"): 24_426_664, ("deepvit", "32b"): 48_096_232, ("deepvit", "s"): 27_312_632,
                       ("deepvit", "l"): 58_883_708, ("vil", "tiny"): 6_720_100, ("vil", "small"): 24_658_132}
PAPER = [("deepvit", v) for v in deepvit.PAPER_PARAMS] + [("vil", v) for v in vil.PAPER_PARAMS]
SPECS = ["deepvit:test", "vil:test"]


def _params(kind: str, variant: str) -> int:
    module = deepvit if kind == "deepvit" else vil
    with torch.device("meta"):
        return sum(p.numel() for p in module.create(variant).parameters())


@pytest.mark.parametrize(("kind", "variant"), PAPER)
def test_paper_configurations_have_the_papers_parameter_counts(kind: str, variant: str) -> None:
    n = _params(kind, variant)
    if (kind, variant) in AUTHORS_CODE_PARAMS:
        assert n == AUTHORS_CODE_PARAMS[kind, variant]
    paper = (deepvit if kind == "deepvit" else vil).PAPER_PARAMS[variant]
    if (kind, variant) == ("deepvit", "l"):
        # the paper's 55M cannot come from its stated configuration (32 blocks x width 420, MLP 1260)
        assert 32 * 10 * 420**2 > paper and abs(n - paper) / paper < 0.075
    else:
        assert abs(n - paper) / paper < 0.05, (n, paper)


def _randomised(w):
    """Random values for every float tensor (BatchNorm statistics, biases and position tables included)."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in w.model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5 if "running_var" in name else
                        torch.randn(t.shape, generator=gen) * 0.3)
    return w.eval()


@pytest.mark.parametrize("spec", SPECS)
def test_spec_runs_through_the_wrapper_on_unit_range_input(spec: str) -> None:
    w = load_model(spec, pretrained=False, num_classes=7)
    assert w.family == "vit" and w.num_classes == 7 and w.input_size == (3, 32, 32)
    x = torch.rand(3, *w.input_size)
    with torch.no_grad():
        logits, feats = w.forward_features(x)
        torch.testing.assert_close(w(x), logits)
        torch.testing.assert_close(w.model.head(feats), logits)
    assert logits.shape == (3, 7) and feats.shape == (3, w.model.num_features) and torch.isfinite(logits).all()
    assert load_model(spec, pretrained=False, num_classes=7).sha == w.sha  # seeded random init
    assert load_model(spec, pretrained=False, family="hybrid").family == "hybrid"


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("layout", ["safetensors", "authors_pth"])
def test_checkpoint_round_trip(spec: str, layout: str, tmp_path: Path) -> None:
    src = _randomised(load_model(spec, pretrained=False, num_classes=10))
    state = {k: v.clone().contiguous() for k, v in src.model.state_dict().items()}
    if layout == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    else:  # the authors' trainers: ViL saves {"net": ...}, DeepViT (timm) {"state_dict": ...}, both maybe DDP-prefixed
        path = tmp_path / "w.pth"
        key = "net" if spec.startswith("vil") else "state_dict"
        torch.save({key: {f"module.{k}": v for k, v in state.items()}, "epoch": 300}, path)
    w = load_model(spec, checkpoint=str(path), num_classes=10)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(w(x), src(x))
    assert w.sha == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    with pytest.raises(UserError, match="does not fit the model"):
        load_model(spec, checkpoint=str(path), num_classes=5)


def test_user_errors() -> None:
    with pytest.raises(UserError, match=r"unknown vil variant 'huge' \(allowed: vil:tiny, .*vil:base"):
        load_model("vil:huge", pretrained=False)
    with pytest.raises(UserError, match="unknown deepvit variant"):
        load_model("deepvit:xl", pretrained=False)
    with pytest.raises(UserError, match="no weights to download.*--checkpoint.*--no-pretrained"):
        load_model("deepvit:s")
    with pytest.raises(UserError, match="bad field"):
        vil.create("tiny", arch="l1,h1,d48,n1,q5")
    with pytest.raises(UserError, match="window_mode"):
        vil.create("test", window_mode="cyclic")
    w = load_model("vil:test", pretrained=False)
    with pytest.raises(UserError, match="token grid"):
        w(torch.rand(1, 3, 48, 48))


def test_authors_arch_notation_builds_the_same_model() -> None:
    arch = "l1,h1,d16,n1,s1,g1,p2,f2,a0_l2,h2,d32,n1,s1,g1,p2,f2,a0_l3,h2,d32,n1,s0,g1,p2,f2,a0"
    torch.manual_seed(0)
    a = vil.create("test")
    torch.manual_seed(0)
    b = vil.create("tiny", arch=arch, img_size=32, num_classes=1000)
    assert vil.parse_arch(arch) == a.stages
    assert all(torch.equal(t, b.state_dict()[k]) for k, t in a.state_dict().items())


# -- DeepViT: re-attention ---------------------------------------------------------------------------
def test_reattention_mixes_the_heads_attention_maps() -> None:
    """Theta a head permutation, BatchNorm the identity: re-attention = plain attention with heads permuted."""
    torch.manual_seed(0)
    attn = deepvit.ReAttention(12, 3, transform=True).eval()
    perm = [2, 0, 1]
    with torch.no_grad():
        attn.reatten_matrix.weight.zero_()
        attn.reatten_matrix.bias.zero_()
        for g, h in enumerate(perm):
            attn.reatten_matrix.weight[g, h] = 1.0
    x = torch.randn(2, 5, 12)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4)
    maps = ((q @ k.transpose(-2, -1)) / 2).softmax(-1)  # head dim 4: scale 1/2
    unit = (1 + attn.var_norm.eps) ** -0.5  # fresh BatchNorm statistics: mean 0, variance 1
    expected = attn.proj((maps[:, perm] * unit @ v).transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(attn(x), expected)
    # BatchNorm (eval) normalises each mixed head's map with its running statistics
    with torch.no_grad():
        attn.var_norm.running_mean.copy_(torch.tensor([0.1, 0.2, 0.3]))
        attn.var_norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    mixed = (maps[:, perm] - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.sqrt(
        torch.tensor([4.0, 1.0, 0.25]) + attn.var_norm.eps).view(1, 3, 1, 1)
    torch.testing.assert_close(attn(x), attn.proj((mixed @ v).transpose(1, 2).reshape(2, 5, 12)))


def test_deepvit_s_and_l_follow_the_authors_layout() -> None:
    for name, first, blocks in (("s", 11, 16), ("l", 20, 32)):
        with torch.device("meta"):
            m = deepvit.create(name)
        assert [b.attn.transform for b in m.blocks] == [i >= first for i in range(blocks)]
        assert m.patch_embed.cnn_stem and m.blocks[0].adjust_ratio == 0.5
    with torch.device("meta"):
        m = deepvit.create("s")
    assert m.blocks[-1].attn.reatten_scale == pytest.approx((396 // 12) ** -0.5)


# -- ViL: the Longformer neighbourhood ---------------------------------------------------------------
def _neighbours(n: int, w: int, mode: str) -> torch.Tensor:
    """(n*n, n*n) True where local query (r, c) may see local key (r', c'), from the definitions."""
    cells = list(itertools.product(range(n), range(n)))
    ok = torch.zeros(n * n, n * n, dtype=torch.bool)
    for (i, (r, c)), (j, (rr, cc)) in itertools.product(enumerate(cells), enumerate(cells)):
        if mode == "exact":  # the paper: a (2w+1) x (2w+1) window around the query
            ok[i, j] = abs(r - rr) <= w and abs(c - cc) <= w
        else:  # the released models: w x w chunks from the top-left, the query's chunk and its 8 neighbours
            ok[i, j] = abs(r // w - rr // w) <= 1 and abs(c // w - cc // w) <= 1
    return ok


@pytest.mark.parametrize("mode", vil.WINDOW_MODES)
def test_vil_attention_is_global_plus_local_neighbourhood(mode: str) -> None:
    w = _randomised(load_model("vil:test", pretrained=False, model_kwargs={"window_mode": mode}))
    x = torch.rand(2, 3, 32, 32)
    maps = attention_maps(w, x)
    assert [tuple(m.shape) for m in maps] == [(2, 1, 257, 257), (2, 2, 65, 65), (2, 2, 17, 17)]
    for a, n in zip(maps[:2], (16, 8), strict=True):  # Longformer stages, one-sided window 2
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
        assert (a[:, :, 0] > 0).all()  # the global token attends to every token
        assert (a[:, :, 1:, 0] > 0).all()  # every local token attends to the global token
        local = a[:, :, 1:, 1:]
        assert torch.equal(local > 0, _neighbours(n, 2, mode).expand_as(local))
    assert (maps[2] > 0).all()  # the last stage: full attention


def test_vil_local_token_sees_no_far_pixel_in_one_layer() -> None:
    """Stage 1, first attention block: the output at a corner token does not depend on the far corner's pixels."""
    w = _randomised(load_model("vil:test", pretrained=False))
    out: list[torch.Tensor] = []
    w.model.layer1[1].register_forward_hook(lambda _m, _i, o: out.append(o))
    x = torch.rand(1, 3, 32, 32)
    far = x.clone()
    far[..., 24:, 24:] = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        w(x), w(far)
    near_token, global_token = 1, 0  # local (0, 0) vs the global token, which sees everything
    torch.testing.assert_close(out[0][:, near_token], out[1][:, near_token])
    assert not torch.allclose(out[0][:, global_token], out[1][:, global_token])
    assert not torch.allclose(out[0][:, -1], out[1][:, -1])


@pytest.mark.parametrize("spec", SPECS)
def test_fused_and_explicit_attention_agree(spec: str) -> None:
    # DeepViT: plain attention in the first 2 blocks (fused there); ViL: separate global projections
    kwargs = {"reattention_from": 2} if spec.startswith("deepvit") else {"sharew": False}
    w = _randomised(load_model(spec, pretrained=False, model_kwargs=kwargs))
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        fused = w(x)
        for m in w.model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        torch.testing.assert_close(w(x), fused, rtol=1e-4, atol=1e-5)


def test_batch_size_does_not_change_logits() -> None:
    for spec in SPECS:
        w = _randomised(load_model(spec, pretrained=False))
        x = torch.rand(64, 3, 32, 32)
        with torch.no_grad():
            whole = w(x)
            parts = torch.cat([w(x[i:i + 7]) for i in range(0, 64, 7)])
        torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-5)


# -- attention for the probes ------------------------------------------------------------------------
def test_deepvit_probe_reads_softmax_before_reattention() -> None:
    w = _randomised(load_model("deepvit:test", pretrained=False))
    x = torch.rand(2, 3, 32, 32)
    maps = attention_maps(w, x)
    assert len(maps) == 4 and all(tuple(m.shape) == (2, 3, 17, 17) for m in maps)
    # block 0 by hand: softmax(q k^T / sqrt(d)) of its normalised input
    captured: list[torch.Tensor] = []
    blk = w.model.blocks[0]
    blk.norm1.register_forward_hook(lambda _m, _i, o: captured.append(o))
    with torch.no_grad():
        w(x)
    q, k, _ = blk.attn.qkv(captured[0]).reshape(2, 17, 3, 3, 16).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(maps[0], ((q @ k.transpose(-2, -1)) * 16**-0.5).softmax(-1))
    geoms = read_attention(w, x, lambda _a, g: g)
    assert all(g.grid == (4, 4) and g.spacing == (8.0, 8.0) and g.prefix == 1 for g in geoms)


def _spread(prev: tuple[int, int], nxt: tuple[int, int], prefix_prev: int, prefix_next: int) -> torch.Tensor:
    """(N_next, N_prev): each next-stage patch token is the mean of the p x p previous tokens it embeds."""
    p = prev[0] // nxt[0]
    m = torch.zeros(prefix_next + nxt[0] * nxt[1], prefix_prev + prev[0] * prev[1])
    for r, c, dr, dc in itertools.product(range(nxt[0]), range(nxt[1]), range(p), range(p)):
        m[prefix_next + r * nxt[1] + c, prefix_prev + (r * p + dr) * prev[1] + c * p + dc] = 1 / p**2
    return m


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_vil_rollout_chains_the_stages(pool: str) -> None:
    """Rollout as one matrix product, stage transitions as explicit spreading matrices."""
    w = _randomised(load_model("vil:test", pretrained=False, model_kwargs={"avg_pool": pool == "avg"}))
    x = torch.rand(2, 3, 32, 32)
    blocks = read_attention(w, x, lambda a, g: (a.mean(1), g))
    expected = []
    for b in range(2):
        product, current = None, None
        for a, g in blocks:
            hat = 0.5 * a[b] + 0.5 * torch.eye(a.shape[-1])
            hat = hat / hat.sum(-1, keepdim=True)
            if current is not None and g != current:
                hat = hat @ _spread(current.grid, g.grid, current.prefix, g.prefix)
            product = hat if product is None else hat @ product
            current = g
        start = torch.zeros(product.shape[0])
        if pool == "token":
            start[0] = 1
        else:
            start[current.prefix:] = 1 / (product.shape[0] - current.prefix)
        row = (start @ product)[1:]
        expected.append((row / row.sum()).view(16, 16))
    torch.testing.assert_close(rollout_maps(w, x), torch.stack(expected), rtol=1e-4, atol=1e-7)


def test_attention_probe_runs_on_both_through_the_suite(tmp_path: Path) -> None:
    from robustvit.config import ModelConfig, RunConfig, build_suite
    from robustvit.runner import build_model, execute
    from robustvit.store import Store

    suite = build_suite("probes", {"probes": ["attention"], "params": {"attention": {"samples": 1}}}, "probes")
    models = [ModelConfig(s, pretrained=False, num_classes=10) for s in SPECS]
    cfg = RunConfig(models=models, suites=[suite], data="digits", limit=8, batch_size=8, device="cpu")
    with Store(tmp_path / "s.sqlite") as store:
        execute(cfg, store, show_progress=False)
        records = store.records()
    for mcfg, layers in zip(models, (4, 3), strict=True):  # attention blocks of the test configurations
        cells = set(records.loc[records["model"] == mcfg.label, "cell"])
        planned = set(suite.suite.cells_for(build_model(mcfg)))
        assert planned and planned <= cells
        assert {c for c in cells if "/layer=" in c} == {f"attention/distance/layer={i}" for i in range(layers)}
    # ViL's first stage attends locally: its mean distance is below the last (full attention) stage's
    dist = records[(records["model"] == "vil:test") & (records["metric"] == "mean")].set_index("cell")["value"]
    assert dist["attention/distance/layer=0"] < dist["attention/distance/layer=2"]
