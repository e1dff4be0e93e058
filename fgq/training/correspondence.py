"""Cross-view attention supervision for training the tiny models.

VGGT's official training teaches correspondence with a tracking head and loss; the tiny models have no
tracker, and without any correspondence signal they settle on predicting the same pose for every frame (their
point maps stay in each frame's own camera coordinates). This loss supervises the global-attention logits of
chosen heads directly: a patch of frame i (i ≥ 1) should attend most to the frame-0 patch that sees the same
surface point. Ground truth comes from the exact depth and cameras of the synthetic scenes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgq.models import geometry


def patch_matches(gt: dict, patch: int, tolerance: float = 0.03) -> tuple[torch.Tensor, torch.Tensor]:
    """For the centre pixel of every patch of frames 1..S−1: the index of the frame-0 patch that sees the same
    surface point, and whether it is seen there (inside the image, not occluded: depth within ``tolerance``).

    ``gt``: normalised ground truth (:func:`fgq.training.losses.normalize_scene`). Returns ``[B, S−1, h·w]`` each."""
    depth, points, ext, k = gt["depth"], gt["world_points"], gt["extrinsics"], gt["intrinsics"]
    height, width = depth.shape[-2:]
    h, w = height // patch, width // patch
    rows = torch.arange(h, device=depth.device) * patch + patch // 2
    cols = torch.arange(w, device=depth.device) * patch + patch // 2
    centres = points[:, 1:][:, :, rows][:, :, :, cols]  # [B, S−1, h, w, 3]
    cam = geometry.world_to_camera(centres, ext[:, :1]).flatten(2, 3)  # into frame 0: [B, S−1, h·w, 3]
    uv = cam[..., :2] / cam[..., 2:].clamp(min=1e-6)
    k0 = k[:, :1, None]
    u = uv[..., 0] * k0[..., 0, 0] + k0[..., 0, 2]
    v = uv[..., 1] * k0[..., 1, 1] + k0[..., 1, 2]
    inside = (cam[..., 2] > 1e-6) & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
    ui, vi = u.round().clamp(0, width - 1).long(), v.round().clamp(0, height - 1).long()
    seen = depth[:, 0].flatten(1).gather(1, (vi * width + ui).flatten(1)).view_as(ui)
    visible = inside & gt["valid"][:, 1:][:, :, rows][:, :, :, cols].flatten(2) & (
        (cam[..., 2] - seen).abs() < tolerance * seen)
    return (vi // patch) * w + ui // patch, visible


class AttentionMatchLoss:
    """Hooks the given global attention modules; after a forward pass, :meth:`loss` is the cross entropy of the
    first ``heads`` heads' logits of frame-i patches with the true frame-0 matches.

    ``keys="first"``: the softmax runs over frame 0's patches only. ``keys="all"``: over every frame's patches,
    so a head must also tell frame 0 apart from the others (VGGT's reference frame is marked only by its own
    camera and register tokens)."""

    def __init__(self, attentions: list[nn.Module], patch_start: int, heads: int = 1, keys: str = "first") -> None:
        if keys not in ("first", "all"):
            raise ValueError(f"train.loss.match_keys={keys!r}: use 'first' or 'all'")
        self.start, self.num_heads, self.keys = patch_start, heads, keys
        self.inputs: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        self.handles = [a.register_forward_pre_hook(self._keep) for a in attentions]

    def _keep(self, module: nn.Module, args: tuple) -> None:
        if module.training:  # evaluation passes are not supervised
            self.inputs.append((module, args[0], args[1]))

    def loss(self, target: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        s, start = target.shape[1] + 1, self.start
        total = target.new_zeros((), dtype=torch.float32)
        for module, x, pos in self.inputs:
            p = x.shape[1] // s  # tokens per frame
            q, k, _ = module.heads(x, pos)  # [B, heads, S·P, D]
            q = q[:, : self.num_heads].unflatten(2, (s, p))[:, :, 1:, start:]  # frames 1.., patches
            k = k[:, : self.num_heads].unflatten(2, (s, p))[:, :, :, start:]  # every frame's patches
            k = k[:, :, 0] if self.keys == "first" else k.flatten(2, 3)  # frame 0's come first either way
            logits = torch.einsum("bhsqd,bhkd->bhsqk", q, k) * q.shape[-1] ** -0.5
            ce = F.cross_entropy(logits.flatten(0, -2), target[:, None].expand(-1, q.shape[1], -1, -1).flatten(),
                                 reduction="none")
            mask = visible[:, None].expand(-1, q.shape[1], -1, -1).flatten()
            total = total + (ce * mask).sum() / mask.sum().clamp(min=1)
        self.inputs.clear()
        return total / max(1, len(self.handles))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
