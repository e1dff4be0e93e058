"""π3 (Pi3): DINOv2 encoder, alternating frame/global decoder with shared register tokens (no reference
frame), and point / confidence / camera heads. Official parameter names; camera poses are camera-to-world."""

from __future__ import annotations

import torch
from torch import nn

from fgq.models import geometry
from fgq.models.adapter import Pi3View
from fgq.models.aggregator import IMAGENET_MEAN, IMAGENET_STD
from fgq.models.dinov2 import DinoEncoder
from fgq.models.layers import Block, fp32_heads
from fgq.models.pi3_heads import LinearPts3d, Pi3CameraHead, TransformerDecoder
from fgq.models.rope import RoPE2D, token_positions


class Pi3(nn.Module):
    family = "pi3"
    tasks = ("camera", "depth", "points")
    skipped_checkpoint_prefixes = ()

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        rope_freq: float = 100.0,
        num_register_tokens: int = 5,
        encoder: dict | None = None,
        decoder: dict | None = None,
        heads: dict | None = None,
    ) -> None:
        super().__init__()
        enc = {"embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0, "num_register_tokens": 4,
               "init_values": 1.0, **(encoder or {})}
        dec = {"embed_dim": 1024, "depth": 36, "num_heads": 16, "mlp_ratio": 4.0, "init_values": 0.01,
               "qk_norm": True, **(decoder or {})}
        hd = {"embed_dim": 1024, "depth": 5, "num_heads": 16, "mlp_ratio": 4.0, "out_dim": 1024,
              "camera_out_dim": 512, **(heads or {})}
        if dec["depth"] < 2 or dec["depth"] % 2:
            raise ValueError(f"pi3 decoder.depth={dec['depth']}: must be even and ≥ 2 (frame/global pairs)")
        self.patch_size = patch_size
        self.patch_start_idx = num_register_tokens
        self.encoder = DinoEncoder(img_size, patch_size, mask_token=False, **enc)
        dim = dec["embed_dim"]
        # The official constructor concatenates 1024-d encoder tokens with smaller decoder tokens and
        # crashes for decoder widths ≠ encoder width; a projection (absent when widths match, so the
        # official key set is unchanged) makes every size valid.
        if enc["embed_dim"] != dim:
            self.encoder_proj = nn.Linear(enc["embed_dim"], dim)
        self.rope = RoPE2D(rope_freq) if rope_freq > 0 else None
        self.decoder = nn.ModuleList(
            Block(dim, dec["num_heads"], dec["mlp_ratio"], init_values=dec["init_values"], norm_eps=1e-6,
                  qk_norm=dec["qk_norm"], rope=self.rope)
            for _ in range(dec["depth"])
        )
        self.register_token = nn.Parameter(torch.randn(1, 1, num_register_tokens, dim) * 1e-6)

        def head_decoder(out_dim: int) -> TransformerDecoder:
            return TransformerDecoder(2 * dim, out_dim, hd["embed_dim"], hd["depth"], hd["num_heads"],
                                      hd["mlp_ratio"], self.rope)

        self.point_decoder = head_decoder(hd["out_dim"])
        self.point_head = LinearPts3d(patch_size, hd["out_dim"], 3)
        self.conf_decoder = head_decoder(hd["out_dim"])
        self.conf_head = LinearPts3d(patch_size, hd["out_dim"], 1)
        self.camera_decoder = head_decoder(hd["camera_out_dim"])
        self.camera_head = Pi3CameraHead(hd["camera_out_dim"])
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, S, 3, H, W]`` → decoder input ``[B, S, P, C]`` and positions ``[B, S, P, 2]``."""
        b, s, _, height, width = images.shape
        h, w = height // self.patch_size, width // self.patch_size
        x = (images.reshape(b * s, 3, height, width) - self.image_mean) / self.image_std
        x = self.encoder(x)
        if hasattr(self, "encoder_proj"):
            x = self.encoder_proj(x)
        registers = self.register_token[0].expand(b * s, -1, -1).to(x.dtype)
        x = torch.cat((registers, x), dim=1)
        pos = token_positions(b * s, h, w, self.patch_start_idx, images.device)
        return x.reshape(b, s, x.shape[1], -1), pos.reshape(b, s, -1, 2)

    @staticmethod
    def block_kind(index: int) -> str:
        return "frame" if index % 2 == 0 else "global"

    def run_block(self, index: int, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Decoder block ``index`` on ``[B, S, P, C]``: even blocks attend within a frame, odd across frames."""
        b, s, p, c = x.shape
        if index % 2 == 0:
            y = self.decoder[index](x.reshape(b * s, p, c), pos.reshape(b * s, p, 2))
        else:
            y = self.decoder[index](x.reshape(b, s * p, c), pos.reshape(b, s * p, 2))
        return y.reshape(b, s, p, c)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: ``[B, S, 3, H, W]`` (or ``[S, 3, H, W]``) in [0, 1]."""
        if images.dim() == 4:
            images = images.unsqueeze(0)
        b, s, _, height, width = images.shape
        h, w = height // self.patch_size, width // self.patch_size
        x, pos = self.embed(images)
        outputs = []
        for i in range(len(self.decoder)):
            x = self.run_block(i, x, pos)
            if i >= len(self.decoder) - 2:
                outputs.append(x)
        hidden = torch.cat(outputs, dim=-1).reshape(b * s, x.shape[2], -1)
        pos = pos.reshape(b * s, -1, 2)
        start = self.patch_start_idx
        point_hidden = self.point_decoder(hidden, pos)
        conf_hidden = self.conf_decoder(hidden, pos)
        camera_hidden = self.camera_decoder(hidden, pos)
        with fp32_heads(images.device):
            xyz = self.point_head(point_hidden[:, start:].float(), height, width).reshape(b, s, height, width, 3)
            z = torch.exp(xyz[..., 2:])
            local_points = torch.cat((xyz[..., :2] * z, z), dim=-1)
            conf = self.conf_head(conf_hidden[:, start:].float(), height, width).reshape(b, s, height, width, 1)
            poses = self.camera_head(camera_hidden[:, start:].float(), h, w).reshape(b, s, 4, 4)
            rot, t = poses[..., :3, :3], poses[:, :, None, None, :3, 3]
            points = torch.einsum("bsij,bshwj->bshwi", rot, local_points) + t
        return {"points": points, "local_points": local_points, "conf": conf, "camera_poses": poses}

    def geometry(self, predictions: dict[str, torch.Tensor], points_source: str = "depth_camera",
                 size: tuple[int, int] | None = None, resize: str = "bilinear") -> dict:
        """Predictions in the evaluation's common form: w2c ``extrinsics [B,S,3,4]``, ``depth [B,S,H,W]``,
        ``points [B,S,H,W,3]`` (world frame of the model). ``size``: the ground truth's (H, W) when it differs
        from the model's output; dense outputs are then resized to it with ``resize`` (``geometry.resize_maps``).
        π3 predicts camera-to-world poses and its global point map directly (``points_source`` is ignored);
        depth is the z of its local points. Dense outputs are resized to ``size`` when given."""
        w2c = geometry.closed_form_inverse_se3(predictions["camera_poses"])[..., :3, :]
        return {"extrinsics": w2c, "depth": geometry.resize_maps(predictions["local_points"][..., 2], size, resize),
                "points": geometry.resize_maps(predictions["points"], size, resize, channels_last=True)}

    def quant_view(self) -> Pi3View:
        return Pi3View(self)
