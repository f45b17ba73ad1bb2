"""ViL, the Multi-Scale Vision Longformer (Zhang et al. 2021, "Multi-Scale Vision Longformer: A New Vision
Transformer for High-Resolution Image Encoding", ICCV 2021, arXiv:2103.15358).

A stack of E-ViT stages (ResNet-like: each stage embeds 2x2 patches of the previous one, LayerNorm after the
patch embedding, widths doubling). Each stage prepends ``nglo`` global tokens (new ones per stage; the previous
stage's are discarded, as the paper does for classification); its attention is the Vision Longformer's
"local attention + global memory": global tokens attend to all tokens, local tokens to the global tokens and
to their 2-D neighbours. The classifier reads the last stage's first global token after a LayerNorm.

Conventions follow the authors' code (github.com/microsoft/vision-longformer, ``src/models/msvit.py`` and
``layers/longformer2d.py``) with its defaults: relative position bias (``a0``; ``ape=True`` for the absolute
2-D embedding of the first release), shared projections of global and local tokens (``sharew``), LayerNorm
eps 1e-6, MLP ratio 4, one global token, one-sided window ``w = 7``, and the neighbourhood of the released
checkpoints, ``window_mode="chunk"`` (``SW_EXACT = 0``: the map is cut into w x w chunks from the top-left and
a token attends to its chunk and the 8 around it); ``window_mode="exact"`` gives the paper's exact
(2w+1) x (2w+1) window. The last stage (7 x 7 at 224 px) uses full attention (``s0``). The neighbourhood is
applied as a mask on full attention (the reference implementation the authors verify their kernels with:
exact, quadratic in the tokens); the random-shifting training mode is not implemented (a training speed-up).

Variants (Table 1 of the paper; ``n,p,h,d`` = blocks, patch, heads, width per stage; parameters for 1000
classes at 224 px, the authors' table in brackets):

===============  =================================================================  =======  ========
variant          stages                                                             params   paper
===============  =================================================================  =======  ========
``tiny``         1,4,1,48 / 1,2,3,96 / 9,2,3,192 / 1,2,6,384                        6.70M    6.7M
``small``        1,4,3,96 / 2,2,3,192 / 8,2,6,384 / 1,2,12,768                      24.63M   24.6M
``medium_deep``  1,4,3,96 / 4,2,3,192 / 16,2,6,384 / 1,2,12,768 (alias ``medium``)  39.70M   39.7M
``medium_wide``  1,4,3,192 / 2,2,6,384 / 8,2,8,512 / 1,2,12,768                     39.82M   39.8M
``base_deep``    1,4,3,96 / 8,2,3,192 / 24,2,6,384 / 1,2,12,768 (alias ``base``)    55.72M   55.7M
``base_wide``    1,4,3,192 / 2,2,6,384 / 8,2,12,768 / 1,2,16,1024                   79.04M   79.0M
``test``         1,2,1,16 / 1,2,2,32 / 1,2,2,32 at 32 px, w = 2 (tests only)        0.07M    --
===============  =================================================================  =======  ========

Any configuration in the authors' notation also works: ``arch="l1,h3,d96,n1,s1,g1,p4,f7,a0_l2,..."``.
State-dict keys are the authors' (``layer1.0.proj``, ``layer2.1.attn.query`` ...), so their checkpoints load
as they are. The probes read attention from each attention module's ``attn_drop`` input ((B, heads, N, N)
over global tokens first, then the stage's grid row-major; zero outside a token's neighbourhood) with the
stage's ``token_layout``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustvit.errors import UserError


@dataclass(frozen=True)
class Stage:
    """One E-ViT stage in the authors' notation: ``n`` blocks, patch ``p``, ``h`` heads, width ``d``, sparse
    (Longformer) attention ``s`` or full, ``g`` global tokens, one-sided window ``f``, absolute embedding ``a``."""

    n: int
    p: int
    h: int
    d: int
    s: bool = True
    g: int = 1
    f: int = 7
    a: bool = False


def _stages(*rows: tuple[int, int, int, int]) -> tuple[Stage, ...]:
    return tuple(Stage(*row, s=i < len(rows) - 1) for i, row in enumerate(rows))


VARIANTS: dict[str, tuple[Stage, ...]] = {
    "tiny": _stages((1, 4, 1, 48), (1, 2, 3, 96), (9, 2, 3, 192), (1, 2, 6, 384)),
    "small": _stages((1, 4, 3, 96), (2, 2, 3, 192), (8, 2, 6, 384), (1, 2, 12, 768)),
    "medium_deep": _stages((1, 4, 3, 96), (4, 2, 3, 192), (16, 2, 6, 384), (1, 2, 12, 768)),
    "medium_wide": _stages((1, 4, 3, 192), (2, 2, 6, 384), (8, 2, 8, 512), (1, 2, 12, 768)),
    "base_deep": _stages((1, 4, 3, 96), (8, 2, 3, 192), (24, 2, 6, 384), (1, 2, 12, 768)),
    "base_wide": _stages((1, 4, 3, 192), (2, 2, 6, 384), (8, 2, 12, 768), (1, 2, 16, 1024)),
    "test": tuple(replace(s, f=2) for s in _stages((1, 2, 1, 16), (1, 2, 2, 32), (1, 2, 2, 32))),
}
ALIASES = {"medium": "medium_deep", "base": "base_deep"}
#: parameter counts in the authors' tables (1000 classes, 224 px)
PAPER_PARAMS: dict[str, float] = {"tiny": 6.7e6, "small": 24.6e6, "medium_deep": 39.7e6, "medium_wide": 39.8e6,
                                  "base_deep": 55.7e6, "base_wide": 79.0e6}
WINDOW_MODES = ("chunk", "exact")
_ARCH_DEFAULTS = {"l": 1, "h": 3, "d": 192, "n": 1, "s": 1, "g": 1, "p": 2, "f": 7, "a": 1}  # the authors' parser


def parse_arch(arch: str) -> tuple[Stage, ...]:
    """Stages from the authors' notation, e.g. ``"l1,h1,d48,n1,s1,g1,p4,f7,a0_l2,h3,d96,n1,s1,g1,p2,f7,a0"``."""
    stages = []
    for i, text in enumerate(arch.split("_"), 1):
        cfg = dict(_ARCH_DEFAULTS)
        try:
            for field in text.split(","):
                if field[:1] not in cfg:
                    raise ValueError(field)
                cfg[field[0]] = int(field[1:])
        except (ValueError, IndexError) as exc:
            raise UserError(f"ViL arch {arch!r}: bad field {exc} in stage {i} (fields l,h,d,n,s,g,p,f,a with "
                            "integers)") from None
        stages.append(Stage(cfg["n"], cfg["p"], cfg["h"], cfg["d"], bool(cfg["s"]), cfg["g"], cfg["f"], bool(cfg["a"])))
    return tuple(stages)


def _grid_index(nx: int, ny: int, span_x: int, span_y: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column offset indices (query minus key, shifted to start at 0) for separable bias lookups."""
    r, c = torch.arange(nx), torch.arange(ny)
    return r[:, None] - r[None, :] + span_x - 1, c[:, None] - c[None, :] + span_y - 1


class _Attention(nn.Module):
    """Shared parts: relative position bias of global tokens, the attention product, the probe interface."""

    def _setup(self, dim: int, num_heads: int, nglo: int, rpe: bool, grid: tuple[int, int],
               spacing: tuple[float, float], attn_drop: float, proj_drop: float) -> None:
        from timm.layers import trunc_normal_

        self.num_heads, self.nglo, self.rpe, self.grid = num_heads, nglo, rpe, grid
        self.scale = (dim // num_heads) ** -0.5
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused_attn = True
        self.token_layout = (grid, spacing, nglo)
        if rpe and nglo >= 1:
            self.g2l_relative_position_bias = nn.Parameter(trunc_normal_(torch.zeros(2, num_heads, nglo), std=0.02))
            self.g2g_relative_position_bias = nn.Parameter(trunc_normal_(torch.zeros(num_heads, nglo, nglo), std=0.02))

    def _bias(self, local: torch.Tensor) -> torch.Tensor:
        """(heads, N, N) additive bias: ``local`` (heads, Nloc, Nloc) plus the global rows and columns."""
        g, h, nloc = self.nglo, self.num_heads, local.shape[-1]
        if g == 0:
            return local
        if self.rpe:
            g2l = self.g2l_relative_position_bias
            top = torch.cat([self.g2g_relative_position_bias, g2l[0][:, :, None].expand(h, g, nloc)], -1)
            left = g2l[1][:, None, :].expand(h, nloc, g)
        else:
            top, left = local.new_zeros(h, g, g + nloc), local.new_zeros(h, nloc, g)
        return torch.cat([top, torch.cat([left, local], -1)], 1)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
                glo: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """softmax(q k^T * scale + bias) v over (B, heads, N, d); ``glo`` = (q, k, v) of the global rows when
        they have their own projections (then ``q`` holds the local rows only). Unfused, the (B, heads, N, N)
        weights pass through ``attn_drop`` once, where the probes read them."""
        g = 0 if glo is None else glo[0].shape[2]
        if self.fused_attn:
            def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=None if b is None else b.to(q.dtype),
                                                      dropout_p=self.attn_drop.p if self.training else 0.0,
                                                      scale=self.scale)
            if glo is None:
                return sdpa(q, k, v, bias)
            return torch.cat([sdpa(*glo, bias[:, :g]), sdpa(q, k, v, bias[:, g:])], 2)  # type: ignore[index]
        attn = q @ k.transpose(-2, -1)
        if glo is not None:
            attn = torch.cat([glo[0] @ glo[1].transpose(-2, -1), attn], 2)
        attn = attn * self.scale
        attn = self.attn_drop((attn if bias is None else attn + bias).softmax(dim=-1))
        if glo is None:
            return attn @ v
        return torch.cat([attn[:, :, :g] @ glo[2], attn[:, :, g:] @ v], 2)


class FullAttention(_Attention):
    """Full attention over global + local tokens with the authors' relative position bias over the whole grid."""

    def __init__(self, dim: int, num_heads: int, *, grid: tuple[int, int], spacing: tuple[float, float], nglo: int,
                 rpe: bool, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        from timm.layers import trunc_normal_

        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self._setup(dim, num_heads, nglo, rpe, grid, spacing, attn_drop, proj_drop)
        if rpe:
            wx, wy = grid
            self.local_relative_position_bias_table = nn.Parameter(
                trunc_normal_(torch.zeros((2 * wx - 1) * (2 * wy - 1), num_heads), std=0.02))
            dr, dc = _grid_index(wx, wy, wx, wy)
            index = dr[:, None, :, None] * (2 * wy - 1) + dc[None, :, None, :]
            self.register_buffer("relative_position_index", index.reshape(wx * wy, wx * wy))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.rpe:
            local = self.local_relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)
            bias = self._bias(local)
        x = self._attend(q, k, v, bias).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class LongformerAttention(_Attention):
    """Vision Longformer attention: global tokens see all, local tokens the global ones and their neighbourhood."""

    def __init__(self, dim: int, num_heads: int, *, grid: tuple[int, int], spacing: tuple[float, float], nglo: int,
                 rpe: bool, window: int, window_mode: str = "chunk", sharew: bool = True, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        from timm.layers import trunc_normal_

        super().__init__()
        self.query = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if nglo >= 1:  # shared: the same modules under a second name, as in the authors' state dicts
            self.query_global = self.query if sharew else nn.Linear(dim, dim, bias=qkv_bias)
            self.kv_global = self.kv if sharew else nn.Linear(dim, dim * 2, bias=qkv_bias)
            self.proj_global = self.proj if sharew else nn.Linear(dim, dim)
        self._setup(dim, num_heads, nglo, rpe, grid, spacing, attn_drop, proj_drop)
        self.window, self.window_mode, self.sharew = window, window_mode, sharew
        w = window
        if rpe:
            self.local_relative_position_bias_table = nn.Parameter(
                trunc_normal_(torch.zeros((4 * w - 1) ** 2, num_heads), std=0.02))
            # the authors' (w*w, 9*w*w) index of a chunk's queries against its 3x3 chunks (state-dict compatibility)
            ax = torch.arange(-w, 2 * w)
            coords = torch.stack(torch.meshgrid(ax, ax, indexing="ij")).view(2, 3, w, 3, w).permute(0, 1, 3, 2, 4)
            chunks = coords.reshape(2, 9, w * w)
            rel = (chunks[:, 4, :, None, None] - chunks[:, None, :, :]).reshape(2, w * w, 9 * w * w) + 2 * w - 1
            self.register_buffer("relative_position_index", rel[0] * (4 * w - 1) + rel[1])

    def _allowed(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, n) True where a query row (or column) may see a key row (column)."""
        pos = torch.arange(n, device=device)
        if self.window_mode == "exact":
            return (pos[:, None] - pos[None, :]).abs() <= self.window
        chunk = pos // self.window
        return (chunk[:, None] - chunk[None, :]).abs() <= 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        g, h, (nx, ny) = self.nglo, self.num_heads, self.grid
        if n != g + nx * ny:
            raise UserError(f"ViL attention: {n} tokens are not {g} global + {nx}x{ny} local tokens (input size?)")

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], -1, h, c // h).permute(2, 0, 3, 1, 4)

        q = heads(self.query(x[:, g:]))[0]
        k, v = heads(self.kv(x)).unbind(0)
        allowed = self._allowed(nx, x.device)[:, None, :, None] & self._allowed(ny, x.device)[None, :, None, :]
        if self.rpe:
            w = self.window
            dr, dc = (t.clamp(0, 4 * w - 2).to(x.device) for t in _grid_index(nx, ny, 2 * w, 2 * w))
            table = self.local_relative_position_bias_table.view(4 * w - 1, 4 * w - 1, h).permute(2, 0, 1)
            local = table[:, dr[:, None, :, None], dc[None, :, None, :]]
        else:
            local = x.new_zeros(h, nx, ny, nx, ny)
        local = local.masked_fill(~allowed, float("-inf")).reshape(h, nx * ny, nx * ny)
        bias = self._bias(local)
        if g == 0:
            out = self._attend(q, k, v, bias)
        elif self.sharew:
            out = self._attend(torch.cat([heads(self.query(x[:, :g]))[0], q], 2), k, v, bias)
        else:  # separate projections of the global rows
            kg, vg = heads(self.kv_global(x)).unbind(0)
            out = self._attend(q, k, v, bias, glo=(heads(self.query_global(x[:, :g]))[0], kg, vg))
        out = out.transpose(1, 2).reshape(b, n, c)
        if g == 0:
            return self.proj_drop(self.proj(out))
        return self.proj_drop(torch.cat([self.proj_global(out[:, :g]), self.proj(out[:, g:])], 1))


class PatchEmbed(nn.Module):
    """Patch embedding of one stage, LayerNorm, the stage's global tokens and (``ape``) 2-D absolute positions."""

    def __init__(self, patch: int, grid: tuple[int, int], in_chans: int, dim: int, nglo: int, ape: bool,
                 norm_embed: bool = True, drop_rate: float = 0.0) -> None:
        from timm.layers import trunc_normal_

        super().__init__()
        self.patch_size, self.grid = (patch, patch), grid
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm_embed = nn.LayerNorm(dim, eps=1e-6) if norm_embed else None
        self.cls_token = nn.Parameter(trunc_normal_(torch.zeros(1, nglo, dim), std=0.02)) if nglo >= 1 else None
        self.ape = ape
        if ape:
            self.cls_pos_embed = nn.Parameter(trunc_normal_(torch.zeros(1, nglo, dim), std=0.02))
            self.x_pos_embed = nn.Parameter(trunc_normal_(torch.zeros(1, grid[0], dim // 2), std=0.02))
            self.y_pos_embed = nn.Parameter(trunc_normal_(torch.zeros(1, grid[1], dim // 2), std=0.02))
        self.pos_drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if tuple(x.shape[-2:]) != self.grid:
            raise UserError(f"ViL: a {tuple(x.shape[-2:])} token grid where the model was built for {self.grid} "
                            "(set preprocess input_size, or build the model with img_size)")
        x = x.flatten(2).transpose(1, 2)
        if self.norm_embed is not None:
            x = self.norm_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1)
        if self.ape:
            nx, ny = self.grid
            pos = torch.cat([self.x_pos_embed[:, :, None].expand(-1, -1, ny, -1),
                             self.y_pos_embed[:, None].expand(-1, nx, -1, -1)], -1).flatten(1, 2)
            x = x + torch.cat([self.cls_pos_embed, pos], 1)
        return self.pos_drop(x)


class AttnBlock(nn.Module):
    def __init__(self, dim: int, attn: nn.Module, drop_path: float) -> None:
        from timm.layers import DropPath

        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.attn(self.norm(x)))


class MlpBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop_path: float, drop: float) -> None:
        from timm.layers import DropPath, Mlp

        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.norm(x)))


class ViL(nn.Module):
    """Multi-Scale Vision Longformer classifier with timm's interface (``forward_features`` / ``forward_head``)."""

    def __init__(self, stages: tuple[Stage, ...], *, img_size: int = 224, num_classes: int = 1000,
                 window_mode: str = "chunk", sharew: bool = True, avg_pool: bool = False, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        from timm.layers import trunc_normal_

        super().__init__()
        if window_mode not in WINDOW_MODES:
            raise UserError(f"ViL: unknown window_mode {window_mode!r} (allowed: {', '.join(WINDOW_MODES)})")
        if not stages:
            raise UserError("ViL: no stages")
        self.stages, self.img_size, self.num_classes = tuple(stages), img_size, num_classes
        self.num_features = stages[-1].d
        self.global_pool = "avg" if avg_pool or stages[-1].g == 0 else "token"
        dpr = iter(torch.linspace(0, drop_path_rate, sum(s.n for s in stages), device="cpu").tolist())
        nx = ny = img_size
        stride, in_dim = 1, 3
        for i, st in enumerate(stages, 1):
            nx, ny, stride = nx // st.p, ny // st.p, stride * st.p
            if min(nx, ny) < 1:
                raise UserError(f"ViL: stage {i} has no tokens at img_size {img_size}")
            geo = {"grid": (nx, ny), "spacing": (float(stride), float(stride)), "nglo": st.g, "rpe": not st.a,
                   "qkv_bias": qkv_bias, "attn_drop": attn_drop_rate, "proj_drop": drop_rate}
            layers: list[nn.Module] = [PatchEmbed(st.p, (nx, ny), in_dim, st.d, st.g, st.a, drop_rate=drop_rate)]
            for _ in range(st.n):
                rate = next(dpr)
                attn = (LongformerAttention(st.d, st.h, window=st.f, window_mode=window_mode, sharew=sharew, **geo)
                        if st.s else FullAttention(st.d, st.h, **geo))
                layers += [AttnBlock(st.d, attn, rate), MlpBlock(st.d, mlp_ratio, rate, drop_rate)]
            self.add_module(f"layer{i}", nn.Sequential(*layers))
            in_dim = st.d
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters()
                if any(k in n for k in ("pos_embed", "cls_token", "relative_position", "norm"))} | {"head.bias"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, global + local tokens, width) of the last stage after the final LayerNorm."""
        prev: tuple[Stage, tuple[int, int]] | None = None
        for i, st in enumerate(self.stages, 1):
            layer = getattr(self, f"layer{i}")
            if prev is not None:  # the previous stage's local tokens as an image; its global tokens are dropped
                x = x[:, prev[0].g:].transpose(1, 2).reshape(len(x), prev[0].d, *prev[1])
            x = layer(x)
            prev = (st, layer[0].grid)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.global_pool == "token" else x.mean(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create(name: str, *, arch: str | None = None, **kwargs: Any) -> ViL:
    """Build ``vil:<name>`` with random weights (``arch``, in the authors' notation, replaces the variant's stages).

    Keyword arguments: ``img_size``, ``num_classes``, ``window_mode``, ``sharew``, ``avg_pool``, ``ape`` (absolute
    2-D positions instead of relative bias, every stage), ``drop_rate``, ``attn_drop_rate``, ``drop_path_rate``.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in VARIANTS:
        raise UserError(f"unknown ViL variant {name!r} (allowed: {', '.join([*VARIANTS, *ALIASES])})")
    stages = parse_arch(arch) if arch else VARIANTS[key]
    if "ape" in kwargs:
        ape = bool(kwargs.pop("ape"))
        stages = tuple(replace(s, a=ape) for s in stages)
    kwargs.setdefault("img_size", 32 if key == "test" else 224)
    try:
        return ViL(stages, **kwargs)
    except TypeError as exc:
        raise UserError(f"vil:{name}: {exc}") from exc


def data_config(model: ViL) -> dict[str, Any]:
    """The authors' preprocessing: ImageNet mean and std, bicubic, centre crop 0.875."""
    size = model.img_size
    return {"input_size": (3, size, size), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
            "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"}
