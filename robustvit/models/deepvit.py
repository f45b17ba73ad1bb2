"""DeepViT (Zhou et al. 2021, "DeepViT: Towards Deeper Vision Transformer", arXiv:2103.11886).

A ViT whose deeper blocks use **re-attention**: the softmax attention maps of the H heads are mixed by a
learnable H x H matrix Theta and normalised, ``ReAttention(Q, K, V) = Norm(Theta^T softmax(Q K^T / sqrt(d))) V``,
so that attention maps stay diverse across depth (the paper's remedy for "attention collapse"). As in the
authors' code (github.com/zhoudaquan/dvit_repo, ``models/layers.py``) Theta is a 1x1 convolution over the head
axis (with bias) and Norm is a ``BatchNorm2d`` over the heads, optionally multiplied by the attention scale
(``transform_scale``); DeepViT-S/L also scale the residual branches (``scale_adjustment``) and use the
3-convolution patch stem of T2T (``cnn_stem``).

Variants (parameters for 1000 classes at 224 px; the paper's tables in brackets):

=========  =====================================================  ============  ==========
variant    configuration                                          parameters    paper
=========  =====================================================  ============  ==========
``16b``    16 blocks, width 384, 12 heads, MLP 3x, all re-attn    24.43M        24.5M
``24b``    24 blocks, as 16b                                      36.26M        36.3M
``32b``    32 blocks, as 16b                                      48.10M        48.1M
``s``      16 blocks, width 396, last 5 re-attn, CNN stem         27.31M        27M
``l``      32 blocks, width 420, last 12 re-attn, CNN stem        58.88M        55M
``l_384``  ``l`` at 384 px                                        59.04M        --
``test``   4 blocks, width 48, 3 heads, 8 px patches, 32 px in   0.15M         --
=========  =====================================================  ============  ==========

DeepViT-L is built exactly as the authors' ``deepvit_L``; the paper's 55M cannot come from its own stated
configuration (32 blocks of width 420 with a 1260-wide MLP hold 56.5M parameters before the stem and the head).

State-dict keys are those of the authors' code, so their released checkpoints load as they are
(``deepvit:32b --checkpoint deepvit_32b.pth``). Attention readable by the probes: each block's attention
module feeds the softmax maps (before re-attention mixes the heads) to its ``attn_drop`` and carries its
``token_layout`` (patch grid, patch size in input pixels, 1 class token).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustvit.errors import UserError


@dataclass(frozen=True)
class Variant:
    """One DeepViT configuration (the authors' ``DeepVisionTransformer`` arguments)."""

    embed_dim: int
    depth: int
    num_heads: int = 12
    mlp_ratio: float = 3.0
    reattention_from: int = 0  # first block with re-attention (the authors' ``apply_transform``)
    cnn_stem: bool = False
    transform_scale: bool = False
    scale_adjustment: float = 1.0
    img_size: int = 224
    patch_size: int = 16
    crop_pct: float = 0.9


VARIANTS: dict[str, Variant] = {
    "16b": Variant(embed_dim=384, depth=16),
    "24b": Variant(embed_dim=384, depth=24),
    "32b": Variant(embed_dim=384, depth=32),
    "s": Variant(embed_dim=396, depth=16, reattention_from=11, cnn_stem=True, transform_scale=True,
                 scale_adjustment=0.5),
    "l": Variant(embed_dim=420, depth=32, reattention_from=20, cnn_stem=True, scale_adjustment=0.5),
    "l_384": Variant(embed_dim=420, depth=32, reattention_from=20, cnn_stem=True, scale_adjustment=0.5, img_size=384,
                     crop_pct=1.0),
    "test": Variant(embed_dim=48, depth=4, num_heads=3, img_size=32, patch_size=8, crop_pct=1.0),
}
#: parameter counts in the paper's tables (1000 classes)
PAPER_PARAMS: dict[str, float] = {"16b": 24.5e6, "24b": 36.3e6, "32b": 48.1e6, "s": 27e6, "l": 55e6}


class ReAttention(nn.Module):
    """Multi-head self-attention with optional re-attention (``transform``): ``BN(Theta * softmax(q k^T)) v``.

    Attributes:
        token_layout: (patch grid, patch size in input pixels, prefix tokens), for the attention probes.
        fused_attn: Use ``scaled_dot_product_attention`` where no re-attention needs the maps (the probes
            switch it off to read the weights from ``attn_drop``).
    """

    def __init__(self, dim: int, num_heads: int, *, transform: bool, transform_scale: bool = False,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 token_layout: tuple[tuple[int, int], tuple[float, float], int] = ((1, 1), (1.0, 1.0), 1)) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.transform = transform
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if transform:
            self.reatten_matrix = nn.Conv2d(num_heads, num_heads, 1, 1)
            self.var_norm = nn.BatchNorm2d(num_heads)
            self.reatten_scale = self.scale if transform_scale else 1.0
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.fused_attn = True
        self.token_layout = token_layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused_attn and not self.transform:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0,
                                               scale=self.scale)
        else:
            attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
            if self.transform:
                attn = self.var_norm(self.reatten_matrix(attn)) * self.reatten_scale
            x = attn @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """Pre-norm transformer block; residual branches scaled by ``1 / scale_adjustment`` (inputs by it)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, drop_path: float, scale_adjustment: float,
                 **attn: Any) -> None:
        from timm.layers import DropPath, Mlp

        super().__init__()
        self.adjust_ratio = scale_adjustment
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ReAttention(dim, num_heads, **attn)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.adjust_ratio
        x = x + self.drop_path(self.attn(self.norm1(x * r)) / r)
        return x + self.drop_path(self.mlp(self.norm2(x * r))) / r


class PatchEmbed(nn.Module):
    """Non-overlapping patches, or (``cnn_stem``) T2T's 7x7/2 and 3x3 convolutions then patches of half the size."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, cnn_stem: bool) -> None:
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.cnn_stem = cnn_stem
        if cnn_stem:
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(64)
            self.proj = nn.Conv2d(64, embed_dim, kernel_size=patch_size // 2, stride=patch_size // 2)
        else:
            self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise UserError(f"DeepViT: input {tuple(x.shape[-2:])} is not the model's {self.img_size} "
                            "(set preprocess input_size, or build the model with img_size)")
        if self.cnn_stem:
            x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.proj(x).flatten(2).transpose(1, 2)


class DeepViT(nn.Module):
    """DeepViT classifier with timm's interface (``forward_features`` / ``forward_head``), class-token pooling."""

    def __init__(self, variant: Variant, *, num_classes: int = 1000, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        from timm.layers import trunc_normal_

        super().__init__()
        self.variant = variant
        self.num_classes = num_classes
        self.num_features = self.embed_dim = dim = variant.embed_dim
        self.num_prefix_tokens = 1
        self.global_pool = "token"
        self.patch_embed = PatchEmbed(variant.img_size, variant.patch_size, dim, variant.cnn_stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, dim))
        self.pos_drop = nn.Dropout(drop_rate)
        layout = (self.patch_embed.grid_size, tuple(float(p) for p in self.patch_embed.patch_size), 1)
        dpr = torch.linspace(0, drop_path_rate, variant.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            Block(dim, variant.num_heads, variant.mlp_ratio, drop_path=dpr[i],
                  scale_adjustment=variant.scale_adjustment,
                  transform=i >= variant.reattention_from, transform_scale=variant.transform_scale,
                  attn_drop=attn_drop_rate, proj_drop=drop_rate, token_layout=layout)
            for i in range(variant.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1 + patches, width) tokens after the final LayerNorm."""
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(len(x), -1, -1), x), dim=1) + self.pos_embed
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def variant(name: str) -> Variant:
    """The :class:`Variant` called ``name`` (case-insensitive), or a :class:`UserError` listing them."""
    key = name.lower()
    if key not in VARIANTS:
        raise UserError(f"unknown DeepViT variant {name!r} (allowed: {', '.join(VARIANTS)})")
    return VARIANTS[key]


def create(name: str, **kwargs: Any) -> DeepViT:
    """Build ``deepvit:<name>`` with random weights.

    Keyword arguments: ``num_classes``, ``drop_rate``, ``attn_drop_rate``, ``drop_path_rate`` and any
    :class:`Variant` field (``img_size``, ``depth``, ...) to change the configuration.
    """
    v = variant(name)
    fields = {k: kwargs.pop(k) for k in list(kwargs) if k in Variant.__dataclass_fields__}
    try:
        return DeepViT(replace(v, **fields), **kwargs)
    except TypeError as exc:
        raise UserError(f"deepvit:{name}: {exc}") from exc


def data_config(model: DeepViT) -> dict[str, Any]:
    """Preprocessing of the authors' configs: mean = std = 0.5, bicubic, centre crop 0.9 (1.0 at 384 px)."""
    size = model.variant.img_size
    return {"input_size": (3, size, size), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
            "interpolation": "bicubic", "crop_pct": model.variant.crop_pct, "crop_mode": "center"}
