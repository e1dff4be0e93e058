"""VGGT's alternating-attention aggregator: DINOv2 patch tokens + camera/register tokens, then frame and
global blocks in alternation (F0, G0, F1, G1, ...)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fgq.models.dinov2 import DinoEncoder, PatchEmbed
from fgq.models.layers import Block
from fgq.models.rope import RoPE2D, token_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of ``[..., 3, H, W]`` images in [0, 1]."""
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(shape)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(shape)
    return (images - mean) / std


def _frame_tokens(param: torch.Tensor, b: int, s: int) -> torch.Tensor:
    """``(1, 2, X, C)`` → ``[B, S, X, C]``: index 0 for frame 0, index 1 for frames 1..S-1."""
    first = param[:, :1].expand(b, 1, -1, -1)
    rest = param[:, 1:].expand(b, s - 1, -1, -1)
    return torch.cat((first, rest), dim=1)


class Aggregator(nn.Module):
    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        qk_norm: bool = True,
        rope_freq: float = 100.0,
        init_values: float | None = 0.01,
        aa_order: Sequence[str] = ("frame", "global"),
        aa_block_size: int = 1,
        patch_embed: dict | None = None,
    ) -> None:
        super().__init__()
        enc = dict(patch_embed or {})
        kind = enc.pop("type", "dinov2")
        if kind == "dinov2":
            self.patch_embed = DinoEncoder(img_size, patch_size, embed_dim, **enc)
        elif kind == "conv":
            self.patch_embed = PatchEmbed(patch_size, embed_dim)
        else:
            raise ValueError(f"aggregator.patch_embed.type={kind!r}: use 'dinov2' or 'conv'")
        if depth % aa_block_size:
            raise ValueError(f"aggregator depth {depth} is not divisible by aa_block_size {aa_block_size}")
        if set(aa_order) - {"frame", "global"}:
            raise ValueError(f"aggregator.aa_order={list(aa_order)}: entries must be 'frame' or 'global'")
        self.rope = RoPE2D(rope_freq) if rope_freq > 0 else None

        def block() -> Block:
            return Block(
                embed_dim, num_heads, mlp_ratio, qkv_bias, proj_bias, ffn_bias,
                init_values=init_values, qk_norm=qk_norm, rope=self.rope,
            )

        self.frame_blocks = nn.ModuleList(block() for _ in range(depth))
        self.global_blocks = nn.ModuleList(block() for _ in range(depth))
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, num_register_tokens, embed_dim) * 1e-6)
        self.patch_size = patch_size
        self.patch_start_idx = 1 + num_register_tokens
        self.aa_order = tuple(aa_order)
        self.aa_block_size = aa_block_size
        self.depth = depth

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, S, 3, H, W]`` in [0, 1] → tokens ``[B, S, P, C]`` and positions ``[B, S, P, 2]``."""
        b, s, _, height, width = images.shape
        h, w = height // self.patch_size, width // self.patch_size
        patches = self.patch_embed(normalize_images(images).reshape(b * s, 3, height, width))
        patches = patches.reshape(b, s, h * w, -1)
        tokens = torch.cat(
            (_frame_tokens(self.camera_token, b, s), _frame_tokens(self.register_token, b, s), patches), dim=2
        )
        pos = token_positions(b * s, h, w, self.patch_start_idx, images.device)
        return tokens, pos.reshape(b, s, -1, 2)

    def schedule(self) -> list[tuple[str, int]]:
        """Blocks in execution order: ``[("frame", 0), ("global", 0), ("frame", 1), ...]``."""
        order = []
        for start in range(0, self.depth, self.aa_block_size):
            for kind in self.aa_order:
                order.extend((kind, i) for i in range(start, start + self.aa_block_size))
        return order

    def block(self, kind: str, index: int) -> Block:
        return (self.frame_blocks if kind == "frame" else self.global_blocks)[index]

    def run_block(self, kind: str, index: int, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One block on ``[B, S, P, C]``: frame attention sees ``[B·S, P, C]``, global ``[B, S·P, C]``."""
        b, s, p, c = x.shape
        if kind == "frame":
            y = self.block(kind, index)(x.reshape(b * s, p, c), pos.reshape(b * s, p, 2))
        else:
            y = self.block(kind, index)(x.reshape(b, s * p, c), pos.reshape(b, s * p, 2))
        return y.reshape(b, s, p, c)

    def forward(self, images: torch.Tensor, keep: Sequence[int] | None = None) -> list[torch.Tensor | None]:
        """Per layer i, ``cat(frame_out_i, global_out_i)`` ``[B, S, P, 2C]``; only layers in ``keep`` are
        materialised (others ``None``), as the official ``cached_layer_indices`` does to save memory."""
        x, pos = self.embed(images)
        latest: dict[str, dict[int, torch.Tensor]] = {"frame": {}, "global": {}}
        for kind, index in self.schedule():
            x = self.run_block(kind, index, x, pos)
            if keep is None or index in keep:
                latest[kind][index] = x
        return [
            torch.cat((latest["frame"][i], latest["global"][i]), dim=-1)
            if i in latest["frame"] and i in latest["global"] else None
            for i in range(self.depth)
        ]
