"""VGGT camera head: a transformer trunk over the per-frame camera tokens, refined iteratively with
adaptive LayerNorm modulation; emits the ``absT_quaR_FoV`` pose encoding ``[t(3), quat xyzw(4), fov_h, fov_w]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgq.models.layers import Block, Mlp

POSE_ENCODING_DIMS = {"absT_quaR_FoV": 9}


def _activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "linear":
        return x
    if kind == "relu":
        return F.relu(x)
    if kind == "exp":
        return torch.exp(x)
    if kind == "inv_log":
        return torch.sign(x) * torch.expm1(x.abs())
    raise ValueError(f"camera head activation {kind!r}: use linear, relu, exp or inv_log")


class CameraHead(nn.Module):
    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        pose_encoding_type: str = "absT_quaR_FoV",
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float | None = 0.01,
        trans_act: str = "linear",
        quat_act: str = "linear",
        fl_act: str = "relu",
        iterations: int = 4,
    ) -> None:
        super().__init__()
        if pose_encoding_type not in POSE_ENCODING_DIMS:
            raise ValueError(f"camera_head.pose_encoding_type={pose_encoding_type!r}: only 'absT_quaR_FoV'")
        target = POSE_ENCODING_DIMS[pose_encoding_type]
        self.acts = (trans_act, quat_act, fl_act)
        for act in self.acts:
            _activate(torch.zeros(1), act)  # fail at construction on an unknown name
        self.iterations = iterations
        self.trunk = nn.Sequential(
            *(Block(dim_in, num_heads, mlp_ratio, init_values=init_values) for _ in range(trunk_depth))
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, target))
        self.embed_pose = nn.Linear(target, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, target)

    def activate(self, enc: torch.Tensor) -> torch.Tensor:
        t, q, fov = enc[..., :3], enc[..., 3:7], enc[..., 7:]
        trans_act, quat_act, fl_act = self.acts
        return torch.cat((_activate(t, trans_act), _activate(q, quat_act), _activate(fov, fl_act)), dim=-1)

    def forward(self, last_layer: torch.Tensor) -> list[torch.Tensor]:
        """``last_layer``: aggregator output ``[B, S, P, 2C]``; returns one ``[B, S, 9]`` per iteration."""
        tokens = self.token_norm(last_layer[:, :, 0].float())
        b, s, _ = tokens.shape
        pred = None
        outputs = []
        for _ in range(self.iterations):
            # The previous estimate is detached: only the last iteration's gradient reaches the tokens.
            source = self.empty_pose_tokens.expand(b, s, -1) if pred is None else pred.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(source)).chunk(3, dim=-1)
            h = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(h)))
            pred = delta if pred is None else pred + delta
            outputs.append(self.activate(pred))
        return outputs
