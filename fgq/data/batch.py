"""The one batch type every dataset yields.

A *clip* is S frames of one sequence/scene. Datasets return one clip per item as a dict of tensors
without the batch dimension; ``collate`` stacks clips into a batch:

| key            | shape (batched)          | meaning                                                            |
|----------------|--------------------------|--------------------------------------------------------------------|
| images         | [B, S, 3, H, W] float    | RGB in [0, 1], H and W multiples of 14 (required)                  |
| meta           | list of B dicts          | ``dataset``, ``sequence``, ``frames`` (ids), ``category`` (required) |
| extrinsics     | [B, S, 3, 4] float       | camera-from-world (w2c), OpenCV axes                               |
| intrinsics     | [B, S, 3, 3] float       | pixels, for the Hd × Wd of ``depth`` (= H × W of ``images`` if no depth) |
| depth          | [B, S, Hd, Wd] float     | z-depth in the camera frame (0 where invalid)                      |
| valid          | [B, S, Hd, Wd] bool      | pixels with valid ground truth                                     |
| world_points   | [B, S, Hd, Wd, 3] float  | unprojected ground-truth depth in the world frame                  |

Ground truth is optional, by group: cameras (``extrinsics`` + ``intrinsics``), depth (``depth`` + ``valid``) and
``world_points`` (needs depth). Calibration clips carry none; a pose benchmark carries cameras only. The depth
resolution Hd × Wd is the ground truth's own and may differ from the images' (KITTI evaluates at the full
annotated resolution); the evaluator resizes predictions to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TENSOR_KEYS = ("images", "extrinsics", "intrinsics", "depth", "valid", "world_points")
GROUPS = (("extrinsics", "intrinsics"), ("depth", "valid"))
Clip = dict  # one item: "images", "meta" and any optional groups, without the batch dimension


def check_clip(clip: Clip, source: str = "clip") -> Clip:
    """Raise a clear error if a dataset item breaks the batch contract."""
    missing = [k for k in ("images", "meta") if k not in clip]
    if missing:
        raise ValueError(f"{source}: missing keys {missing}")
    for group in GROUPS:
        present = [k for k in group if k in clip]
        if present and len(present) != len(group):
            raise ValueError(f"{source}: {present[0]} given without {next(k for k in group if k not in clip)}")
    if "world_points" in clip and "depth" not in clip:
        raise ValueError(f"{source}: world_points given without depth")
    s, _, h, w = clip["images"].shape
    hd, wd = clip["depth"].shape[-2:] if "depth" in clip else (h, w)
    expected = {
        "images": (s, 3, h, w), "extrinsics": (s, 3, 4), "intrinsics": (s, 3, 3), "depth": (s, hd, wd),
        "valid": (s, hd, wd), "world_points": (s, hd, wd, 3),
    }
    for key, shape in expected.items():
        if key in clip and tuple(clip[key].shape) != shape:
            raise ValueError(f"{source}: {key} has shape {tuple(clip[key].shape)}, expected {shape}")
    if h % 14 or w % 14:
        raise ValueError(f"{source}: image size {h}×{w} is not a multiple of 14")
    if "valid" in clip and clip["valid"].dtype != torch.bool:
        raise ValueError(f"{source}: valid must be a bool tensor")
    return clip


def collate(clips: Sequence[Clip]) -> dict:
    """Stack clips (same S, H, W) into a batch; ``meta`` becomes a list. All clips must carry the same keys."""
    keys = [k for k in TENSOR_KEYS if k in clips[0]]
    for clip in clips[1:]:
        if [k for k in TENSOR_KEYS if k in clip] != keys:
            raise ValueError(f"collate: clips carry different ground truth ({keys} vs "
                             f"{[k for k in TENSOR_KEYS if k in clip]})")
    batch = {k: torch.stack([c[k] for c in clips]) for k in keys}
    batch["meta"] = [c["meta"] for c in clips]
    return batch


def make_clip(images: torch.Tensor, meta: dict, *, extrinsics: torch.Tensor | None = None,
              intrinsics: torch.Tensor | None = None, depth: torch.Tensor | None = None,
              valid: torch.Tensor | None = None, world_points: bool = True) -> Clip:
    """A checked clip from its parts. With depth and cameras, ``world_points`` are unprojected from the depth
    (``valid`` defaults to ``depth > 0``; invalid pixels get depth 0)."""
    from fgq.models.geometry import unproject_depth

    clip: Clip = {"images": images.float(), "meta": meta}
    if extrinsics is not None or intrinsics is not None:
        clip["extrinsics"], clip["intrinsics"] = extrinsics.float(), intrinsics.float()
    if depth is not None:
        valid = depth > 0 if valid is None else valid.bool()
        clip["depth"], clip["valid"] = torch.where(valid, depth.float(), 0.0), valid
        if world_points and "extrinsics" in clip:
            clip["world_points"] = unproject_depth(clip["depth"], clip["extrinsics"], clip["intrinsics"])
    return check_clip(clip, f"{meta.get('dataset', 'clip')} {meta.get('sequence', '')}".strip())
