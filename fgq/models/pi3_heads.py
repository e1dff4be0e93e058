"""π3's output heads: frame-wise transformer decoders, the pixel-shuffle point/confidence head and the
camera head (residual MLPs, average pooling, SVD-orthogonalised rotation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgq.models.layers import Block
from fgq.models.rope import RoPE2D


class TransformerDecoder(nn.Module):
    """``projects`` → ``depth`` RoPE blocks (no LayerScale, no qk-norm, LN eps 1e-6) → ``linear_out``."""

    def __init__(
        self, in_dim: int, out_dim: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
        rope: RoPE2D | None,
    ) -> None:
        super().__init__()
        self.projects = nn.Linear(in_dim, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=None, norm_eps=1e-6, rope=rope) for _ in range(depth)
        )
        self.linear_out = nn.Linear(embed_dim, out_dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.projects(x)
        for block in self.blocks:
            x = block(x, pos)
        return self.linear_out(x)


class LinearPts3d(nn.Module):
    """Each patch token → ``output_dim × p × p`` values, unfolded to pixels by ``pixel_shuffle``."""

    def __init__(self, patch_size: int, dim: int, output_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(dim, output_dim * patch_size**2)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        n = tokens.shape[0]
        p = self.patch_size
        feat = self.proj(tokens).transpose(-1, -2).reshape(n, -1, height // p, width // p)
        return F.pixel_shuffle(feat, p).permute(0, 2, 3, 1)


class ResConvBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv1 = nn.Linear(dim, dim)
        self.res_conv2 = nn.Linear(dim, dim)
        self.res_conv3 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.res_conv3(F.relu(self.res_conv2(F.relu(self.res_conv1(x))))))
        return x + y


def svd_orthogonalize(m: torch.Tensor) -> torch.Tensor:
    """Nearest proper rotation to the row-normalised 3×3 matrices ``m`` (``[N, 9]`` or ``[N, 3, 3]``)."""
    m = m.reshape(-1, 3, 3)
    a = F.normalize(m, p=2, dim=-1).transpose(-1, -2)
    u, _, vh = torch.linalg.svd(a)
    v = vh.transpose(-1, -2)
    det = torch.det(v @ u.transpose(-1, -2))
    v = torch.cat((v[:, :, :-1], v[:, :, -1:] * det.view(-1, 1, 1)), dim=2)
    return v @ u.transpose(-1, -2)


class Pi3CameraHead(nn.Module):
    """Per-frame camera-to-world pose ``[N, 4, 4]`` from the camera decoder's patch tokens."""

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.res_conv = nn.ModuleList(ResConvBlock(dim) for _ in range(2))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_rot = nn.Linear(dim, 9)

    def forward(self, feat: torch.Tensor, h: int, w: int) -> torch.Tensor:
        for block in self.res_conv:
            feat = block(feat)
        feat = self.more_mlps(feat.mean(dim=1))  # average pooling over the h×w patch grid
        t, rot = self.fc_t(feat.float()), svd_orthogonalize(self.fc_rot(feat.float()))
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], device=feat.device).expand(feat.shape[0], 1, 4)
        return torch.cat((torch.cat((rot, t[:, :, None]), dim=2), bottom), dim=1)
