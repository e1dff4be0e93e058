"""Where one FlatQuant calibration step of a VGGT-1B block spends its time, and what staging the block's cached
inputs/targets on the device buys: measured side by side in one run.

    PYTHONPATH=. python experiments/bench_flatquant_step.py            # one CUDA GPU: VGGT-1B, 518², 64 clips
    python experiments/bench_flatquant_step.py --tiny                  # the same code on the tiny VGGT, CPU

Variants (``quantizer.stage``), each on a fresh copy of the first frame and the first global block, same clips, same
epochs: ``host`` (inputs/targets cached in pageable host memory in bf16, copied every step, as FGQ's code), ``pinned``
(page-locked host memory, asynchronous copies) and ``device`` (moved to the device once per block). Then a
``torch.profiler`` table of a few ``pinned`` steps (top operators by device time, and the kernel count per step).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from scale_check import build, calibration_clips, sync

from fgq.quant import FlatQuantConfig, QuantSpec
from fgq.quant.calibrate import BlockData, CalibSample, capture_inputs, run_block
from fgq.quant.flatquant import calibrate_block

W4A4 = QuantSpec(w_bits=4, a_bits=4)


def block_data(view, ref, samples, device) -> BlockData:
    return BlockData(samples, run_block(view, ref, samples, device, torch.bfloat16), device)


def time_variant(name: str, stage: str, clips, epochs: int, device, amp) -> dict:
    model = build(name, device)
    view = model.quant_view()
    samples = capture_inputs(view, clips, device, torch.bfloat16, "bf16-mixed")
    out = {}
    for ref in view.blocks[:2]:  # the first frame and the first global block (inputs: FP, as FlatQuant)
        data = block_data(view, ref, samples, device)
        next_samples = [CalibSample(y, s.pos) for s, y in zip(samples, data.targets, strict=True)]
        sync(device)
        t = time.perf_counter()
        result = calibrate_block(view, ref, data, FlatQuantConfig(epochs=epochs, stage=stage), W4A4, None, amp)
        sync(device)
        out[ref.kind] = (time.perf_counter() - t) / result["steps"]
        samples = [CalibSample(s.x.cpu(), s.pos.cpu()) for s in next_samples]
    return out


def profile(name: str, clips, device, amp) -> None:
    model = build(name, device)
    view = model.quant_view()
    samples = capture_inputs(view, clips[:8], device, torch.bfloat16, "bf16-mixed")
    ref = view.blocks[1]  # a global block (the frame block's inputs would do as well)
    data = block_data(view, view.blocks[0], samples, device)
    data = block_data(view, ref, [CalibSample(y, s.pos) for s, y in zip(samples, data.targets, strict=True)], device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        result = calibrate_block(view, ref, data, FlatQuantConfig(epochs=1, warmup=False), W4A4, None, amp)
        sync(device)
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    events = prof.key_averages()
    print(events.table(sort_by=key, row_limit=25))
    if device.type == "cuda":
        kernels = sum(e.count for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
        print(f"{kernels / result['steps']:.0f} device kernels per step (incl. reparameterisation, once)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--clips", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    name, size, clips = ("vggt_tiny", 112, 4) if args.tiny else ("vggt", 518, 64)
    clips = calibration_clips(args.clips or clips, 4, size)
    amp = torch.bfloat16
    print(f"{name} · {len(clips)} clips × 4 frames · {size}² · {args.epochs} epochs · {device}", flush=True)
    rows = {}
    for variant in ("host", "pinned", "device", "host", "pinned", "device"):  # twice, interleaved: warm-up, noise
        times = time_variant(name, variant, clips, args.epochs, device, amp)
        rows.setdefault(variant, []).extend(times.values())
        print(f"{variant:7s} " + "  ".join(f"{k}: {v * 1e3:7.1f} ms/step" for k, v in times.items()), flush=True)
    host = statistics.median(rows["host"])
    for variant in ("pinned", "device"):
        print(f"{variant} vs host: ×{host / statistics.median(rows[variant]):.2f} faster per step (medians)")
    profile(name, clips, device, amp)


if __name__ == "__main__":
    main()
