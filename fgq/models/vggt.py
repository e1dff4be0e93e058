"""VGGT: aggregator + camera head + DPT depth and point heads, with the official parameter names.

The same class builds VGGT-1B (``fgq/conf/model/vggt.yaml``) and the tiny models (``vggt_tiny.yaml``).
The official track head is not implemented (not part of FGQ); its checkpoint keys are recognised and
skipped by the loader.
"""

from __future__ import annotations

import torch
from torch import nn

from fgq.models import geometry
from fgq.models.adapter import VGGTView
from fgq.models.aggregator import Aggregator
from fgq.models.camera_head import CameraHead
from fgq.models.dpt_head import DPTHead
from fgq.models.layers import fp32_heads


class VGGT(nn.Module):
    family = "vggt"
    tasks = ("camera", "depth", "points")
    skipped_checkpoint_prefixes = ("track_head.",)

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        aggregator: dict | None = None,
        camera_head: dict | None = None,
        depth_head: dict | None = None,
        point_head: dict | None = None,
    ) -> None:
        super().__init__()
        self.aggregator = Aggregator(img_size, patch_size, embed_dim, **(aggregator or {}))
        dim = 2 * embed_dim
        cam = dict(camera_head or {})
        self.camera_head = CameraHead(dim, **cam) if cam.pop("enabled", True) else None
        dep = {"output_dim": 2, "activation": "exp", "conf_activation": "expp1", **(depth_head or {})}
        self.depth_head = DPTHead(dim, patch_size, **dep) if dep.pop("enabled", True) else None
        pts = {"output_dim": 4, "activation": "inv_log", "conf_activation": "expp1", **(point_head or {})}
        self.point_head = DPTHead(dim, patch_size, **pts) if pts.pop("enabled", True) else None
        depth = self.aggregator.depth
        for name, head in (("depth_head", self.depth_head), ("point_head", self.point_head)):
            if head is not None and any(not -depth <= i < depth for i in head.intermediate_layer_idx):
                raise ValueError(
                    f"{name}.intermediate_layer_idx={head.intermediate_layer_idx} out of range for "
                    f"aggregator depth {depth}"
                )

    @property
    def patch_start_idx(self) -> int:
        """Tokens per frame before the patches (camera + registers): the token layout lives on the aggregator."""
        return self.aggregator.patch_start_idx

    @property
    def patch_size(self) -> int:
        return self.aggregator.patch_size

    def layers_needed(self) -> set[int]:
        depth = self.aggregator.depth
        keep = {depth - 1}
        for head in (self.depth_head, self.point_head):
            if head is not None:
                keep.update(i % depth for i in head.intermediate_layer_idx)
        return keep

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: ``[S,3,H,W]`` or ``[B,S,3,H,W]`` in [0, 1], H and W multiples of the patch size."""
        if images.dim() == 4:
            images = images.unsqueeze(0)
        height, width = images.shape[-2:]
        layers = self.aggregator(images, keep=self.layers_needed())
        start = self.aggregator.patch_start_idx
        out: dict[str, torch.Tensor] = {}
        with fp32_heads(images.device):
            if self.camera_head is not None:
                pose_list = self.camera_head(layers[-1])
                out["pose_enc"] = pose_list[-1]
                out["pose_enc_list"] = pose_list
            if self.depth_head is not None:
                depth, conf = self.depth_head(layers, (height, width), start)
                out["depth"], out["depth_conf"] = depth, conf
            if self.point_head is not None:
                points, conf = self.point_head(layers, (height, width), start)
                out["world_points"], out["world_points_conf"] = points, conf
        if not self.training:
            out["images"] = images
        return out

    def geometry(self, predictions: dict[str, torch.Tensor], points_source: str = "depth_camera",
                 size: tuple[int, int] | None = None, resize: str = "bilinear") -> dict:
        """Predictions in the evaluation's common form: w2c ``extrinsics [B,S,3,4]``, ``depth [B,S,H,W]``,
        ``points [B,S,H,W,3]`` (world frame of the model). ``size``: the ground truth's (H, W) when it differs
        from the model's output; dense outputs are then resized to it with ``resize`` (``geometry.resize_maps``).
        ``depth_camera`` (the FGQ protocol): depth unprojected with the predicted cameras — at the ground
        truth's size, the depth resized to it and the cameras decoded for it, as the FGQ evaluation does;
        ``head``: the point head's ``world_points`` (resized)."""
        if points_source not in ("depth_camera", "head"):
            raise ValueError(f"points_source={points_source!r}: use depth_camera or head")
        depth = geometry.resize_maps(predictions["depth"][..., 0], size, resize)
        extrinsics, intrinsics = geometry.pose_encoding_to_extri_intri(predictions["pose_enc"], depth.shape[-2:])
        if points_source == "depth_camera":
            points = geometry.unproject_depth(depth, extrinsics, intrinsics)
        else:
            points = geometry.resize_maps(predictions["world_points"], size, resize, channels_last=True)
        return {"extrinsics": extrinsics, "depth": depth, "points": points}

    def quant_view(self) -> VGGTView:
        return VGGTView(self)
