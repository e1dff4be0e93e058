"""Fake-quantization primitives (quantize → de-quantize in floating point) with a straight-through estimator.

Rows are the last dimension: a weight row is an output channel (or one group of it), an activation row is
one token. Grids: ``flatquant`` as in the FlatQuant / FGQ / QuantVGGT code, ``gptq`` as in the GPTQ reference code.
"""

from __future__ import annotations

import torch


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even forward, identity backward. The scale is not detached, so gradients also reach
    clipping parameters and transforms through it (as in FlatQuant)."""
    return x + (torch.round(x) - x).detach()


def qparams(
    x: torch.Tensor, bits: int, sym: bool, *, weight: bool, clip: torch.Tensor | float = 1.0, grid: str = "flatquant"
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Per-row ``(scale, zero, qmin, qmax)`` for rows along the last dimension (kept as a size-1 dim).

    ``clip`` (a ratio in (0, 1], scalar or broadcastable per row) shrinks the range before the scale is set.
    """
    xmin = x.amin(dim=-1, keepdim=True).clamp(max=0) * clip
    xmax = x.amax(dim=-1, keepdim=True).clamp(min=0) * clip
    if grid == "gptq":
        maxq = 2**bits - 1
        if sym:
            xmax = torch.maximum(xmin.abs(), xmax)
            xmin = -xmax
        degenerate = (xmin == 0) & (xmax == 0)
        xmin, xmax = torch.where(degenerate, -1.0, xmin), torch.where(degenerate, 1.0, xmax)
        scale = (xmax - xmin) / maxq
        zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
        return scale, zero, 0, maxq
    if sym:
        qmax = 2 ** (bits - 1) - 1
        absmax = torch.maximum(xmin.abs(), xmax)
        if weight:
            scale = absmax.clamp(min=1e-5) / qmax
        else:
            scale = absmax / qmax
            scale = torch.where(absmax == 0, torch.ones_like(scale), scale)
        return scale, torch.zeros_like(scale), -(qmax + 1), qmax
    qmax = 2**bits - 1
    degenerate = (xmin == 0) & (xmax == 0)
    xmin, xmax = torch.where(degenerate, -1.0, xmin), torch.where(degenerate, 1.0, xmax)
    scale = (xmax - xmin) / qmax
    if weight:
        scale = scale.clamp(min=1e-5)
    return scale, torch.round(-xmin / scale), 0, qmax


def fake_quant_with(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    q = torch.clamp(round_ste(x / scale) + zero, qmin, qmax)
    return scale * (q - zero)


def quantize_weight(
    w: torch.Tensor, bits: int, sym: bool = True, group_size: int | None = None,
    clip: torch.Tensor | float = 1.0, grid: str = "flatquant",
) -> torch.Tensor:
    """Fake-quantize ``[out, in]`` weights per output channel, or per group of ``group_size`` input columns."""
    if bits >= 16:
        return w
    out_features, in_features = w.shape
    rows = w
    if group_size is not None:
        if in_features % group_size:
            raise ValueError(f"weight group size {group_size} does not divide the input width {in_features}")
        rows = w.reshape(out_features, in_features // group_size, group_size)
        if torch.is_tensor(clip) and clip.dim() == 2:
            clip = clip[:, None]
    scale, zero, qmin, qmax = qparams(rows, bits, sym, weight=True, clip=clip, grid=grid)
    return fake_quant_with(rows, scale, zero, qmin, qmax).reshape(out_features, in_features)


def quantize_activation(
    x: torch.Tensor, bits: int, sym: bool = True, clip: torch.Tensor | float = 1.0, grid: str = "flatquant"
) -> torch.Tensor:
    """Dynamic per-token fake quantization of ``[..., C]`` activations."""
    if bits >= 16:
        return x
    scale, zero, qmin, qmax = qparams(x, bits, sym, weight=False, clip=clip, grid=grid)
    return fake_quant_with(x, scale, zero, qmin, qmax)
