"""The official image preprocessing: images → ``[N, 3, H, W]`` float tensors in [0, 1], H and W multiples
of the patch size. ``crop`` and ``pad`` follow VGGT's ``load_and_preprocess_images``; ``eval_resize``
is the evaluation loader of the FGQ / recons_eval code (width 512 → 504 for pose and depth)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PATCH = 14


def open_rgb(source: str | Path | Image.Image) -> Image.Image:
    """RGB image; RGBA is composited on white as the official loader does."""
    try:
        img = source if isinstance(source, Image.Image) else Image.open(source)
        img.load()
    except (OSError, ValueError) as err:
        raise ValueError(f"image {source}: cannot be read ({err})") from None
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return img.convert("RGB")


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _round14(x: float) -> int:
    return round(x / PATCH) * PATCH


def _pad_to(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    dh, dw = height - t.shape[-2], width - t.shape[-1]
    return F.pad(t, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=1.0)


def preprocess_image(source: str | Path | Image.Image, mode: str = "crop", target: int = 518) -> torch.Tensor:
    """One image with VGGT's ``crop`` (width → target, height rounded to 14, centre-crop a taller height to
    target) or ``pad`` (longer side → target, pad with white to target × target) mode; bicubic resampling."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"preprocessing mode {mode!r}: use 'crop' or 'pad'")
    img = open_rgb(source)
    width, height = img.size
    if mode == "pad" and height > width:
        new_h, new_w = target, _round14(width * target / height)
    else:
        new_w, new_h = target, _round14(height * target / width)
    t = to_tensor(img.resize((new_w, new_h), Image.Resampling.BICUBIC))
    if mode == "crop" and new_h > target:
        top = (new_h - target) // 2
        t = t[:, top : top + target]
    if mode == "pad":
        t = _pad_to(t, target, target)
    return t


def load_and_preprocess_images(
    sources: Sequence[str | Path | Image.Image], mode: str = "crop", target: int = 518
) -> torch.Tensor:
    """Several images → ``[N, 3, H, W]``; mixed sizes are padded with white to the largest H and W."""
    if not sources:
        raise ValueError("load_and_preprocess_images: no images given")
    images = [preprocess_image(s, mode, target) for s in sources]
    height = max(t.shape[-2] for t in images)
    width = max(t.shape[-1] for t in images)
    return torch.stack([_pad_to(t, height, width) for t in images])


def eval_resize(
    source: str | Path | Image.Image, width: int = 512, resample: str = "bicubic", crop: bool = True
) -> torch.Tensor:
    """The evaluation loader: resize to ``width`` (height ``round(h·width/w/14)·14``; bicubic for VGGT,
    lanczos for π3), centre-crop a taller height to ``width`` (VGGT's loader), then an antialiased
    bilinear resize flooring both sides to multiples of 14 (512 → 504)."""
    filters = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
    if resample not in filters:
        raise ValueError(f"resample={resample!r}: use 'bicubic' or 'lanczos'")
    img = open_rgb(source)
    w0, h0 = img.size
    new_h = _round14(h0 * width / w0)
    t = to_tensor(img.resize((width, new_h), filters[resample]))
    if crop and new_h > width:
        top = (new_h - width) // 2
        t = t[:, top : top + width]
    return floor_to_patch_multiple(t)


def floor_to_patch_multiple(images: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """Antialiased bilinear resize of ``[..., 3, H, W]`` so that both sides are floored to multiples of
    ``patch`` (a no-op when they already are)."""
    height, width = images.shape[-2:]
    new_h, new_w = height // patch * patch, width // patch * patch
    if (new_h, new_w) == (height, width):
        return images
    flat = images.reshape(-1, *images.shape[-3:])
    out = F.interpolate(flat, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*images.shape[:-2], new_h, new_w)
