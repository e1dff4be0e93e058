"""Ground-truth resizing of the point-map benchmarks (recons_eval's ``resize_image_depth_and_intrinsic``): image,
depth and intrinsics to a fixed width (518), height rounded to a multiple of 14."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fgq.models.preprocess import to_tensor


def scale_intrinsics(k: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K after resizing the image by (sx, sy): pixel centres at integer coordinates map as ``(c + 0.5)·s − 0.5``."""
    k = np.array(k, dtype=np.float64).copy()
    k[0] *= sx
    k[1] *= sy
    k[0, 2] += 0.5 * sx - 0.5
    k[1, 2] += 0.5 * sy - 0.5
    return k


def intrinsics_at(k: np.ndarray, nominal: tuple[int, int], actual: tuple[int, int]) -> np.ndarray:
    """A dataset's fixed K (given for its ``nominal`` (H, W)) for frames stored at ``actual`` (H, W)."""
    if tuple(actual) == tuple(nominal):
        return k
    return scale_intrinsics(k, actual[1] / nominal[1], actual[0] / nominal[0])


def nearest_resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV ``INTER_NEAREST`` (what the reference uses for depth): source index ``floor(dst · in/out)``,
    not pixel-centre sampling (PIL's NEAREST picks differently)."""
    in_h, in_w = array.shape[:2]
    cols = np.minimum(np.floor(np.arange(width) * (1.0 / (width / in_w))).astype(np.int64), in_w - 1)
    rows = np.minimum(np.floor(np.arange(height) * (1.0 / (height / in_h))).astype(np.int64), in_h - 1)
    return array[rows[:, None], cols[None, :]]


def resize_image_depth_intrinsics(image: Image.Image, depth: np.ndarray, intrinsics: np.ndarray,
                                  width: int = 518) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``image`` (PIL, already at the depth map's size), ``depth [H, W]``, ``K`` → image ``[3, H', W']`` in [0, 1],
    depth ``[H', W']`` (nearest) and ``K'``, with ``W' = width`` and ``H' = round(H·width/W/14)·14``.

    The image is resampled with LANCZOS when shrinking, BICUBIC when enlarging. ``K`` is scaled by one factor,
    ``max(W'/W, H'/H)``, for both axes about the pixel-centre convention (``c + 0.5``, scale, ``− 0.5``), as the
    reference does although the two axis ratios differ slightly."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be 2-D, got shape {depth.shape}")
    in_h, in_w = depth.shape
    if image.size != (in_w, in_h):
        raise ValueError(f"image size {image.size} differs from the depth map's {(in_w, in_h)}: resize it first")
    out_w, out_h = width, round(in_h * (width / in_w) / 14) * 14
    scale = max(out_w / in_w, out_h / in_h)
    image = image.resize((out_w, out_h), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    k = np.array(intrinsics, dtype=np.float64).copy()
    k[0, 2] += 0.5
    k[1, 2] += 0.5
    k[:2] *= scale
    k[0, 2] -= 0.5
    k[1, 2] -= 0.5
    return to_tensor(image), nearest_resize(depth, out_w, out_h), k
