"""Depth alignment and error metrics (recons_eval's KITTI protocol, inherited from MonST3R / CUT3R).

One call of ``evaluate_depth`` is one *unit*: a single alignment over everything it is given. Monocular evaluation
calls it once per frame (``alignment="irls_scale"``), video evaluation once per sequence with the frames stacked
(``alignment="scale_shift"``). ``DepthAccumulator`` then averages the units weighted by their valid-pixel counts.

Computation stays in the inputs' dtype (the reference works on float32 tensors); medians are ``torch.median``,
i.e. the *lower* of the two middle values for an even count, as in the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

Alignment = Literal["irls_scale", "median", "scale_shift", "none"]

METRIC_KEYS: tuple[str, ...] = (
    "abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1.25", "delta_1.25^2", "delta_1.25^3",
)


def depth_mask(gt: torch.Tensor, max_depth: float | None = None) -> torch.Tensor:
    """Valid ground truth: ``gt > 0`` (and ``gt < max_depth`` when given)."""
    mask = gt > 0
    if max_depth is not None:
        mask &= gt < max_depth
    return mask


def irls_scale(pred: torch.Tensor, gt: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Scale ``s`` minimising ``Σ|s·p − g|`` by Weiszfeld IRLS (recons_eval's ``median-scale`` mono setting).

    ``s₀ = nanmean(g)/nanmean(p)``; each iteration reweights by ``1/(|s·p − g| + 1e-8)`` and solves the weighted
    least squares ``s = Σ w p g / Σ w p²``; finally ``s ≥ 1e-3``. Returns a 0-d tensor in the inputs' dtype.
    """
    s = torch.nanmean(gt) / torch.nanmean(pred)
    for _ in range(iterations):
        weights = 1.0 / ((s * pred - gt).abs() + 1e-8)
        s = torch.sum(weights * pred * gt) / torch.sum(weights * pred**2)
    return s.clamp(min=1e-3)


def median_scale(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``median(g)/median(p)`` (recons_eval's ``scale`` setting, despite the names)."""
    return torch.median(gt) / torch.median(pred)


def l1_scale_shift(
    pred: torch.Tensor, gt: torch.Tensor, lr: float = 1e-4, max_iters: int = 1000, tol: float = 1e-6
) -> tuple[float, float]:
    """``(s, t)`` for ``s·p + t ≈ g`` by Adam on ``Σ|s·p + t − g|`` from ``s₀ = median(g)/median(p)``, ``t₀ = 0``.

    Stops after ``max_iters`` steps or once the loss (taken before each step) changed by less than ``tol`` since
    the previous step; that last step is kept. With lr 1e-4 the parameters move at most ≈ lr per step.
    """
    s0 = (torch.median(gt) / torch.median(pred)).item()
    # Callers may run under inference mode (Lightning's test loop): its tensors cannot be saved for backward.
    with torch.inference_mode(False), torch.enable_grad():
        pred, gt = pred.clone(), gt.clone()
        s = torch.tensor([s0], dtype=pred.dtype, device=pred.device, requires_grad=True)
        t = torch.tensor([0.0], dtype=pred.dtype, device=pred.device, requires_grad=True)
        optimizer = torch.optim.Adam([s, t], lr=lr)
        prev_loss: float | None = None
        for _ in range(max_iters):
            optimizer.zero_grad()
            loss = torch.sum(torch.abs(s * pred + t - gt))
            loss.backward()
            optimizer.step()
            # Compared as a tensor in the inputs' dtype, like the reference (float32 there).
            if prev_loss is not None and torch.abs(prev_loss - loss.detach()) < tol:
                break
            prev_loss = loss.item()
    return s.detach().item(), t.detach().item()


def align_depth(
    pred: torch.Tensor,
    gt: torch.Tensor,
    alignment: Alignment,
    *,
    lr: float = 1e-4,
    max_iters: int = 1000,
    tol: float = 1e-6,
) -> torch.Tensor:
    """Align valid predicted depths ``pred`` to ``gt`` (same shape, already masked) and return the aligned values."""
    if alignment == "irls_scale":
        return irls_scale(pred, gt) * pred
    if alignment == "median":
        return median_scale(pred, gt) * pred
    if alignment == "scale_shift":
        s, t = l1_scale_shift(pred, gt, lr=lr, max_iters=max_iters, tol=tol)
        return s * pred + t
    if alignment == "none":
        return pred
    raise ValueError(f"unknown depth alignment {alignment!r} (expected irls_scale, median, scale_shift or none)")


def depth_errors(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """AbsRel, SqRel, RMSE, logRMSE and δ<1.25^k of aligned valid depths (1-D or any matching shapes)."""
    diff = pred - gt
    out = {
        "abs_rel": torch.mean(diff.abs() / gt).item(),
        "sq_rel": torch.mean(diff**2 / gt).item(),
        "rmse": torch.sqrt(torch.mean(diff**2)).item(),
    }
    pred = pred.clamp(min=1e-5)  # keeps the log and the ratios finite; applied only to the log/δ metrics
    out["log_rmse"] = torch.sqrt(torch.mean((torch.log(pred) - torch.log(gt)) ** 2)).item()
    max_ratio = torch.maximum(pred / gt, gt / pred)
    out["delta_1.25"] = torch.mean((max_ratio < 1.25).float()).item()
    out["delta_1.25^2"] = torch.mean((max_ratio < 1.25**2).float()).item()
    out["delta_1.25^3"] = torch.mean((max_ratio < 1.25**3).float()).item()
    return out


def evaluate_depth(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    alignment: Alignment,
    max_depth: float | None = None,
    post_clip_max: float | None = None,
    lr: float = 1e-4,
    max_iters: int = 1000,
    tol: float = 1e-6,
) -> dict[str, float]:
    """Mask, align once, optionally clip (Sintel: ``post_clip_max=70``), and score one unit of depth maps.

    ``pred``, ``gt``: depth ``[..., H, W]`` of the same shape (gt ≤ 0 is invalid). ``alignment`` has no default
    because FGQ uses two: ``"irls_scale"`` per frame (mono) and ``"scale_shift"`` per sequence (video). Returns
    ``METRIC_KEYS`` plus ``valid_pixels`` (the unit's aggregation weight); with no valid pixel the metrics are NaN.
    """
    pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    dtype = torch.promote_types(pred.dtype, gt.dtype)
    mask = depth_mask(gt, max_depth)
    p, g = pred.to(dtype)[mask], gt.to(dtype)[mask]
    if g.numel() == 0:
        return {**dict.fromkeys(METRIC_KEYS, float("nan")), "valid_pixels": 0}
    p = align_depth(p, g, alignment, lr=lr, max_iters=max_iters, tol=tol)
    if post_clip_max is not None:
        p = p.clamp(max=post_clip_max)
    return {**depth_errors(p, g), "valid_pixels": int(g.numel())}


class DepthAccumulator:
    """Averages unit results (``evaluate_depth`` outputs) weighted by their ``valid_pixels``.

    Units are frames for monocular and sequences for video evaluation; a unit with no valid pixel has no weight.
    """

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = {key: [] for key in METRIC_KEYS}
        self._weights: list[int] = []

    def add(self, metrics: Mapping[str, float]) -> None:
        weight = int(metrics["valid_pixels"])
        if weight <= 0:
            return
        for key in METRIC_KEYS:
            self._values[key].append(float(metrics[key]))
        self._weights.append(weight)

    def compute(self) -> dict[str, float]:
        """Pixel-weighted means of ``METRIC_KEYS`` plus the total ``valid_pixels``."""
        if not self._weights:
            raise ValueError("DepthAccumulator has no unit with valid pixels")
        weights = np.asarray(self._weights, dtype=np.float64)
        out = {key: float(np.average(np.asarray(vals), weights=weights)) for key, vals in self._values.items()}
        return {**out, "valid_pixels": int(weights.sum())}

    def reset(self) -> None:
        for values in self._values.values():
            values.clear()
        self._weights.clear()
