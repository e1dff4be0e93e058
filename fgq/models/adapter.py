"""The quantization view of a model: the one interface quantizers, calibration and the Fisher talk to.

Quantized blocks that rebuild a block's computation use its parts from here (``attention_core``,
``pre_norm_residual``: the same functions ``fgq.models.layers.Block`` runs), so they cannot drift from it.
Evaluation geometry is the model's own (``model.geometry``), not part of this view.

Hidden states between calibrated blocks are always ``[B, S, P, C]`` (batch, frames, tokens per frame,
width) with positions ``[B, S, P, 2]``; each block reshapes to what it attends over (a frame block sees
``[B·S, P, C]``, a global block ``[B, S·P, C]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fgq.models.layers import attention_core, pre_norm_residual

__all__ = ["LINEAR_PATHS", "BlockRef", "Pi3View", "QuantView", "VGGTView", "attention_core", "pre_norm_residual"]

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

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype the block's parameters are stored in (a quantizer that computes in fp32 casts back to it)."""
        return next(p.dtype for p in self.module.parameters() if p.is_floating_point())

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

    @property
    def channels(self) -> int:
        """Width ``C`` of the hidden states between blocks (the Fisher's last axis)."""
        return self.blocks[0].linears["qkv"].in_features

    @property
    def patch_start(self) -> int:
        """Tokens per frame before the patches (camera and register tokens)."""
        return int(self.model.patch_start_idx)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything before the first calibrated block: images ``[B, S, 3, H, W]`` → (x, pos)."""
        raise NotImplementedError

    def run_block(self, ref: BlockRef, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def task_outputs(self, predictions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensor each task's Fisher reads: camera, depth, points."""
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
