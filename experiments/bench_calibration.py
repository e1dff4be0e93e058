"""Calibration cost per block for RTN, GPTQ and FlatQuant, measured side by side in one run.

    python experiments/bench_calibration.py [--full-block] [--clips 8] [--epochs 15] [--device cpu]

Default: the tiny VGGT (``conf/model/vggt_tiny.yaml``) on synthetic calibration clips (4 frames, 112²).
``--full-block``: one frame + one global block of VGGT-1B's shape (width 1024, 16 heads, MLP 4096, random
weights) at reduced resolution. Prints per-block median time, cached MB and peak device memory (CUDA only).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fgq import ROOT
from fgq.data.batch import collate
from fgq.data.synthetic import SyntheticScenes
from fgq.models import VGGT
from fgq.quant import FlatQuantConfig, GPTQConfig, QuantSpec, RTNConfig, quantize

W4A4 = QuantSpec(w_bits=4, a_bits=4)


def build_model(full_block: bool) -> torch.nn.Module:
    if full_block:  # VGGT-1B's block shape; tiny everything else
        return VGGT(img_size=112, embed_dim=1024, aggregator=dict(depth=1, num_heads=16, patch_embed=dict(
            depth=1, num_heads=16)), camera_head=dict(trunk_depth=1, num_heads=16),
            depth_head=dict(features=32, out_channels=[16, 32, 64, 64], intermediate_layer_idx=[0, 0, 0, 0]),
            point_head=dict(enabled=False)).eval()
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf" / "model"), version_base="1.3"):
        return instantiate(compose("vggt_tiny"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-block", action="store_true")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = SyntheticScenes(split="calib", num_scenes=args.clips, frames=args.frames)
    calib = [collate([data[i]]) for i in range(len(data))]
    print(f"{'full-size block' if args.full_block else 'vggt_tiny'} · {args.clips} clips × {args.frames} frames "
          f"· 112² · W4A4 · {device}")
    print(f"{'quantizer':10s} {'blocks':>6s} {'median s/block':>15s} {'total s':>8s} {'cached MB':>10s} "
          f"{'peak dev MB':>12s}")
    baseline = None
    for name, config in (("rtn", RTNConfig()), ("gptq", GPTQConfig()),
                         ("flatquant", FlatQuantConfig(epochs=args.epochs, cache_dtype="float32"))):
        model = build_model(args.full_block).to(device)
        start = time.perf_counter()
        cost = quantize(model, config, W4A4, calib=calib, device=device)
        total = time.perf_counter() - start
        blocks = cost.get("blocks", [])
        per_block = statistics.median(b["time_s"] for b in blocks) if blocks else total / len(model.quant_view().blocks)
        cached = max((b["cached_mb"] for b in blocks), default=0.0)
        peak = max((b["peak_device_mb"] or 0.0 for b in blocks), default=0.0)
        baseline = baseline or per_block
        print(f"{name:10s} {len(model.quant_view().blocks):6d} {per_block:15.4f} {total:8.2f} {cached:10.1f} "
              f"{peak:12.1f}   ×{per_block / baseline:.0f} RTN")


if __name__ == "__main__":
    main()
