"""2-D rotary position embedding (RoPE) and the patch position grid used by VGGT and π3."""

from __future__ import annotations

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class RoPE2D(nn.Module):
    """Rotates the first half of each head by the token's row (y), the second half by its column (x).

    Per half of size d: ``inv_freq_j = base^(-2j/d)``; angles ``pos · inv_freq`` duplicated to d;
    ``t·cos + rotate_half(t)·sin``. No parameters, no buffers (nothing to load).
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = float(base)

    def _rotate(self, t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        d = t.shape[-1]
        inv_freq = 1.0 / self.base ** (torch.arange(0, d, 2, device=t.device).float() / d)
        angles = (pos.float()[..., None] * inv_freq).to(t.dtype)  # [B, N, d/2]
        angles = torch.cat((angles, angles), dim=-1)[:, None]  # broadcast over heads
        return t * angles.cos() + _rotate_half(t) * angles.sin()

    def forward(self, t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``t``: ``[B, heads, N, head_dim]``; ``pos``: ``[B, N, 2]`` integer (y, x)."""
        ty, tx = t.chunk(2, dim=-1)
        return torch.cat((self._rotate(ty, pos[..., 0]), self._rotate(tx, pos[..., 1])), dim=-1)


def token_positions(n: int, h: int, w: int, num_special: int, device: torch.device) -> torch.Tensor:
    """``[n, num_special + h·w, 2]`` positions: special tokens at (0, 0), patch (y, x) at (y+1, x+1)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    grid = torch.stack((ys.flatten(), xs.flatten()), dim=-1) + 1
    special = torch.zeros(num_special, 2, dtype=grid.dtype, device=device)
    return torch.cat((special, grid), dim=0).expand(n, -1, -1)
