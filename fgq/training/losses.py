"""Training losses for the tiny models, in the spirit of the official VGGT and π3 training.

Ground truth is first normalised as VGGT's training does: the world frame becomes camera 0 and the scene is
scaled so that the mean distance of the valid points to that camera is 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fgq.models import geometry


def normalize_scene(batch: dict) -> dict:
    """Camera-0-relative, unit-scale ground truth: ``extrinsics`` (w2c), ``depth``, ``world_points``."""
    ext = geometry.to_homogeneous(batch["extrinsics"])  # [B,S,4,4]
    first_inv = geometry.closed_form_inverse_se3(ext[:, :1])
    rel = ext @ first_inv  # w2c of each camera in camera 0's frame
    points = geometry.world_to_camera(batch["world_points"], ext[:, 0, None, :3])  # world → camera 0
    valid = batch["valid"]
    dist = points.norm(dim=-1)
    scale = (dist * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    scale = scale.clamp(min=1e-6)
    rel = rel.clone()
    rel[..., :3, 3] /= scale[:, None, None]
    return {
        "extrinsics": rel[..., :3, :],
        "intrinsics": batch["intrinsics"],
        "depth": batch["depth"] / scale[:, None, None, None],
        "world_points": points / scale[:, None, None, None, None],
        "valid": valid,
        "scale": scale,
    }


def _confidence_regression(error: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor, alpha: float) -> torch.Tensor:
    """VGGT's aleatoric loss: ``conf · error − α · log(conf)`` over valid pixels."""
    return ((conf * error - alpha * torch.log(conf)) * valid).sum() / valid.sum().clamp(min=1)


def _gradient_loss(diff: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Confidence-weighted L1 of the spatial gradients of the residual (sharp edges)."""
    total = diff.new_zeros(())
    for dim in (-2, -1):
        g = torch.diff(diff, dim=dim).abs()
        m = valid.narrow(dim, 1, valid.shape[dim] - 1) & valid.narrow(dim, 0, valid.shape[dim] - 1)
        c = conf.narrow(dim, 1, conf.shape[dim] - 1)
        total = total + (g * c * m).sum() / m.sum().clamp(min=1)
    return total


def _all_pairs(w2c: torch.Tensor) -> torch.Tensor:
    """``E_i · E_j⁻¹`` for every ordered pair: ``[B,S,3|4,4]`` → ``[B,S,S,4,4]``; invariant to the world frame."""
    ext = geometry.to_homogeneous(w2c)
    return ext[:, :, None] @ geometry.closed_form_inverse_se3(ext)[:, None, :]


def _pair_camera_loss(enc: torch.Tensor, rel_gt: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative pose of every frame pair (rotation: squared Frobenius distance, translation: L1; ``rel_gt`` from
    ``_all_pairs``) plus the FoV L1 against the ``target`` pose encoding: the predicted encodings may sit in any
    common world frame, as π3's camera loss allows."""
    unit = enc[..., 3:7] / enc[..., 3:7].norm(dim=-1, keepdim=True).clamp(min=1e-6)
    rel_p = _all_pairs(torch.cat((geometry.quat_to_mat(unit), enc[..., :3, None]), dim=-1))
    rotation = (rel_p[..., :3, :3] - rel_gt[..., :3, :3]).square().sum((-1, -2)).mean()
    translation = (rel_p[..., :3, 3] - rel_gt[..., :3, 3]).abs().mean()
    return rotation + translation + 0.5 * (enc[..., 7:] - target[..., 7:]).abs().mean()


def vggt_loss(pred: dict, gt: dict, weights: dict) -> dict[str, torch.Tensor]:
    """Camera: L1 on the pose encoding of every refinement iteration (later iterations weigh more, γ = 0.6);
    depth and points: confidence-weighted regression plus a gradient term.

    ``weights["camera_pairs"]`` (default 0, the official loss) adds a frame-pair camera term (``_pair_camera_loss``)
    over the same iterations. Not in the official training: it lets a small network learn per-frame orientations
    before it learns to express them relative to frame 0 (README, "The embedded default model")."""
    height, width = gt["depth"].shape[-2:]
    target = geometry.extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], (height, width))
    iterations = pred["pose_enc_list"]
    camera = gt["depth"].new_zeros(())
    pairs = gt["depth"].new_zeros(())
    rel_gt = _all_pairs(gt["extrinsics"]) if weights.get("camera_pairs", 0.0) > 0 else None
    for i, enc in enumerate(iterations):
        w = 0.6 ** (len(iterations) - 1 - i)
        err = (enc - target).abs()
        camera = camera + w * (err[..., :3].mean() + err[..., 3:7].mean() + 0.5 * err[..., 7:].mean())
        if rel_gt is not None:
            pairs = pairs + w * _pair_camera_loss(enc, rel_gt, target)
    valid = gt["valid"]
    alpha = weights.get("conf_alpha", 0.2)
    depth_diff = pred["depth"][..., 0] - gt["depth"]
    depth = _confidence_regression(depth_diff.abs(), pred["depth_conf"], valid, alpha)
    depth = depth + _gradient_loss(depth_diff, pred["depth_conf"], valid)
    point_diff = pred["world_points"] - gt["world_points"]
    points = _confidence_regression(point_diff.norm(dim=-1), pred["world_points_conf"], valid, alpha)
    points = points + _gradient_loss(point_diff.norm(dim=-1), pred["world_points_conf"], valid)
    total = (weights["camera"] * camera + weights.get("camera_pairs", 0.0) * pairs + weights["depth"] * depth
             + weights["points"] * points)
    return {"loss": total, "camera": camera, "camera_pairs": pairs, "depth": depth, "points": points}


def _optimal_scale(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per batch item, the s minimising Σ w‖s·pred − target‖² (π3 predicts up to scale).

    Not detached: with a detached s the L1 loss below has a non-zero gradient along the scaling direction
    (s is L2-optimal, not L1-optimal), so the prediction's scale drifts step after step (towards z ≈ 1e-7 in a
    5k-step run, where the outputs stopped depending on the input). Through s the loss is exactly invariant to
    the prediction's scale and the drift is gone."""
    num = (weight[..., None] * pred * target).flatten(1).sum(1)
    den = (weight[..., None] * pred * pred).flatten(1).sum(1).clamp(min=1e-8)
    return (num / den).clamp(min=1e-3)


def pi3_loss(pred: dict, gt: dict, weights: dict) -> dict[str, torch.Tensor]:
    """Scale-invariant local-point loss (L1 weighted by 1/z), relative camera loss over all frame pairs
    (rotation: Frobenius distance, translation: Huber after the optimal scale), confidence BCE on the
    pixels whose aligned error is small."""
    valid = gt["valid"]
    gt_local = geometry.depth_to_camera_points(gt["depth"], gt["intrinsics"])  # [B,S,H,W,3]
    inv_z = valid / gt["depth"].clamp(min=1e-6)
    s = _optimal_scale(pred["local_points"], gt_local, inv_z)
    err = (s[:, None, None, None, None] * pred["local_points"] - gt_local).abs().sum(-1) * inv_z
    points = (err * valid).sum() / valid.sum().clamp(min=1)
    # π3 predicts camera-to-world poses; the pose of j in the frame of i is w2c_i · c2w_j
    rel_p = _all_pairs(geometry.closed_form_inverse_se3(pred["camera_poses"]))
    rel_g = _all_pairs(gt["extrinsics"])
    rotation = (rel_p[..., :3, :3] - rel_g[..., :3, :3]).square().sum((-1, -2)).mean()
    translation = F.huber_loss(s[:, None, None, None] * rel_p[..., :3, 3], rel_g[..., :3, 3], delta=0.1)
    camera = rotation + translation
    target = (err < weights.get("conf_threshold", 0.05)).float()
    conf = (F.binary_cross_entropy_with_logits(pred["conf"][..., 0], target, reduction="none") * valid).sum()
    conf = conf / valid.sum().clamp(min=1)
    # The losses above are scale-invariant, so nothing fixes the scale of the prediction; anchor it softly at the
    # normalised ground truth's scale (mean depth of order 1) so it cannot wander into float32 trouble.
    mean_z = (pred["local_points"][..., 2] * valid).sum() / valid.sum().clamp(min=1)
    scale = torch.log(mean_z.clamp(min=1e-8)).square()
    total = (weights["points"] * points + weights["camera"] * camera + weights.get("conf", 0.05) * conf
             + weights.get("scale", 0.1) * scale)
    return {"loss": total, "camera": camera, "points": points, "conf": conf, "scale": scale}
