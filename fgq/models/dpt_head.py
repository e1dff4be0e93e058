"""DPT dense head of VGGT (depth and point maps): four aggregator layers → multi-scale maps → fusion
→ full-resolution prediction and confidence."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "exp":
        return torch.exp(x)
    if kind == "inv_log":
        return torch.sign(x) * torch.expm1(x.abs())
    if kind == "expp1":
        return 1 + torch.exp(x)
    if kind == "linear":
        return x
    if kind == "relu":
        return F.relu(x)
    raise ValueError(f"DPT activation {kind!r}: use exp, inv_log, expp1, linear or relu")


def _sincos(dim: int, pos: torch.Tensor, omega_0: float = 100.0) -> torch.Tensor:
    omega = 1.0 / omega_0 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0))
    angles = pos.reshape(-1, 1).double() * omega
    return torch.cat((angles.sin(), angles.cos()), dim=1).float()


def uv_embedding(channels: int, h: int, w: int, aspect: float, device: torch.device) -> torch.Tensor:
    """``[channels, h, w]`` sin-cos embedding of a view-plane grid spanning ±(w−1)/w·a/√(a²+1) in x and
    ±(h−1)/h·1/√(a²+1) in y, ``a = W/H`` of the image; x takes the first half of the channels."""
    diag = (1 + aspect**2) ** 0.5
    span_x, span_y = aspect / diag * (w - 1) / w, 1 / diag * (h - 1) / h
    u = torch.linspace(-span_x, span_x, w, device=device)
    v = torch.linspace(-span_y, span_y, h, device=device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    emb = torch.cat((_sincos(channels // 2, uu), _sincos(channels // 2, vv)), dim=-1)
    return emb.view(h, w, channels).permute(2, 0, 1)


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The official unit applies an in-place ReLU to its input before the skip connection,
        # so the residual adds relu(x), not x.
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FusionBlock(nn.Module):
    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.has_residual = has_residual
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    def __init__(
        self,
        dim_in: int = 2048,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        frames_chunk_size: int = 8,
    ) -> None:
        super().__init__()
        if len(out_channels) != 4 or len(intermediate_layer_idx) != 4:
            raise ValueError("DPT head needs exactly 4 out_channels and 4 intermediate_layer_idx")
        activate(torch.zeros(1), activation), activate(torch.zeros(1), conf_activation)
        self.patch_size = patch_size
        self.activation, self.conf_activation = activation, conf_activation
        self.intermediate_layer_idx = list(intermediate_layer_idx)
        self.pos_embed = pos_embed
        self.frames_chunk_size = frames_chunk_size
        oc = list(out_channels)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for j, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{j}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for j in (1, 2, 3):
            setattr(self.scratch, f"refinenet{j}", FusionBlock(features))
        self.scratch.refinenet4 = FusionBlock(features, has_residual=False)
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1)
        )

    def _add_pos(self, x: torch.Tensor, aspect: float) -> torch.Tensor:
        emb = uv_embedding(x.shape[1], x.shape[-2], x.shape[-1], aspect, x.device).to(x.dtype)
        return x + 0.1 * emb

    def _fuse(self, maps: list[torch.Tensor]) -> torch.Tensor:
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{j}_rn")(m) for j, m in enumerate(maps, start=1))
        out = s.refinenet4(l4, size=l3.shape[2:])
        out = s.refinenet3(out, l3, size=l2.shape[2:])
        out = s.refinenet2(out, l2, size=l1.shape[2:])
        out = s.refinenet1(out, l1)
        return s.output_conv1(out)

    def _forward_frames(self, layers: list[torch.Tensor], patch_start: int, height: int, width: int):
        b, s = layers[0].shape[:2]
        h, w = height // self.patch_size, width // self.patch_size
        aspect = width / height
        maps = []
        for j, x in enumerate(layers):
            x = self.norm(x[:, :, patch_start:].reshape(b * s, h * w, -1).float())
            x = self.projects[j](x.permute(0, 2, 1).reshape(b * s, -1, h, w))
            if self.pos_embed:
                x = self._add_pos(x, aspect)
            maps.append(self.resize_layers[j](x))
        out = self._fuse(maps)
        out = F.interpolate(out, size=(h * self.patch_size, w * self.patch_size), mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = self._add_pos(out, aspect)
        out = self.scratch.output_conv2(out).permute(0, 2, 3, 1)
        pred = activate(out[..., :-1], self.activation)
        conf = activate(out[..., -1], self.conf_activation)
        return pred.reshape(b, s, *pred.shape[1:]), conf.reshape(b, s, *conf.shape[1:])

    def forward(self, layers: list[torch.Tensor | None], image_hw: tuple[int, int], patch_start: int):
        """Returns prediction ``[B, S, H, W, output_dim−1]`` and confidence ``[B, S, H, W]``; frames are
        processed in chunks of ``frames_chunk_size`` to bound memory (identical results)."""
        chosen = [layers[i] for i in self.intermediate_layer_idx]
        s = chosen[0].shape[1]
        step = self.frames_chunk_size if self.frames_chunk_size and self.frames_chunk_size > 0 else s
        parts = [
            self._forward_frames([x[:, i : i + step] for x in chosen], patch_start, *image_hw)
            for i in range(0, s, step)
        ]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)
