"""The quantization view of a model: the one interface quantizers, calibration and the Fisher talk to.

Hidden states between calibrated blocks are always ``[B, S, P, C]`` (batch, frames, tokens per frame,
width) with positions ``[B, S, P, 2]``; each block reshapes to what it attends over (a frame block sees
``[B·S, P, C]``, a global block ``[B, S·P, C]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fgq.models import geometry

# Short name → path inside a block, in true-sequential order.
LINEAR_PATHS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


@dataclass
class BlockRef:
    """One calibrated transformer block."""

    index: int  # position in execution order
    name: str  # module path in the model, e.g. "aggregator.frame_blocks.0"
    kind: str  # "frame" | "global"
    module: nn.Module
    linears: dict[str, nn.Linear] = field(default_factory=dict)  # qkv, proj, fc1, fc2
    norms: dict[str, nn.LayerNorm] = field(default_factory=dict)  # the norm feeding qkv and fc1

    @staticmethod
    def of(index: int, name: str, kind: str, block: nn.Module) -> BlockRef:
        linears = {short: block.get_submodule(path) for short, path in LINEAR_PATHS.items()}
        return BlockRef(index, name, kind, block, linears, {"qkv": block.norm1, "fc1": block.norm2})


class QuantView:
    """Family-independent access to a VGGT or π3 model for quantization."""

    tasks = ("camera", "depth", "points")

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.blocks: list[BlockRef] = []

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything before the first calibrated block: images ``[B, S, 3, H, W]`` → (x, pos)."""
        raise NotImplementedError

    def run_block(self, ref: BlockRef, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def task_outputs(self, predictions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensor each task's Fisher and metrics read: camera, depth, points."""
        raise NotImplementedError

    def geometry(self, predictions: dict[str, torch.Tensor], points_source: str = "depth_camera",
                 size: tuple[int, int] | None = None, resize: str = "bilinear") -> dict:
        """Predictions in the evaluation's common form: w2c ``extrinsics [B,S,3,4]``, ``depth [B,S,H,W]``,
        ``points [B,S,H,W,3]`` (world frame of the model). ``size``: the ground truth's (H, W) when it differs
        from the model's output; dense outputs are then resized to it with ``resize`` (see ``resize_maps``)."""
        raise NotImplementedError

    def linear_names(self) -> dict[str, nn.Linear]:
        """All calibrated linears by full module name, in execution order."""
        return {f"{ref.name}.{LINEAR_PATHS[short]}": lin for ref in self.blocks for short, lin in ref.linears.items()}


class VGGTView(QuantView):
    """VGGT: the aggregator's blocks in execution order F0, G0, F1, G1, …"""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        agg = model.aggregator
        self.blocks = [
            BlockRef.of(i, f"aggregator.{kind}_blocks.{j}", kind, agg.block(kind, j))
            for i, (kind, j) in enumerate(agg.schedule())
        ]
        self._schedule = agg.schedule()

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.aggregator.embed(images)

    def run_block(self, ref: BlockRef, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        kind, j = self._schedule[ref.index]
        return self.model.aggregator.run_block(kind, j, x, pos)

    def task_outputs(self, predictions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "camera": predictions["pose_enc"],
            "depth": predictions["depth"],
            "points": predictions["world_points"],
        }

    def geometry(self, predictions: dict[str, torch.Tensor], points_source: str = "depth_camera",
                 size: tuple[int, int] | None = None, resize: str = "bilinear") -> dict:
        """``depth_camera`` (the FGQ protocol): depth unprojected with the predicted cameras — at the ground
        truth's size, the depth resized to it and the cameras decoded for it, as the FGQ evaluation does;
        ``head``: the point head's ``world_points`` (resized)."""
        if points_source not in ("depth_camera", "head"):
            raise ValueError(f"points_source={points_source!r}: use depth_camera or head")
        depth = resize_maps(predictions["depth"][..., 0], size, resize)
        extrinsics, intrinsics = geometry.pose_encoding_to_extri_intri(predictions["pose_enc"], depth.shape[-2:])
        if points_source == "depth_camera":
            points = geometry.unproject_depth(depth, extrinsics, intrinsics)
        else:
            points = resize_maps(predictions["world_points"], size, resize, channels_last=True)
        return {"extrinsics": extrinsics, "depth": depth, "points": points}


class Pi3View(QuantView):
    """π3: the decoder's blocks 0..N−1 (even = frame, odd = global)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.blocks = [
            BlockRef.of(i, f"decoder.{i}", model.block_kind(i), block) for i, block in enumerate(model.decoder)
        ]

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.embed(images)

    def run_block(self, ref: BlockRef, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.model.run_block(ref.index, x, pos)

    def task_outputs(self, predictions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "camera": predictions["camera_poses"],
            "depth": predictions["local_points"][..., 2:3],
            "points": predictions["points"],
        }

    def geometry(self, predictions: dict[str, torch.Tensor], points_source: str = "depth_camera",
                 size: tuple[int, int] | None = None, resize: str = "bilinear") -> dict:
        """π3 predicts camera-to-world poses and its global point map directly (``points_source`` is ignored);
        depth is the z of its local points. Dense outputs are resized to ``size`` when given."""
        w2c = geometry.closed_form_inverse_se3(predictions["camera_poses"])[..., :3, :]
        return {"extrinsics": w2c, "depth": resize_maps(predictions["local_points"][..., 2], size, resize),
                "points": resize_maps(predictions["points"], size, resize, channels_last=True)}


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
