"""The block-wise calibration engine shared by every calibrated quantizer.

1. Capture the first block's inputs for all calibration clips once (``view.embed``), cached on CPU.
2. Walk the blocks in execution order, one at a time on the device: record the FP block's outputs (the
   targets), let the algorithm quantize the block, then choose the next block's inputs:
   - ``propagate="fp"``: the FP outputs (each block learns on FP inputs against FP targets: FlatQuant, FGQ);
   - ``propagate="quant"``: the quantized block's outputs on its own inputs (errors propagate: GPTQ).
Only one block, its cached inputs and its targets are alive at a time — never whole-model activations.

With FP propagation the inputs and targets depend only on the FP model and the clips, so a sweep can share them:
given a ``store`` (``fgq.caches.TargetCache``, through ``QuantContext.target_store``) the engine reads them from it
or fills it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from rich.console import Console
from rich.progress import Progress

from fgq.errors import NonFiniteError
from fgq.models.adapter import BlockRef, QuantView
from fgq.runtime import autocast

log = logging.getLogger(__name__)


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
# How one block is run on ``[B,S,P,C]`` inputs; ``None`` = ``view.run_block`` (the inference layout). QuantVGGT's
# ``global_tokens=frame`` option passes one that feeds global blocks frame-shaped tokens, as its released code.
BlockRunner = Callable[[BlockRef, torch.Tensor, torch.Tensor], torch.Tensor]


class TargetStore(Protocol):
    """Where FP inputs/targets of one calibration are kept (``fgq.caches.TargetCache``). ``open`` (keyed also by the
    clips it is given) returns an entry with ``hit``, ``load_inputs()``, ``load_targets(i)``,
    ``save_inputs(pairs, num_blocks)``, ``save_targets(i, targets)`` and ``close() -> dict``."""

    def open(self, blocks: Sequence[str], dtype: torch.dtype, calib: Iterable[dict]) -> Any: ...


def progress_console() -> Console:
    return Console(stderr=True)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def capture_inputs(
    view: QuantView, calib: Iterable[dict], device: torch.device, dtype: torch.dtype, precision: str | None = None
) -> list[CalibSample]:
    """Everything before the first calibrated block, once per calibration batch, under the job's autocast (the
    official code computes these DINO tokens under bf16 autocast)."""
    samples = []
    with torch.no_grad():
        for batch in calib:
            with autocast(device, precision):
                x, pos = view.embed(batch["images"].to(device))
            samples.append(CalibSample(x.to("cpu", dtype), pos.cpu()))
    if not samples:
        raise ValueError("calibration data is empty: check calib.source and calib.num_clips")
    return samples


def run_block(view: QuantView, ref: BlockRef, samples: list[CalibSample], device: torch.device,
              dtype: torch.dtype, runner: BlockRunner | None = None) -> list[torch.Tensor]:
    runner = runner or view.run_block
    outputs = []
    with torch.no_grad():
        for s in samples:
            y = runner(ref, s.x.to(device, torch.float32), s.pos.to(device))
            outputs.append(y.to("cpu", dtype))
    return outputs


def check_block_finite(ref: BlockRef, who: str) -> None:
    """Every floating tensor of a just-quantized block is finite, or one ``NonFiniteError`` names the block and the
    tensor (the job stops there: nothing is saved)."""
    state = ref.module.state_dict()
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise NonFiniteError(f"{who}: block {ref.name}: {bad} holds NaN or infinity after calibration "
                             "(nothing is saved)")


def calibrate_blocks(
    view: QuantView,
    calib: Iterable[dict],
    block_fn: BlockFn,
    *,
    propagate: str,
    device: torch.device,
    cache_dtype: torch.dtype = torch.float32,
    description: str = "calibrating",
    runner: BlockRunner | None = None,
    store: TargetStore | None = None,
    precision: str | None = None,
) -> dict:
    """Run ``block_fn(ref, data)`` on every block in order (it quantizes the block in place and returns its
    own figures); returns per-block time, peak device memory and cached bytes, plus the algorithm's figures.
    ``runner``: how a block is run for targets and propagation (default ``view.run_block``). ``store``: where FP
    inputs/targets are shared (FP propagation with the default runner only; others compute their own).
    ``precision``: the autocast of the embedding pass (``fgq.runtime``; ``None`` = auto); blocks run in fp32."""
    if propagate not in ("fp", "quant"):
        raise ValueError(f"propagate={propagate!r}: use 'fp' or 'quant'")
    start = time.perf_counter()
    if propagate != "fp" or runner is not None:
        store = None
    entry = None
    if store is not None:
        if iter(calib) is calib:  # the store reads the clips for its key: a one-shot iterator must survive that
            calib = list(calib)
        entry = store.open([ref.name for ref in view.blocks], cache_dtype, calib)
    if entry is not None and entry.hit:
        samples = [CalibSample(x, pos) for x, pos in entry.load_inputs()]
    else:
        samples = capture_inputs(view, calib, device, cache_dtype, precision)
        if entry is not None:
            entry.save_inputs([(s.x, s.pos) for s in samples], len(view.blocks))
    per_block = []
    logged = not progress_console().is_terminal  # nohup, SLURM, CI logs: one line per block instead of a bar
    with Progress(transient=True, console=progress_console(), disable=logged) as progress:
        task = progress.add_task(description, total=len(view.blocks))
        for i, ref in enumerate(view.blocks):
            t = time.perf_counter()
            _peak_reset(device)
            ref.module.to(device)
            if entry is not None and entry.hit:
                targets = entry.load_targets(i)
            else:
                targets = run_block(view, ref, samples, device, cache_dtype, runner)
                if entry is not None:
                    entry.save_targets(i, targets)
            figures = block_fn(ref, BlockData(samples, targets, device)) or {}
            check_block_finite(ref, description)
            samples = [
                CalibSample(y, s.pos) for s, y in zip(samples, (
                    targets if propagate == "fp" else run_block(view, ref, samples, device, cache_dtype, runner)
                ), strict=True)
            ]
            cached = sum(s.x.numel() * s.x.element_size() for s in samples) * 2  # inputs + targets
            per_block.append({"block": ref.name, "time_s": time.perf_counter() - t,
                              "peak_device_mb": _peak(device), "cached_mb": cached / 2**20, **figures})
            progress.advance(task)
            if logged:
                log.info("%s: block %d/%d (%s) in %.1f s", description, i + 1, len(view.blocks), ref.name,
                         per_block[-1]["time_s"])
    result = {"quantize_s": time.perf_counter() - start, "blocks": per_block}
    if entry is not None:
        result["fp_targets"] = entry.close()
    return result
