"""Evaluation metrics as pure functions: camera pose, depth, point map (as the FGQ / recons_eval evaluation code)."""

from fgq.metrics.depth import (
    DepthAccumulator,
    align_depth,
    depth_errors,
    depth_mask,
    evaluate_depth,
    irls_scale,
    l1_scale_shift,
    median_scale,
)
from fgq.metrics.pointmap import (
    IcpResult,
    PointMapAccumulator,
    apply_similarity,
    estimate_normals,
    evaluate_pointmap,
    icp_point_to_point,
    reconstruction_metrics,
    umeyama,
)
from fgq.metrics.pose import (
    PoseAccumulator,
    pose_auc,
    pose_metrics,
    relative_pose_errors,
    relative_poses,
    rotation_error_deg,
    translation_error_deg,
)

__all__ = [
    "DepthAccumulator",
    "IcpResult",
    "PointMapAccumulator",
    "PoseAccumulator",
    "align_depth",
    "apply_similarity",
    "depth_errors",
    "depth_mask",
    "estimate_normals",
    "evaluate_depth",
    "evaluate_pointmap",
    "icp_point_to_point",
    "irls_scale",
    "l1_scale_shift",
    "median_scale",
    "pose_auc",
    "pose_metrics",
    "reconstruction_metrics",
    "relative_pose_errors",
    "relative_poses",
    "rotation_error_deg",
    "translation_error_deg",
    "umeyama",
]
