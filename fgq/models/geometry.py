"""Camera geometry shared by models, data and metrics (OpenCV axes: x right, y down, z forward).

Extrinsics are camera-from-world (w2c) ``[..., 3, 4]`` unless a name says ``c2w``. Quaternions are
scalar-last (x, y, z, w) as in VGGT's pose encoding.
"""

from __future__ import annotations

import torch


def quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (x, y, z, w) → ``[..., 3, 3]``; q need not be unit (PyTorch3D's ``2/|q|²`` form)."""
    i, j, k, r = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    m = torch.stack(
        (
            1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
            two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
            two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
        ),
        dim=-1,
    )
    return m.reshape((*q.shape[:-1], 3, 3))


def _sqrt_positive(x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    positive = x > 0
    out[positive] = torch.sqrt(x[positive])
    return out


def mat_to_quat(m: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3]`` rotation → ``[..., 4]`` (x, y, z, w) with w ≥ 0 (numerically stable branch choice)."""
    batch = m.shape[:-2]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.reshape((*batch, 9)).unbind(-1)
    q_abs = _sqrt_positive(torch.stack((
        1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22,
    ), dim=-1))
    # Each row is the quaternion (r, i, j, k) scaled by 2·q_abs[row]; pick the best-conditioned row.
    candidates = torch.stack((
        torch.stack((q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01), dim=-1),
        torch.stack((m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20), dim=-1),
        torch.stack((m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21), dim=-1),
        torch.stack((m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2), dim=-1),
    ), dim=-2)
    candidates = candidates / (2.0 * q_abs[..., None].clamp(min=0.1))
    best = q_abs.argmax(dim=-1)
    rijk = torch.gather(candidates, -2, best[..., None, None].expand((*batch, 1, 4))).squeeze(-2)
    xyzw = rijk[..., [1, 2, 3, 0]]
    return torch.where(xyzw[..., 3:] < 0, -xyzw, xyzw)


def extri_intri_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]
) -> torch.Tensor:
    """w2c ``[..., 3, 4]`` and ``K`` ``[..., 3, 3]`` → ``absT_quaR_FoV`` ``[..., 9]``."""
    height, width = image_hw
    t = extrinsics[..., :3, 3]
    quat = mat_to_quat(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((height / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsics[..., 0, 0])
    return torch.cat((t, quat, fov_h[..., None], fov_w[..., None]), dim=-1).float()


def pose_encoding_to_extri_intri(
    encoding: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., 9]`` → w2c ``[..., 3, 4]`` and ``K`` ``[..., 3, 3]`` for an image of ``image_hw``
    (principal point at the image centre)."""
    height, width = image_hw
    t, quat, fov_h, fov_w = encoding[..., :3], encoding[..., 3:7], encoding[..., 7], encoding[..., 8]
    extrinsics = torch.cat((quat_to_mat(quat), t[..., None]), dim=-1)
    fy = (height / 2.0) / torch.tan(fov_h / 2.0)
    fx = (width / 2.0) / torch.tan(fov_w / 2.0)
    intrinsics = torch.zeros((*encoding.shape[:-1], 3, 3), dtype=encoding.dtype, device=encoding.device)
    intrinsics[..., 0, 0], intrinsics[..., 1, 1] = fx, fy
    intrinsics[..., 0, 2], intrinsics[..., 1, 2] = width / 2, height / 2
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def closed_form_inverse_se3(se3: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms ``[..., 3, 4]`` or ``[..., 4, 4]`` as ``[Rᵀ | −Rᵀt]``, returned ``[..., 4, 4]``."""
    rot, t = se3[..., :3, :3], se3[..., :3, 3:]
    rot_t = rot.transpose(-1, -2)
    top = torch.cat((rot_t, -rot_t @ t), dim=-1)
    bottom = torch.zeros((*se3.shape[:-2], 1, 4), dtype=se3.dtype, device=se3.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat((top, bottom), dim=-2)


def to_homogeneous(se3: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 4]`` → ``[..., 4, 4]`` (a ``[..., 4, 4]`` input is returned unchanged)."""
    if se3.shape[-2] == 4:
        return se3
    bottom = torch.zeros((*se3.shape[:-2], 1, 4), dtype=se3.dtype, device=se3.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat((se3, bottom), dim=-2)


def depth_to_camera_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """z-depth ``[..., H, W]`` → camera-frame points ``[..., H, W, 3]``; pixel (u, v) at integer coordinates
    (no +0.5), as the official unprojection does."""
    height, width = depth.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(height, device=depth.device, dtype=depth.dtype),
        torch.arange(width, device=depth.device, dtype=depth.dtype),
        indexing="ij",
    )
    fx, fy = intrinsics[..., 0, 0, None, None], intrinsics[..., 1, 1, None, None]
    cx, cy = intrinsics[..., 0, 2, None, None], intrinsics[..., 1, 2, None, None]
    return torch.stack(((u - cx) * depth / fx, (v - cy) * depth / fy, depth), dim=-1)


def unproject_depth(depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """z-depth ``[..., H, W]`` (or ``[..., H, W, 1]``), w2c ``[..., 3, 4]``, ``K`` → world points ``[..., H, W, 3]``."""
    if depth.shape[-1] == 1 and depth.dim() >= 3 and depth.shape[-2] != 1:
        depth = depth[..., 0]
    cam = depth_to_camera_points(depth, intrinsics)
    c2w = closed_form_inverse_se3(extrinsics)
    rot, t = c2w[..., None, None, :3, :3], c2w[..., None, None, :3, 3]
    return (rot @ cam[..., None])[..., 0] + t


def world_to_camera(points: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """World points ``[..., H, W, 3]`` into the camera frame of w2c ``[..., 3, 4]``."""
    rot, t = extrinsics[..., None, None, :3, :3], extrinsics[..., None, None, :3, 3]
    return (rot @ points[..., None])[..., 0] + t


def project(points_cam: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-frame points ``[..., N, 3]`` → pixel coordinates ``[..., N, 2]``."""
    uvw = (intrinsics[..., None, :, :] @ points_cam[..., None])[..., 0]
    return uvw[..., :2] / uvw[..., 2:3]


def rotation_angle_deg(rot: torch.Tensor) -> torch.Tensor:
    """Angle of rotation matrices ``[..., 3, 3]`` in degrees."""
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def resize_maps(maps: torch.Tensor, size: tuple[int, int] | None, mode: str = "bilinear",
                channels_last: bool = False) -> torch.Tensor:
    """``[..., H, W]`` (or ``[..., H, W, C]``) resized to ``size``: ``bilinear`` is antialiased (the point-map
    protocols' torch resize), ``bicubic`` is not (OpenCV's INTER_CUBIC, used for KITTI depth). No-op when
    ``size`` is None or already the size."""
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"pred_resize={mode!r}: use bilinear or bicubic")
    hw = maps.shape[-3:-1] if channels_last else maps.shape[-2:]
    if size is None or tuple(size) == tuple(hw):
        return maps
    x = maps.movedim(-1, -3) if channels_last else maps[..., None, :, :]
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:]).float()
    out = torch.nn.functional.interpolate(flat, size=tuple(size), mode=mode, align_corners=False,
                                          antialias=mode == "bilinear")
    out = out.reshape(*lead, *out.shape[-3:])
    return out.movedim(-3, -1) if channels_last else out[..., 0, :, :]
