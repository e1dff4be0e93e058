"""The per-task diagonal activation Fisher of a VGGT/π3 model, its cache, and FGQ's loss weights.

**What is computed** (as the official FGQ code does it). For every task
``k`` (camera, depth, points), every calibrated block ``l`` (the quantization view's execution order: VGGT
F0, G0, F1, G1, …; π3 decoder.0, decoder.1, …) and every channel ``c``::

    F[k, l, c] = (1/N) · Σ_clips Σ_{all frames and tokens of block l's output} (∂L_k / ∂h_l[…, c])²
    L_k        = Σ (task k's raw head output)      camera: pose encoding / poses, depth, points

``h_l`` is the whole block's output (the residual stream after the MLP): ``[B·S, P, C]`` for a frame block,
``[B, S·P, C]`` for a global block. The square is taken per element; camera and register tokens are included.
Clips are independent in these models, so a batch of ``B`` clips gives the same sums as ``B`` batches of one
clip, and ``N`` counts clips (not batches).

**How** (cheaper than the official code, same numbers): one forward per calibration batch with every
parameter frozen; a forward pre-hook makes the first block's input a fresh leaf that requires grad (nothing
before it is differentiated), forward hooks keep the block outputs, and ``torch.autograd.grad`` of each
task's scalar w.r.t. the list of block outputs (graph retained between tasks) gives all blocks at once: one
forward and ``T`` backward passes per batch, no parameter gradients. On CUDA the forward runs under bf16
autocast; the models run their heads in fp32 themselves (as the official code).

**This is not the paper's Fisher**: the scalar is a plain sum of outputs, so each entry is
``(Σ_o ∂f_o/∂h)²`` = ``diag(Jᵀ 1 1ᵀ J)`` (cross-output terms included, opposite signs cancel), not the
expected squared score ``diag(Jᵀ J)`` of a likelihood. ``estimator="summed_output"`` is the official
quantity. ``estimator="empirical"`` is an ablation: the per-output squared Jacobian ``diag(Jᵀ J)`` (what a
Gaussian-likelihood Fisher / Gauss–Newton diagonal with unit noise would give), estimated with ``K``
Rademacher projections: ``L_v = Σ_o v_o f_o`` with ``v_o = ±1``; since ``E[v vᵀ] = I``,
``E[(∂L_v/∂h_c)²] = Σ_o (∂f_o/∂h_c)²`` exactly, so the average over ``K`` projections is unbiased (variance
∝ 1/K; cost ``K`` backward passes per task). The projection vectors come from a generator seeded by
``seed`` (reproducible).

**Weights** (``fisher_to_weights``, as the official code): per task divide by its global mean, weighted sum over
tasks, per block rescale to channel-mean 1, floor. Under FlatQuant's ``L / stopgrad(L)`` loss only the within-block
channel profile of the weights matters (a per-block constant cancels).

**Cache** (``FisherCache``): safetensors files named by a sha256 of everything the Fisher depends on (the
model's architecture and every state-dict tensor's bytes, the clips' image bytes and metadata, tasks,
estimator and its settings, precision), written atomically. A changed weight or clip is a different key, so
a cached Fisher is never stale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fgq.errors import NonFiniteError

log = logging.getLogger(__name__)

TASKS = ("camera", "depth", "points")  # canonical order of the Fisher's first axis (QuantView.tasks)
ESTIMATORS = ("summed_output", "empirical")
GRANULARITIES = ("channel", "block", "none")
CACHE_VERSION = "fgq-fisher-v1"  # bump when the computation changes: old cache entries stop matching


# ---------------------------------------------------------------------------------------------------------------
# Settings


@dataclass
class FisherConfig:
    """The ``fisher`` config group (``fgq/conf/fisher/*.yaml``): how the Fisher is computed and turned into weights.

    Computation (part of the cache key): ``estimator``, ``num_projections`` and ``seed`` (empirical only),
    ``num_clips`` (the first N calibration clips; ``None`` = all; the official code uses the first 32 of 64).
    The Fisher is always computed for all three tasks so that every task subset of a sweep shares one cache
    entry. ``cache_dir``: where cached Fishers live (``None`` = no cache).

    Weighting: ``tasks`` (the subset summed into the weights), ``task_weights`` (``None`` = 1 each; a mapping
    task → weight, missing = 1; or a list aligned with ``tasks``), ``granularity`` (``channel``: the official
    per-channel weights; ``block``: one scalar per block; ``none``: no weighting, FGQ = FlatQuant), ``floor``
    (lower bound after the rescale, FGQ 0.01), ``normalize`` (divide each task by its global mean, FGQ: on).
    """

    # (``Any``: OmegaConf structured configs accept neither ``Sequence`` nor this union; the values are
    # checked below: ``tasks`` a list of task names, ``task_weights`` None | {task: w} | [w per task])
    tasks: Any = TASKS
    task_weights: Any = None
    granularity: str = "channel"
    floor: float = 0.01
    normalize: bool = True
    estimator: str = "summed_output"
    num_projections: int = 8
    seed: int = 0
    num_clips: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        tasks = [self.tasks] if isinstance(self.tasks, str) else [str(t) for t in self.tasks]
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"fisher.tasks={tasks}: a non-empty list of distinct tasks from {', '.join(TASKS)}")
        self.tasks = tuple(t for t in TASKS if t in tasks)  # canonical order
        if self.task_weights is not None:
            if isinstance(self.task_weights, Mapping):
                weights = {str(k): float(v) for k, v in self.task_weights.items()}
                extra = sorted(set(weights) - set(self.tasks))
                if extra:
                    raise ValueError(f"fisher.task_weights names {extra}, which are not in fisher.tasks={tasks}")
            else:
                values = [float(v) for v in self.task_weights]
                if len(values) != len(tasks):
                    raise ValueError(f"fisher.task_weights={values}: one weight per entry of fisher.tasks={tasks}")
                weights = dict(zip(tasks, values, strict=True))
            if any(not math.isfinite(v) or v < 0 for v in weights.values()) or not any(weights.values()):
                raise ValueError(f"fisher.task_weights={weights}: finite, >= 0, and not all 0")
            self.task_weights = weights
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"fisher.granularity={self.granularity!r}: use one of {', '.join(GRANULARITIES)}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"fisher.estimator={self.estimator!r}: use one of {', '.join(ESTIMATORS)}")
        if not (self.floor >= 0 and math.isfinite(self.floor)):
            raise ValueError(f"fisher.floor={self.floor!r}: must be >= 0")
        if self.num_projections < 1:
            raise ValueError(f"fisher.num_projections={self.num_projections!r}: must be >= 1")
        if self.num_clips is not None and self.num_clips < 1:
            raise ValueError(f"fisher.num_clips={self.num_clips!r}: must be >= 1 or null")

    def task_weight_vector(self, names: Sequence[str] = TASKS) -> list[float]:
        """One weight per task of ``names`` (the Fisher's first axis): 0 for tasks outside ``tasks``."""
        given = self.task_weights or {}
        return [given.get(t, 1.0) if t in self.tasks else 0.0 for t in names]


# ---------------------------------------------------------------------------------------------------------------
# Calibration clips


def take_clips(calib: Iterable[dict], num_clips: int | None = None) -> list[dict]:
    """The first ``num_clips`` clips of ``calib`` as a list of batches (the last batch cut if needed)."""
    batches, count = [], 0
    for batch in calib:
        if num_clips is not None and count >= num_clips:
            break
        b = batch["images"].shape[0]
        if num_clips is not None and count + b > num_clips:
            keep = num_clips - count
            batch = {k: (v[:keep] if torch.is_tensor(v) or isinstance(v, list) else v) for k, v in batch.items()}
            b = keep
        batches.append(batch)
        count += b
    if not batches:
        raise ValueError("Fisher: calibration data is empty (check calib.source and calib.num_clips)")
    return batches


# ---------------------------------------------------------------------------------------------------------------
# One forward, T backward passes


class _BlockTaps:
    """Forward hooks that keep every calibrated block's output; the first block's input becomes a leaf
    requiring grad, so that block outputs are differentiable with all parameters frozen."""

    def __init__(self, view) -> None:
        self.view = view
        self.outputs: list[torch.Tensor | None] = [None] * len(view.blocks)
        self.handles = []

    def __enter__(self) -> _BlockTaps:
        first = self.view.blocks[0].module

        def make_leaf(_module, args):
            return (args[0].detach().requires_grad_(True), *args[1:])

        self.handles.append(first.register_forward_pre_hook(make_leaf))
        for ref in self.view.blocks:
            self.handles.append(ref.module.register_forward_hook(self._keep(ref.index)))
        return self

    def _keep(self, index: int):
        def hook(_module, _args, output):
            if self.outputs[index] is not None:
                raise RuntimeError(f"Fisher: block {index} ran twice in one forward (gradient checkpointing? "
                                   "the model must be in eval mode)")
            self.outputs[index] = output
        return hook

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def _rademacher(shape: torch.Size, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.randint(0, 2, tuple(shape), generator=generator) * 2 - 1).to(device, torch.float32)


def fisher_sums(
    task_tensors: Sequence[torch.Tensor],
    block_outputs: Sequence[torch.Tensor],
    estimator: str = "summed_output",
    num_projections: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``[T, L, C]``: per task tensor and block output, the squared gradient summed over every position
    but the channel (last) axis. ``summed_output``: gradient of ``Σ output``; ``empirical``: the mean over
    ``num_projections`` Rademacher projections ``Σ v·output`` (see the module docstring). The graph of
    ``task_tensors`` is released after the last backward pass."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: use one of {', '.join(ESTIMATORS)}")
    channels = block_outputs[0].shape[-1]
    device = block_outputs[0].device
    out = torch.zeros(len(task_tensors), len(block_outputs), channels, dtype=torch.float32, device=device)
    draws = 1 if estimator == "summed_output" else num_projections
    if estimator == "empirical" and generator is None:
        generator = torch.Generator().manual_seed(0)
    total = len(task_tensors) * draws
    n = 0
    for k, y in enumerate(task_tensors):
        y = y.float()
        for _ in range(draws):
            n += 1
            scalar = y.sum() if estimator == "summed_output" else (y * _rademacher(y.shape, generator, y.device)).sum()
            grads = torch.autograd.grad(scalar, list(block_outputs), retain_graph=n < total, allow_unused=True)
            for b, g in enumerate(grads):
                if g is not None:
                    out[k, b] += g.float().square().reshape(-1, channels).sum(dim=0)
        if draws > 1:
            out[k] /= draws
    return out


def use_amp(device: torch.device, amp: bool | None) -> bool:
    return device.type == "cuda" if amp is None else bool(amp)


def compute_fisher(
    model: nn.Module,
    calib: Iterable[dict],
    tasks: Sequence[str] = TASKS,
    estimator: str = "summed_output",
    device: torch.device | str | None = None,
    num_projections: int = 8,
    num_clips: int | None = None,
    seed: int = 0,
    amp: bool | None = None,
) -> torch.Tensor:
    """The activation Fisher ``[T, L, C]`` (``tasks`` × the view's blocks in execution order × channels),
    float32 on CPU, averaged over the (first ``num_clips``) calibration clips.

    The model is put in eval mode and on ``device`` (default: where its parameters are); its parameters do
    not require grad during the pass; ``requires_grad`` flags and the train/eval mode are restored after.
    ``amp``: ``None`` = bf16 autocast on CUDA, fp32 on CPU."""
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"tasks={list(tasks)}: choose from {', '.join(TASKS)}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("the Fisher needs autograd: call compute_fisher outside torch.inference_mode()")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    view = model.quant_view()
    batches = take_clips(calib, num_clips)
    generator = torch.Generator().manual_seed(seed)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.to(device).eval()
    total, clips = None, 0
    try:
        model.requires_grad_(False)
        with torch.enable_grad():
            for batch in batches:
                images = batch["images"].to(device)
                with _BlockTaps(view) as taps, torch.autocast(device.type, dtype=torch.bfloat16,
                                                              enabled=use_amp(device, amp)):
                    predictions = model(images)
                missing = [i for i, o in enumerate(taps.outputs) if o is None]
                if missing:
                    raise RuntimeError(f"Fisher: blocks {missing} did not run in the model's forward")
                outputs = view.task_outputs(predictions)
                sums = fisher_sums([outputs[t] for t in tasks], taps.outputs, estimator, num_projections,
                                   generator)
                del predictions, outputs, taps
                total = sums if total is None else total + sums
                clips += images.shape[0]
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.train(was_training)
    fisher = (total / clips).cpu()
    bad = (~torch.isfinite(fisher)).nonzero()
    if len(bad):
        task, block = int(bad[0, 0]), int(bad[0, 1])
        raise NonFiniteError(f"Fisher: task {tasks[task]}, block {view.blocks[block].name}: not finite (the model's "
                             "outputs or their gradients overflowed; try trainer.precision=32-true)")
    return fisher


# ---------------------------------------------------------------------------------------------------------------
# Fisher → loss weights


def fisher_to_weights(
    fisher: torch.Tensor,
    task_weights: Sequence[float] | torch.Tensor | None = None,
    granularity: str = "channel",
    floor: float = 0.01,
    normalize: bool = True,
) -> torch.Tensor:
    """FGQ's per-block, per-channel loss weights ``[L, C]`` from the Fisher ``[T, L, C]`` (as the official code)::

        F̃_k = F_k / (mean_{l,c} F_k + 1e-30)        (normalize=True; skipped otherwise)
        ŵ   = Σ_k a_k · F̃_k                         (a = task_weights, default 1; 0 drops a task)
        channel: w[l, c] = ŵ[l, c] / (mean_c ŵ[l, c] + 1e-30)          each block has channel-mean 1
        block:   w[l, :] = m_l / (mean_l m_l + 1e-30),  m_l = mean_c ŵ[l, c]   one scalar per block, mean 1
        w = max(w, floor)                           (after the rescale; no renormalisation)
        none:    w = 1 everywhere (FGQ = FlatQuant)

    Computed in float64, returned as float32. Note: under FlatQuant's ``L / stopgrad(L)`` block loss a block's
    constant factor cancels, so ``block`` weights do not change calibration (up to rounding) — only the
    channel profile inside a block does."""
    if fisher.dim() != 3:
        raise ValueError(f"fisher has shape {tuple(fisher.shape)}: expected [tasks, blocks, channels]")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r}: use one of {', '.join(GRANULARITIES)}")
    t, blocks, channels = fisher.shape
    if granularity == "none":
        return torch.ones(blocks, channels)
    f = fisher.detach().to("cpu", torch.float64)
    if normalize:
        f = f / (f.mean(dim=(1, 2), keepdim=True) + 1e-30)
    a = torch.ones(t, dtype=torch.float64) if task_weights is None else torch.as_tensor(
        task_weights, dtype=torch.float64).flatten()
    if a.numel() != t:
        raise ValueError(f"task_weights has {a.numel()} entries for a Fisher with {t} tasks")
    w = (a.view(t, 1, 1) * f).sum(dim=0)
    if granularity == "channel":
        w = w / (w.mean(dim=1, keepdim=True) + 1e-30)
    else:
        m = w.mean(dim=1, keepdim=True)
        w = (m / (m.mean() + 1e-30)).expand(blocks, channels)
    return w.clamp_min(floor).float().contiguous()


def fisher_summary(fisher: torch.Tensor, names: Sequence[str] = TASKS, blocks: Sequence[str] | None = None) -> dict:
    """JSON-able per-task figures: global mean and the per-block channel mean."""
    out = {"tasks": list(names), "shape": list(fisher.shape)}
    if blocks is not None:
        out["blocks"] = list(blocks)
    out["task_mean"] = {n: float(fisher[k].mean()) for k, n in enumerate(names)}
    out["block_mean"] = {n: [float(v) for v in fisher[k].mean(dim=1)] for k, n in enumerate(names)}
    return out
