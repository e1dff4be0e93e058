"""Shared test helpers: tiny model builders and deterministic, construction-order-independent weights."""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn

from fgq.models import VGGT, Pi3

# The small sizes of the official-output fixtures (tests/data/official_*.safetensors).
VGGT_FIXTURE_ARCH = dict(
    img_size=112, embed_dim=64,
    aggregator=dict(depth=4, num_heads=4, patch_embed=dict(depth=2, num_heads=4)),
    camera_head=dict(trunk_depth=1, num_heads=4),
    depth_head=dict(features=32, out_channels=[16, 32, 64, 64], intermediate_layer_idx=[0, 1, 2, 3]),
    point_head=dict(features=32, out_channels=[16, 32, 64, 64], intermediate_layer_idx=[0, 1, 2, 3]),
)
PI3_FIXTURE_ARCH = dict(
    img_size=518,
    encoder=dict(embed_dim=64, depth=2, num_heads=4),
    decoder=dict(embed_dim=64, depth=4, num_heads=4),
    heads=dict(embed_dim=64, depth=2, num_heads=4, out_dim=64, camera_out_dim=32),
)


def deterministic_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter from a generator seeded by (seed, key name): the values depend only on the
    key and shape, so any implementation with the same keys gets the same weights."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            noise = torch.randn(p.shape, generator=g)
            if p.dim() >= 2 and "token" not in name and "pos_embed" not in name:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(0.5 * noise / fan_in**0.5)
            elif name.endswith(".gamma"):
                p.copy_(0.5 + 0.1 * noise)
            elif "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.05 * noise)
    return model


def fixture_vggt() -> VGGT:
    return deterministic_weights(VGGT(**VGGT_FIXTURE_ARCH)).eval()


def fixture_pi3() -> Pi3:
    return deterministic_weights(Pi3(**PI3_FIXTURE_ARCH)).eval()


def fixture_images(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def assert_metrics_close(a: dict, b: dict, rel: float = 1e-5) -> None:
    """Metrics of two runs of one config: same keys, values equal to ``rel``. Runs on a loaded machine have
    differed in the 7th significant digit (float reductions), so bit equality is not required."""
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, dict):
            assert_metrics_close(value, b[key], rel)
        else:
            assert math.isclose(value, b[key], rel_tol=rel, abs_tol=1e-9), key


OUTPUT_KEYS = ("pose_enc", "depth", "world_points")


def composed(group: str, option: str, overrides: tuple[str, ...] = ()) -> object:
    """``fgq/conf/<group>/<option>.yaml`` composed (with its schema) and turned into its dataclass."""
    from hydra import compose, initialize_config_module

    from fgq.schemas import config_object

    with initialize_config_module("fgq.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"{group}={option}", *overrides])
    return config_object(cfg[group], group)


def model_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors a quantizer test compares: VGGT's pose/depth/points, or every tensor output of π3."""
    with torch.no_grad():
        out = model(images)
    if "pose_enc" in out:
        return {k: out[k] for k in OUTPUT_KEYS}
    return {k: v for k, v in out.items() if torch.is_tensor(v)}


def assert_reload_identical(model: nn.Module, config: object, spec, tmp_path, images: torch.Tensor) -> None:
    """Save a quantized fixture VGGT, reload it into a perturbed fresh one, and require bit-identical outputs."""
    from fgq.quant import LoadConfig, quantize, save_quantized

    path = save_quantized(model, config, spec, tmp_path)
    fresh = fixture_vggt()
    with torch.no_grad():
        fresh.aggregator.frame_blocks[0].mlp.fc1.weight.add_(1.0)  # the weights must come from the file
    quantize(fresh, LoadConfig(str(path)), spec)
    expected = model_outputs(model, images)
    assert all(torch.equal(v, model_outputs(fresh, images)[k]) for k, v in expected.items())
