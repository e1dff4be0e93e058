"""Online rotation overhead: the fast Walsh–Hadamard rotation vs the dense ``x @ R`` matmul (QuantVGGT's code).

    python experiments/bench_hadamard.py [--tokens 2748] [--repeats 7] [--threads 1] [--device cpu]

At widths 1024 (VGGT's qkv/proj/fc1 input) and 4096 (fc2's input): median wall time over ``--repeats`` of
``HadamardRotation(n)(x)`` (signs, radix-≤32 butterflies, 1/√n) and of ``x @ R`` with ``R`` the same rotation as
a dense fp32 matrix, on ``x [tokens, n]`` fp32 (default 2748 tokens = 2 frames × 1374, one VGGT-1B clip of two
518² frames); also the linear layer itself (``n → n``) to put the overhead in proportion. One run, medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from fgq.quant.hadamard import HadamardRotation


def median_time(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocations, cached small Hadamards, CUDA kernels)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(width: int, tokens: int, repeats: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(width)
    rotation = HadamardRotation(width, g).to(device)
    dense = rotation.matrix(torch.float32).to(device)
    x = torch.randn(tokens, width, generator=g).to(device)
    weight = torch.randn(width, width, generator=g).to(device) / width**0.5
    err = float((rotation(x) - x @ dense).abs().max() / (x @ dense).abs().max())
    fast = median_time(lambda: rotation(x), repeats, device)
    matmul = median_time(lambda: x @ dense, repeats, device)
    linear = median_time(lambda: torch.nn.functional.linear(x, weight), repeats, device)
    return {"width": width, "fast_ms": 1e3 * fast, "dense_ms": 1e3 * matmul, "linear_ms": 1e3 * linear,
            "dense_over_fast": matmul / fast, "rel_err": err}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2748)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"online rotation · {args.tokens} tokens · fp32 · {device} · {torch.get_num_threads()} thread(s) · "
          f"median of {args.repeats}")
    print(f"{'width':>6} {'fast WHT ms':>12} {'dense x@R ms':>13} {'dense/fast':>11} {'linear n→n ms':>14} "
          f"{'fast/linear':>12} {'max rel err':>12}")
    for width in args.widths:
        r = bench(width, args.tokens, args.repeats, device)
        print(f"{r['width']:>6} {r['fast_ms']:>12.2f} {r['dense_ms']:>13.2f} {r['dense_over_fast']:>10.1f}x "
              f"{r['linear_ms']:>14.2f} {r['fast_ms'] / r['linear_ms']:>12.2f} {r['rel_err']:>12.1e}")


if __name__ == "__main__":
    main()
