"""The one batch type every dataset yields.

A *clip* is S frames of one sequence/scene. Datasets return one clip per item as a dict of tensors
without the batch dimension; ``collate`` stacks clips into a batch:

| key            | shape (batched)        | meaning                                                        |
|----------------|------------------------|----------------------------------------------------------------|
| images         | [B, S, 3, H, W] float  | RGB in [0, 1], H and W multiples of 14                         |
| extrinsics     | [B, S, 3, 4] float     | camera-from-world (w2c), OpenCV axes                           |
| intrinsics     | [B, S, 3, 3] float     | pixels, for the H × W of ``images``                            |
| depth          | [B, S, H, W] float     | z-depth in the camera frame (0 where invalid)                  |
| valid          | [B, S, H, W] bool      | pixels with valid ground truth                                 |
| world_points   | [B, S, H, W, 3] float  | unprojected ground-truth depth in the world frame              |
| meta           | list of B dicts        | ``dataset``, ``sequence``, ``frames`` (ids), ``category`` ...   |
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TENSOR_KEYS = ("images", "extrinsics", "intrinsics", "depth", "valid", "world_points")
Clip = dict  # one item: the TENSOR_KEYS without the batch dimension, plus "meta": dict


def check_clip(clip: Clip, source: str = "clip") -> Clip:
    """Raise a clear error if a dataset item breaks the batch contract."""
    missing = [k for k in (*TENSOR_KEYS, "meta") if k not in clip]
    if missing:
        raise ValueError(f"{source}: missing keys {missing}")
    s, _, h, w = clip["images"].shape
    expected = {
        "images": (s, 3, h, w), "extrinsics": (s, 3, 4), "intrinsics": (s, 3, 3), "depth": (s, h, w),
        "valid": (s, h, w), "world_points": (s, h, w, 3),
    }
    for key, shape in expected.items():
        if tuple(clip[key].shape) != shape:
            raise ValueError(f"{source}: {key} has shape {tuple(clip[key].shape)}, expected {shape}")
    if h % 14 or w % 14:
        raise ValueError(f"{source}: image size {h}×{w} is not a multiple of 14")
    if clip["valid"].dtype != torch.bool:
        raise ValueError(f"{source}: valid must be a bool tensor")
    return clip


def collate(clips: Sequence[Clip]) -> dict:
    """Stack clips (same S, H, W) into a batch; ``meta`` becomes a list."""
    batch = {k: torch.stack([c[k] for c in clips]) for k in TENSOR_KEYS}
    batch["meta"] = [c["meta"] for c in clips]
    return batch
