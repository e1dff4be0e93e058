"""Relative camera-pose errors, AUC and RRA/RTA, as the official FGQ evaluation code computes them (recons_eval's
pair order as an option).

For the S frames of one sequence every pair ``i1 < i2`` is scored (``torch.combinations`` order). Errors are in
degrees and computed in the inputs' dtype: the reference runs in float32 (its float64 autocast is a no-op), so pass
float32 poses to reproduce its numbers bit for bit.

AUC@T is returned as a **fraction** in [0, 1] (the FGQ paper prints e.g. 0.9731; the reference code prints ×100);
RRA@τ and RTA@τ are **percentages**. Dataset-level averaging differs per dataset in FGQ: Co3Dv2 is averaged per
category (pool each category's pairs, score it, unweighted mean over the sorted categories), RealEstate10K is pooled
over all pairs — see ``PoseAccumulator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from fgq.models.geometry import closed_form_inverse_se3, mat_to_quat, to_homogeneous

Convention = Literal["fgq", "recons_eval"]
Averaging = Literal["pooled", "per_category"]

DEFAULT_THRESHOLDS: tuple[int, ...] = (30, 15, 5, 3)
_EPS = 1e-15
_NON_FINITE_ERROR = 1e6  # radians; what the reference substitutes for NaN/inf translation errors


def pair_indices(num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(i1, i2)`` of all pairs ``i1 < i2`` in lexicographic order: (0,1), (0,2), …, (S−2, S−1)."""
    i1, i2 = torch.combinations(torch.arange(num_frames), 2, with_replacement=False).unbind(-1)
    return i1, i2


def relative_poses(w2c: torch.Tensor, convention: Convention = "fgq") -> torch.Tensor:
    """Relative transforms ``[P, 4, 4]`` of all pairs of w2c extrinsics ``[S, 3|4, 4]``.

    ``"fgq"`` (FGQ and the fixed official VGGT evaluation): ``E_i1 · E_i2⁻¹``; ``"recons_eval"`` (π³ and
    recons_eval): ``E_i2 · E_i1⁻¹``.
    """
    if w2c.dim() != 3 or w2c.shape[-1] != 4 or w2c.shape[-2] not in (3, 4):
        raise ValueError(f"extrinsics must be [S, 3, 4] or [S, 4, 4], got {tuple(w2c.shape)}")
    poses = to_homogeneous(w2c)
    i1, i2 = pair_indices(poses.shape[0])
    if convention == "fgq":
        return poses[i1] @ closed_form_inverse_se3(poses[i2])
    if convention == "recons_eval":
        return poses[i2] @ closed_form_inverse_se3(poses[i1])
    raise ValueError(f"unknown pose convention {convention!r} (expected 'fgq' or 'recons_eval')")


def rotation_error_deg(rot_pred: torch.Tensor, rot_gt: torch.Tensor) -> torch.Tensor:
    """Angle of ``R_gtᵀ R_pred`` in degrees via quaternions: ``arccos(1 − 2·clamp(1 − (q_pred·q_gt)², 1e-15))``.

    The clamp makes identical rotations score ≈ 6e-8 rad in float64 (exactly 0 in float32), as in the reference.
    """
    q_pred, q_gt = mat_to_quat(rot_pred), mat_to_quat(rot_gt)
    loss = (1 - (q_pred * q_gt).sum(dim=-1) ** 2).clamp(min=_EPS)
    return torch.arccos(1 - 2 * loss) * 180 / math.pi


def translation_error_deg(t_pred: torch.Tensor, t_gt: torch.Tensor) -> torch.Tensor:
    """Angle between the translation *lines* in degrees, in [0°, 90°] (the squared cosine ignores the sign)."""
    t_pred = t_pred / (t_pred.norm(dim=-1, keepdim=True) + _EPS)
    t_gt = t_gt / (t_gt.norm(dim=-1, keepdim=True) + _EPS)
    loss = (1.0 - (t_pred * t_gt).sum(dim=-1) ** 2).clamp(min=_EPS)
    err = torch.acos(torch.sqrt(1 - loss))
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, _NON_FINITE_ERROR))
    err = err * 180.0 / math.pi
    # The reference's sign-ambiguity fold; a no-op after the squared cosine, kept so degenerate inputs match.
    return torch.minimum(err, (180 - err).abs())


def relative_pose_errors(
    pred_w2c: torch.Tensor, gt_w2c: torch.Tensor, convention: Convention = "fgq"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation-direction errors (degrees, ``[S·(S−1)/2]`` each) of all frame pairs.

    ``pred_w2c`` and ``gt_w2c``: camera-from-world extrinsics ``[S, 3, 4]`` or ``[S, 4, 4]`` of one sequence.
    """
    if pred_w2c.shape[0] != gt_w2c.shape[0]:
        raise ValueError(f"prediction has {pred_w2c.shape[0]} frames, ground truth {gt_w2c.shape[0]}")
    dtype = torch.promote_types(pred_w2c.dtype, gt_w2c.dtype)
    rel_pred = relative_poses(pred_w2c.to(dtype), convention)
    rel_gt = relative_poses(gt_w2c.to(dtype), convention)
    rot_err = rotation_error_deg(rel_pred[:, :3, :3], rel_gt[:, :3, :3])
    trans_err = translation_error_deg(rel_pred[:, :3, 3], rel_gt[:, :3, 3])
    return rot_err, trans_err


def pose_auc(rot_err: np.ndarray, trans_err: np.ndarray, max_threshold: int) -> float:
    """AUC@T of ``max(err_R, err_t)`` as a fraction: mean of the cumulative normalised histogram over unit bins.

    Bins are numpy's ``[0,1), [1,2), …, [T−1, T]`` (the last closed), so this equals
    ``(1/T)·Σ_{k=1..T} #(e < k)/N`` except that ``e == T`` counts in the ``k = T`` term.
    """
    if isinstance(max_threshold, bool) or not isinstance(max_threshold, (int, np.integer)) or max_threshold < 1:
        raise ValueError(f"AUC threshold must be a positive integer (unit-degree bins), got {max_threshold!r}")
    errors = np.maximum(np.asarray(rot_err), np.asarray(trans_err))
    if errors.size == 0:
        raise ValueError("no pose pairs to score")
    histogram, _ = np.histogram(errors, bins=np.arange(max_threshold + 1))
    return float(np.mean(np.cumsum(histogram.astype(float) / float(errors.size))))


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    # Keep the dtype: binning float32 errors must see the same values the reference bins.
    return x.detach().cpu().numpy().reshape(-1) if isinstance(x, torch.Tensor) else np.asarray(x).reshape(-1)


def pose_metrics(
    rot_err: np.ndarray | torch.Tensor,
    trans_err: np.ndarray | torch.Tensor,
    thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Pooled metrics of per-pair errors: ``auc@T`` (fraction), ``rra@T`` and ``rta@T`` (percent) for each T."""
    rot, trans = _to_numpy(rot_err), _to_numpy(trans_err)
    out: dict[str, float] = {}
    for t in thresholds:
        out[f"auc@{t}"] = pose_auc(rot, trans, t)
    for t in thresholds:
        out[f"rra@{t}"] = float(np.mean(rot < t) * 100.0)
        out[f"rta@{t}"] = float(np.mean(trans < t) * 100.0)
    return out


class PoseAccumulator:
    """Collects per-pair errors of many sequences (each with a category) and scores the dataset.

    ``averaging="per_category"`` (FGQ on Co3Dv2): pool each category's pairs, score it, then take the unweighted
    mean of every metric over the sorted categories. ``averaging="pooled"`` (RealEstate10K): score all pairs
    together; categories are then ignored. There is deliberately no default: using the wrong one silently changes
    the numbers.
    """

    def __init__(
        self,
        *,
        averaging: Averaging,
        thresholds: Sequence[int] = DEFAULT_THRESHOLDS,
        convention: Convention = "fgq",
    ) -> None:
        if averaging not in ("pooled", "per_category"):
            raise ValueError(f"unknown averaging {averaging!r} (expected 'pooled' or 'per_category')")
        self.averaging = averaging
        self.thresholds = tuple(thresholds)
        self.convention = convention
        self._rot: dict[str, list[np.ndarray]] = {}
        self._trans: dict[str, list[np.ndarray]] = {}

    def add(self, pred_w2c: torch.Tensor, gt_w2c: torch.Tensor, category: str = "") -> None:
        """Score all frame pairs of one sequence (w2c ``[S, 3|4, 4]``) and file them under ``category``."""
        self.add_errors(*relative_pose_errors(pred_w2c, gt_w2c, self.convention), category=category)

    def add_errors(
        self, rot_err: np.ndarray | torch.Tensor, trans_err: np.ndarray | torch.Tensor, category: str = ""
    ) -> None:
        """File precomputed per-pair errors (degrees) under ``category``."""
        rot, trans = _to_numpy(rot_err), _to_numpy(trans_err)
        if rot.shape != trans.shape:
            raise ValueError(f"{rot.size} rotation errors but {trans.size} translation errors")
        self._rot.setdefault(category, []).append(rot)
        self._trans.setdefault(category, []).append(trans)

    @property
    def num_pairs(self) -> int:
        return sum(r.size for parts in self._rot.values() for r in parts)

    def category_metrics(self) -> dict[str, dict[str, float]]:
        """Metrics of each category's pooled pairs, categories sorted."""
        return {
            cat: pose_metrics(np.concatenate(self._rot[cat]), np.concatenate(self._trans[cat]), self.thresholds)
            for cat in sorted(self._rot)
        }

    def compute(self) -> dict[str, float]:
        """Dataset metrics: ``auc@T`` (fraction), ``rra@T``, ``rta@T`` (percent) for every threshold."""
        if not self._rot:
            raise ValueError("PoseAccumulator is empty")
        if self.averaging == "pooled":
            rot = np.concatenate([r for cat in sorted(self._rot) for r in self._rot[cat]])
            trans = np.concatenate([t for cat in sorted(self._trans) for t in self._trans[cat]])
            return pose_metrics(rot, trans, self.thresholds)
        per_cat = list(self.category_metrics().values())
        return {key: float(np.mean([m[key] for m in per_cat])) for key in per_cat[0]}

    def reset(self) -> None:
        self._rot.clear()
        self._trans.clear()
