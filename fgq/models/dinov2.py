"""DINOv2 ViT with register tokens: the image encoder of VGGT (``aggregator.patch_embed``) and π3 (``encoder``).

Keys as in the official checkpoints: ``cls_token``, ``pos_embed``, ``register_tokens``, optional ``mask_token``,
``patch_embed.proj``, ``blocks.{i}`` (no chunk level), ``norm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgq.models.layers import Block


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoEncoder(nn.Module):
    """Returns the normalised patch tokens ``[N, h·w, C]`` (``x_norm_patchtokens`` in the official code)."""

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: float | None = 1.0,
        mask_token: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # VGGT keeps DINOv2's unused mask token (a checkpoint key); π3 deletes it.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False) if mask_token else None
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, norm_eps=1e-6) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_register_tokens = num_register_tokens
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def interpolate_pos_embed(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """Bicubic, antialiased resize of the patch position table to an ``h × w`` grid (cls entry kept)."""
        n = self.pos_embed.shape[1] - 1
        if n == h * w and h == w:  # official shortcut: the table is used as is
            return self.pos_embed
        table = self.pos_embed.float()
        m = round(n**0.5)
        patch = table[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", antialias=True)
        patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat((table[:, :1], patch), dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        h, w = height // self.patch_size, width // self.patch_size
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(n, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_embed(h, w, x.dtype)
        x = torch.cat((x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]
