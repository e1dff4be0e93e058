"""The block-wise calibration engine shared by every calibrated quantizer.

1. Capture the first block's inputs for all calibration clips once (``view.embed``), cached on CPU.
2. Walk the blocks in execution order, one at a time on the device: record the FP block's outputs (the
   targets), let the algorithm quantize the block, then choose the next block's inputs:
   - ``propagate="fp"``: the FP outputs (each block learns on FP inputs against FP targets: FlatQuant, FGQ);
   - ``propagate="quant"``: the quantized block's outputs on its own inputs (errors propagate: GPTQ).
Only one block, its cached inputs and its targets are alive at a time — never whole-model activations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from rich.progress import Progress

from fgq.models.adapter import BlockRef, QuantView


@dataclass
class CalibSample:
    """One calibration batch at the current block: hidden states ``[B,S,P,C]`` and positions ``[B,S,P,2]``."""

    x: torch.Tensor
    pos: torch.Tensor


@dataclass
class BlockData:
    """What the algorithm gets for one block: inputs and FP targets (on CPU, in the cache dtype)."""

    inputs: list[CalibSample]
    targets: list[torch.Tensor]
    device: torch.device

    def batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(x, pos, target) on the device in float32, one calibration batch at a time."""
        for sample, target in zip(self.inputs, self.targets, strict=True):
            yield (sample.x.to(self.device, torch.float32), sample.pos.to(self.device),
                   target.to(self.device, torch.float32))


BlockFn = Callable[[BlockRef, BlockData], dict]


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def capture_inputs(
    view: QuantView, calib: Iterable[dict], device: torch.device, dtype: torch.dtype
) -> list[CalibSample]:
    """Everything before the first calibrated block, once per calibration batch."""
    samples = []
    with torch.no_grad():
        for batch in calib:
            x, pos = view.embed(batch["images"].to(device))
            samples.append(CalibSample(x.to("cpu", dtype), pos.cpu()))
    if not samples:
        raise ValueError("calibration data is empty: check dataset.calib and calib.num_clips")
    return samples


def run_block(view: QuantView, ref: BlockRef, samples: list[CalibSample], device: torch.device,
              dtype: torch.dtype) -> list[torch.Tensor]:
    outputs = []
    with torch.no_grad():
        for s in samples:
            y = view.run_block(ref, s.x.to(device, torch.float32), s.pos.to(device))
            outputs.append(y.to("cpu", dtype))
    return outputs


def calibrate_blocks(
    view: QuantView,
    calib: Iterable[dict],
    block_fn: BlockFn,
    *,
    propagate: str,
    device: torch.device,
    cache_dtype: torch.dtype = torch.float32,
    description: str = "calibrating",
) -> dict:
    """Run ``block_fn(ref, data)`` on every block in order (it quantizes the block in place and returns its
    own figures); returns per-block time, peak device memory and cached bytes, plus the algorithm's figures."""
    if propagate not in ("fp", "quant"):
        raise ValueError(f"propagate={propagate!r}: use 'fp' or 'quant'")
    start = time.perf_counter()
    samples = capture_inputs(view, calib, device, cache_dtype)
    per_block = []
    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=len(view.blocks))
        for ref in view.blocks:
            t = time.perf_counter()
            _peak_reset(device)
            ref.module.to(device)
            targets = run_block(view, ref, samples, device, cache_dtype)
            figures = block_fn(ref, BlockData(samples, targets, device)) or {}
            samples = [
                CalibSample(y, s.pos) for s, y in zip(samples, (
                    targets if propagate == "fp" else run_block(view, ref, samples, device, cache_dtype)
                ), strict=True)
            ]
            cached = sum(s.x.numel() * s.x.element_size() for s in samples) * 2  # inputs + targets
            per_block.append({"block": ref.name, "time_s": time.perf_counter() - t,
                              "peak_device_mb": _peak(device), "cached_mb": cached / 2**20, **figures})
            progress.advance(task)
    return {"quantize_s": time.perf_counter() - start, "blocks": per_block}
