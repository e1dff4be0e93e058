"""Checks shared by the point-map loader tests (7-Scenes, DTU, ETH3D): the loaded ground truth against the geometry
the fixture rendered, through the ground-truth resize (nearest depth, one-scale intrinsics)."""

from __future__ import annotations

import numpy as np
import torch

from fgq.data.resize import nearest_resize
from fgq.models.geometry import unproject_depth


def expected_intrinsics(k: np.ndarray, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """recons_eval's ground-truth intrinsics resize written out: one scale max(W'/W, H'/H) about the pixel-centre
    convention."""
    scale = max(out_hw[1] / in_hw[1], out_hw[0] / in_hw[0])
    out = np.array(k, dtype=np.float64).copy()
    out[0, 0], out[1, 1] = k[0, 0] * scale, k[1, 1] * scale
    out[0, 2], out[1, 2] = (k[0, 2] + 0.5) * scale - 0.5, (k[1, 2] + 0.5) * scale - 0.5
    return out


def resized(arrays: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest (OpenCV rule) resize of every ``[H, W, ...]`` array of a stack."""
    return np.stack([nearest_resize(a, out_hw[1], out_hw[0]) for a in arrays])


def assert_points(clip: dict, depth_full: np.ndarray, w2c: torch.Tensor, k_full: torch.Tensor,
                  expected_depth: np.ndarray, scale: float = 1.0, atol: float = 1e-4) -> None:
    """``clip``'s depth and validity are ``expected_depth``, and every valid world point is the rendered surface
    point of the full-resolution pixel ``n`` the nearest resize picked, moved sideways by exactly the known
    mismatch of the protocol: the resized K maps output pixel u' to source coordinate ``(u' + 0.5)/s − 0.5``
    (one scale s for both axes), not to ``n``, so in the camera frame the point is off by ``z · (Δu/fx, Δv/fy, 0)``.

    ``scale`` converts scene units to the dataset's (1000 for DTU's mm); ``atol`` is in the dataset's units (7-Scenes:
    1 mm, for its millimetre depth files)."""
    valid = clip["valid"]
    out_h, out_w = valid.shape[1:]
    in_h, in_w = depth_full.shape[1:]
    assert torch.equal(valid, torch.from_numpy(expected_depth > 1e-4))
    torch.testing.assert_close(clip["depth"], torch.from_numpy(expected_depth).float() * valid, rtol=1e-6, atol=0)
    true = unproject_depth(torch.from_numpy(depth_full).double(), w2c.double(), k_full.double()) * scale
    true = torch.from_numpy(resized(true.numpy(), (out_h, out_w)))
    ratio = max(out_w / in_w, out_h / in_h)
    shift = []
    for size_out, size_in in ((out_w, in_w), (out_h, in_h)):
        coords = np.arange(size_out)
        picked = np.minimum(np.floor(coords * (1.0 / (size_out / size_in))), size_in - 1)
        shift.append(torch.from_numpy((coords + 0.5) / ratio - 0.5 - picked))
    z = clip["depth"].double()
    offset = torch.stack((z * shift[0][None, None, :] / k_full[:, 0, 0, None, None].double(),
                          z * shift[1][None, :, None] / k_full[:, 1, 1, None, None].double(), torch.zeros_like(z)), -1)
    rot = w2c[:, :3, :3].double()
    in_camera = torch.einsum("sij,shwj->shwi", rot, clip["world_points"].double() - true)
    torch.testing.assert_close(in_camera[valid], offset[valid], rtol=0, atol=atol)
    # the mismatch is real but small: at most a few source pixels
    assert 0 < (offset[valid].norm(dim=-1) / z[valid]).max() < 0.02
