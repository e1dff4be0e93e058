"""The cost of FGQ over FlatQuant, measured side by side in one run (medians of a few repeats).

    python experiments/bench_fisher.py [--models tiny,1b] [--clips 4] [--frames 2] [--epochs 2] [--repeats 3]
                                       [--pairs 2] [--size 112] [--device cpu] [--threads N]

Two models: ``tiny`` = ``conf/model/vggt_tiny.yaml`` (its configured weights); ``1b`` = a VGGT-1B-shaped stack
(width 1024, 16 heads, MLP 4096, ``--pairs`` frame/global block pairs, a ``--encoder-depth``-block DINO
encoder, small heads unless ``--real-heads``, seeded random weights) at ``--size``² (default 112²). The
synthetic calibration clips are the same for every measurement.

(a) **Fisher pass** (``fgq.fisher.compute.compute_fisher``: one forward, three backwards to the block outputs, no
    parameter gradients) per clip, as a ratio to one FP forward + backward **with parameter gradients** of the
    summed task outputs on the same clip (same precision: bf16 autocast on CUDA, fp32 on CPU). For reference
    also the official code's way (parameter gradients on, ``retain_grad`` on every block output, three
    ``backward`` calls on one retained graph).
(b) **Calibration time**: ``quantize(model, FGQConfig(...))`` vs ``quantize(model, FlatQuantConfig(...))``,
    same epochs, clips and seed, W4A4, each on a fresh copy of the same model; FGQ with its Fisher pass
    (``quantize_s``, what a job without a Fisher cache pays) and without it (``flatquant_s``: the weighted
    calibration alone, what a job with a cache hit pays). The paper: FGQ +5.7% over FlatQuant.

Timings are wall-clock medians; runs alternate (FlatQuant, FGQ, FlatQuant, …) so that drift of a busy
machine hits both. Scale up with e.g. ``--pairs 24 --encoder-depth 24 --real-heads --size 518 --frames 4
--clips 8 --epochs 15 --device cuda``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time
from collections.abc import Callable

import torch

from fgq import ROOT
from fgq.data.batch import collate
from fgq.data.synthetic import SyntheticScenes
from fgq.fisher.compute import TASKS, FisherConfig, compute_fisher, use_amp
from fgq.models import VGGT
from fgq.quant import FGQConfig, FlatQuantConfig, QuantSpec, quantize

W4A4 = QuantSpec(w_bits=4, a_bits=4)


def build_model(name: str, args: argparse.Namespace) -> torch.nn.Module:
    if name == "tiny":
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf" / "model"), version_base="1.3"):
            return instantiate(compose("vggt_tiny", overrides=[f"img_size={args.size}"]))
    pairs = args.pairs
    taps = sorted({0, pairs // 3, (2 * pairs) // 3, pairs - 1})
    taps = (taps + [pairs - 1] * 4)[:4]  # four DPT taps spread over the stack, as [4, 11, 17, 23] of 24
    if args.real_heads:
        heads = dict(features=256, out_channels=[256, 512, 1024, 1024], intermediate_layer_idx=taps)
        camera = dict(trunk_depth=4, num_heads=16)
    else:
        heads = dict(features=32, out_channels=[16, 32, 64, 64], intermediate_layer_idx=taps)
        camera = dict(trunk_depth=1, num_heads=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return VGGT(img_size=args.size, embed_dim=1024,
                    aggregator=dict(depth=pairs, num_heads=16, patch_embed=dict(depth=args.encoder_depth,
                                                                                num_heads=16)),
                    camera_head=camera, depth_head=dict(heads), point_head=dict(heads)).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def fp_forward_backward(model: torch.nn.Module, images: torch.Tensor, amp: bool) -> None:
    """One forward + backward of the summed task outputs with parameter gradients (the denominator of (a))."""
    model.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = model.quant_view().task_outputs(model(images))
    sum(outputs[t].float().sum() for t in TASKS).backward()
    model.zero_grad(set_to_none=True)


def official_fisher_pass(model: torch.nn.Module, images: torch.Tensor, amp: bool) -> None:
    """The official code's Fisher pass on one clip: parameter gradients on, ``retain_grad`` on every block
    output, three ``backward`` calls on one retained graph."""
    view = model.quant_view()
    model.requires_grad_(True)
    kept = []

    def keep(_module, _args, out):
        out.retain_grad()
        kept.append(out)

    handles = [ref.module.register_forward_hook(keep) for ref in view.blocks]
    try:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = view.task_outputs(model(images))
        for k, task in enumerate(TASKS):
            for h in kept:
                h.grad = None
            outputs[task].float().sum().backward(retain_graph=k < len(TASKS) - 1)
            _ = [h.grad.float().square().sum(dim=tuple(range(h.dim() - 1))) for h in kept]
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)


def bench_fisher_pass(model: torch.nn.Module, calib: list[dict], device: torch.device, repeats: int) -> dict:
    amp = use_amp(device, None)
    images = calib[0]["images"].to(device)
    cases = {
        "fp_fwd_bwd": lambda: fp_forward_backward(model, images, amp),
        "fisher": lambda: compute_fisher(model, [{"images": images}], device=device),
        "official_fisher": lambda: official_fisher_pass(model, images, amp),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():  # warm-up (allocator, kernels)
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn, device))
    model.requires_grad_(False)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_calibration(base: torch.nn.Module, calib: list[dict], device: torch.device, args) -> dict:
    common = dict(epochs=args.epochs, cache_dtype=args.cache_dtype, seed=0)
    configs = {
        "flatquant": lambda: FlatQuantConfig(**common),
        "fgq": lambda: FGQConfig(**common),
    }
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    for repeat in range(-args.warmup, args.repeats):  # negative: warm-up rounds, not counted
        for name, make in configs.items():
            model = copy.deepcopy(base).to(device)
            sync(device)
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the calibration's progress bar
                cost = quantize(model, make(), W4A4, calib=calib, device=device,
                                fisher_config=FisherConfig(num_clips=args.fisher_clips))
            sync(device)
            cost["wall_s"] = time.perf_counter() - start
            if repeat >= 0:
                runs[name].append(cost)
            del model
    flat = statistics.median(c["quantize_s"] for c in runs["flatquant"])
    fgq_total = statistics.median(c["quantize_s"] for c in runs["fgq"])
    fgq_calib = statistics.median(c["flatquant_s"] for c in runs["fgq"])
    fisher = statistics.median(c["fisher_s"] for c in runs["fgq"])
    return {"flatquant_s": flat, "fgq_s": fgq_total, "fgq_without_fisher_s": fgq_calib, "fisher_s": fisher}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,1b", help="comma list of tiny, 1b")
    parser.add_argument("--clips", type=int, default=4, help="calibration clips (Fisher and calibration)")
    parser.add_argument("--fisher-clips", type=int, default=None, help="Fisher clips; default all (official: half)")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--size", type=int, default=112, help="square image side, a multiple of 14")
    parser.add_argument("--epochs", type=int, default=2, help="FlatQuant/FGQ epochs per block (paper: 15)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calibration rounds before the repeats")
    parser.add_argument("--pairs", type=int, default=2, help="1b: frame/global block pairs (VGGT-1B: 24)")
    parser.add_argument("--encoder-depth", type=int, default=1, help="1b: DINO encoder blocks (VGGT-1B: 24)")
    parser.add_argument("--real-heads", action="store_true", help="1b: VGGT-1B's camera trunk and DPT sizes")
    parser.add_argument("--cache-dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = SyntheticScenes(split="calib", num_scenes=args.clips, frames=args.frames, height=args.size,
                           width=args.size)
    calib = [collate([data[i]]) for i in range(len(data))]
    print(f"{args.clips} clips × {args.frames} frames · {args.size}² · W4A4 · {args.epochs} epochs · "
          f"{args.repeats} repeats (medians) · {device}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        model = build_model(name.strip(), args).to(device)
        view = model.quant_view()
        width = view.channels
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"\n== {name}: {len(view.blocks)} blocks, width {width}, {params:.1f} M parameters")
        a = bench_fisher_pass(model, calib, device, args.repeats)
        print(f"(a) one clip: FP fwd+bwd (param grads) {a['fp_fwd_bwd'] * 1e3:8.1f} ms · Fisher pass "
              f"{a['fisher'] * 1e3:8.1f} ms = ×{a['fisher'] / a['fp_fwd_bwd']:.2f} · official-style Fisher "
              f"{a['official_fisher'] * 1e3:8.1f} ms = ×{a['official_fisher'] / a['fp_fwd_bwd']:.2f}")
        b = bench_calibration(model.cpu(), calib, device, args)
        print(f"(b) FlatQuant {b['flatquant_s']:.2f} s · FGQ {b['fgq_s']:.2f} s (Fisher {b['fisher_s']:.2f} s, "
              f"calibration {b['fgq_without_fisher_s']:.2f} s)")
        print(f"    FGQ / FlatQuant = {b['fgq_s'] / b['flatquant_s']:.3f} with the Fisher pass "
              f"({100 * (b['fgq_s'] / b['flatquant_s'] - 1):+.1f}%), "
              f"{b['fgq_without_fisher_s'] / b['flatquant_s']:.3f} without "
              f"({100 * (b['fgq_without_fisher_s'] / b['flatquant_s'] - 1):+.1f}%) · paper +5.7%, aim ≤ +3%")
        del model


if __name__ == "__main__":
    main()
