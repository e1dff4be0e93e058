"""Transformer building blocks shared by VGGT, π3 and their DINOv2 encoder.

Parameter names (``norm1``, ``attn.qkv``, ``attn.q_norm``, ``attn.proj``, ``ls1.gamma``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``, ``ls2.gamma``) follow the official checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from fgq.models.rope import RoPE2D


class Mlp(nn.Module):
    """fc1 → exact GELU → fc2."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head q/k LayerNorm and 2-D RoPE.

    Order as in the official code: qkv → split heads → q/k-norm → RoPE → SDPA → merge heads → proj.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        qk_norm_eps: float = 1e-5,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        if rope is not None and self.head_dim % 4:
            raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {self.head_dim}")
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope

    def heads(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values ``[B, heads, N, head_dim]`` as the attention sees them (after q/k-norm, RoPE)."""
        return split_heads(self, self.qkv(x), pos)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(attention_core(self, self.qkv(x), pos))


def split_heads(attn: nn.Module, qkv: torch.Tensor, pos: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """``qkv [B, N, 3·C]`` → q, k, v ``[B, heads, N, head_dim]`` after q/k-norm and RoPE. ``attn`` supplies
    ``num_heads``, ``head_dim``, ``q_norm``, ``k_norm`` and ``rope``: an ``Attention``, or a quantized attention
    that took them over, so both compute exactly this."""
    b, n, _ = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q).to(v.dtype), attn.k_norm(k).to(v.dtype)
    if attn.rope is not None and pos is not None:
        q, k = attn.rope(q, pos), attn.rope(k, pos)
    return q, k, v


def attention_core(attn: nn.Module, qkv: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    """Everything of the attention between ``qkv`` and ``proj``: heads, SDPA, heads merged back to ``[B, N, C]``."""
    b, n, _ = qkv.shape
    out = F.scaled_dot_product_attention(*split_heads(attn, qkv, pos))
    return out.transpose(1, 2).reshape(b, n, attn.num_heads * attn.head_dim)


def pre_norm_residual(block: nn.Module, x: torch.Tensor, attention: Callable[[torch.Tensor], torch.Tensor],
                      mlp: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The residual skeleton of ``Block``: ``x + ls1(attention(norm1(x)))``, then ``+ ls2(mlp(norm2(x)))``.
    ``block`` supplies ``norm1``, ``ls1``, ``norm2``, ``ls2``; quantized blocks pass their own ``attention``/``mlp``
    and so keep this structure instead of re-implementing it."""
    x = x + block.ls1(attention(block.norm1(x)))
    return x + block.ls2(mlp(block.norm2(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``.

    ``init_values=None`` means no LayerScale (no ``ls*.gamma`` keys), as in the official classes.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = None,
        norm_eps: float = 1e-5,
        qk_norm: bool = False,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        return pre_norm_residual(self, x, lambda h: self.attn(h, pos), self.mlp)


def fp32_heads(device: torch.device):
    """The official heads run with CUDA autocast disabled (fp32); the same on any device whose autocast is on (a
    CPU bf16 run is then the CUDA run's numerics, not a different model)."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()
