"""QuantVGGT: dual smoothing (global Hadamard rotation, then learned per-channel smoothing), LWC/LAC, block-wise
calibration on FP inputs/targets, and noise-filtered diverse calibration sampling (QuantVGGT paper; code
``wlfeng0509/QuantVGGT``).

Per calibrated linear (qkv fused, proj, fc1, fc2; a ``SmoothRotLinear``), with ``R = D·H/√n`` fixed and
``s ∈ R^n`` learned, as in the released code::

    y = Q_a( (x·R) / s ) · Q_w( LWC( (W·R) ⊙ s ) )ᵀ + b        exact with the quantizers off: (xR/s)·((WR)⊙s)ᵀ = xWᵀ

- ``s`` initialised SmoothQuant-style: ``s = clamp(act^α / max_col|W·R|^(1−α), 1e-5)``, α = 0.5, ``act`` an
  EMA (0.95) over the first ``max(1, ⌊n/5⌋)`` calibration clips of the per-channel ``mean over the leading dim of
  max over tokens of |x·R|``;
- calibration (the released code's settings): per block, AdamW (weight decay 0.01) on ``s`` (lr 1e-3) and the
  LWC/LAC logits (1e-2), cosine to 1e-6 over ``epochs × clips`` steps, one clip per step, plain MSE against the FP
  block output, FP prefix inputs (``propagate="fp"``), fp32;
- then each linear is reparameterised: ``W ← Q_w(LWC((W·R) ⊙ s))`` stored de-quantised; online remain the fast
  Hadamard (``fgq.quant.hadamard``, where the released code multiplies by a dense ``R``), the division by ``s``
  and the per-token activation quantizer.

The released code's bugs are options; the defaults follow the paper:
- ``global_tokens``: ``sequence`` calibrates global blocks on ``[B, S·P, C]`` as inference runs them; ``frame``
  feeds them frame-shaped tokens for the targets, training and propagation, as the released code does (its
  smoothing statistics come from a separate full forward; here they use the same frame-shaped inputs);
- ``smooth_weight_stat``: ``rotated`` uses ``max|W·R|`` as the paper's formula; ``unrotated`` uses ``max|W|``;
- ``sampling.outlier_filter``: ``apply`` drops abnormal clips; ``compute_only`` computes but keeps them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fgq.models.adapter import LINEAR_PATHS, BlockRef, QuantView
from fgq.quant.calibrate import BlockData, BlockRunner, calibrate_blocks
from fgq.quant.context import QuantContext
from fgq.quant.diverse_sampling import SamplerConfig, diverse_sample, split_clips
from fgq.quant.flat_block import FlatLinear
from fgq.quant.hadamard import HadamardRotation, rotation_generator
from fgq.quant.registry import register
from fgq.quant.spec import QuantSpec

GLOBAL_TOKENS = ("sequence", "frame")
WEIGHT_STATS = ("rotated", "unrotated")
CACHE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class QuantVGGTConfig:
    """QuantVGGT settings; defaults = the released code's values with the paper's intent where the code has
    bugs. ``smooth=false`` keeps ``s = 1`` (rotation + LWC/LAC only, the code's ``--not_smooth``).
    """

    epochs: int = 15
    smooth_lr: float = 1e-3
    clip_lr: float = 1e-2
    weight_decay: float = 0.01
    eta_min: float = 1e-6
    alpha: float = 0.5
    smooth: bool = True
    lwc: bool = True
    lac: bool = True
    stat_fraction: float = 0.2  # smoothing statistics from the first max(1, ⌊clips·0.2⌋) clips (4 of 20)
    stat_momentum: float = 0.95  # act ← m·act + (1 − m)·cur after the first clip
    smooth_weight_stat: str = "rotated"
    global_tokens: str = "sequence"
    seed: int = 0  # rotation signs of each linear: seeded by (seed, linear name)
    cache_dtype: str = "float32"
    sampling: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self) -> None:
        if self.global_tokens not in GLOBAL_TOKENS:
            raise ValueError(f"quantizer.global_tokens={self.global_tokens!r}: use one of {', '.join(GLOBAL_TOKENS)}")
        if self.smooth_weight_stat not in WEIGHT_STATS:
            raise ValueError(f"quantizer.smooth_weight_stat={self.smooth_weight_stat!r}: use one of "
                             f"{', '.join(WEIGHT_STATS)}")
        if self.cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"quantizer.cache_dtype={self.cache_dtype!r}: use one of {', '.join(CACHE_DTYPES)}")
        if self.epochs < 0 or not 0 < self.stat_fraction <= 1 or not 0 <= self.stat_momentum < 1:
            raise ValueError("quantizer: need epochs >= 0, stat_fraction in (0, 1], stat_momentum in [0, 1)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"quantizer.alpha={self.alpha!r}: must be in [0, 1]")


class SmoothRotLinear(FlatLinear):
    """``FlatLinear`` (LWC/LAC, fused qkv: one activation quantizer) with QuantVGGT's online ``x ↦ (x·R)/s``;
    the stored weight is ``W·R`` (rotated once at construction), ``⊙ s`` and LWC are applied on the fly until
    ``reparameterize`` merges them. Keys: ``weight``, ``bias``, ``smooth``, ``rotation.signs``, LWC/LAC logits."""

    def __init__(self, linear: nn.Linear, spec: QuantSpec, rotation: HadamardRotation, *, lwc: bool, lac: bool,
                 rotate_weight: bool = True) -> None:
        super().__init__(linear, spec, lwc=lwc, lac=lac)
        self.rotation = rotation.to(self.weight.device)
        self.smooth = nn.Parameter(torch.ones(self.in_features, device=self.weight.device))
        if rotate_weight:
            with torch.no_grad():
                self.weight.copy_(rotation.rotate(self.weight))

    def _smooth_weight(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.smooth.to(w.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.rotation(x) / self.smooth.to(x.dtype)
        return super().forward(x, None if self.merged else self._smooth_weight)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """``W ← Q_w(LWC((W·R) ⊙ s))`` in fp64; ``s`` stays (online division), frozen."""
        self.merge(self._smooth_weight, None, quantize=True)
        self.smooth.requires_grad_(False)

    def mark_merged(self) -> None:
        """The reparameterised structure without computing anything (the values come from a state dict)."""
        self.clip_factor_w_max = self.clip_factor_w_min = None
        self.merged, self.weight_is_quantized = True, self.spec.quantizes_weights
        self.smooth.requires_grad_(False)


def block_runner(view: QuantView, global_tokens: str) -> BlockRunner:
    """``sequence``: ``view.run_block``; ``frame``: global blocks on ``[B·S, P, C]`` (the released code's bug)."""
    if global_tokens == "sequence":
        return view.run_block

    def frame_shaped(ref: BlockRef, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if ref.kind != "global":
            return view.run_block(ref, x, pos)
        b, s, p, c = x.shape
        return ref.module(x.reshape(b * s, p, c), pos.reshape(b * s, p, 2)).reshape(b, s, p, c)

    return frame_shaped


def _rotations(ref: BlockRef, seed: int) -> dict[str, HadamardRotation]:
    return {short: HadamardRotation(ref.linears[short].in_features,
                                    rotation_generator("quantvggt", seed, f"{ref.name}.{path}"))
            for short, path in LINEAR_PATHS.items()}


def _act_statistics(runner: BlockRunner, ref: BlockRef, data: BlockData, rotations: dict[str, HadamardRotation],
                    clips: int, momentum: float) -> dict[str, torch.Tensor]:
    """Per linear: EMA over the first ``clips`` clips of ``mean over the leading dim of max over tokens of
    |x·R|`` (as the released code; the leading dim is the frames in frame blocks, the batch in global blocks)."""
    stats: dict[str, torch.Tensor] = {}

    def hook(short: str):
        def record(_module, args):
            x = rotations[short](args[0].detach().float())
            cur = x.abs().reshape(x.shape[0], -1, x.shape[-1]).amax(dim=1).mean(dim=0)
            stats[short] = cur if short not in stats else momentum * stats[short] + (1 - momentum) * cur
        return record

    handles = [ref.linears[s].register_forward_pre_hook(hook(s)) for s in LINEAR_PATHS]
    try:
        with torch.no_grad():
            for sample in data.inputs[:clips]:
                runner(ref, sample.x.to(data.device, torch.float32), sample.pos.to(data.device))
    finally:
        for h in handles:
            h.remove()
    return stats


def _install(ref: BlockRef, spec: QuantSpec, config: QuantVGGTConfig, rotations: dict[str, HadamardRotation],
             rotate_weights: bool = True) -> dict[str, SmoothRotLinear]:
    layers = {}
    for short, path in LINEAR_PATHS.items():
        parent_name, _, child = path.rpartition(".")
        layers[short] = SmoothRotLinear(ref.linears[short], spec, rotations[short], lwc=config.lwc, lac=config.lac,
                                        rotate_weight=rotate_weights)
        setattr(ref.module.get_submodule(parent_name), child, layers[short])
    ref.linears = dict(layers)
    return layers


@torch.no_grad()
def _init_smoothing(layers: dict[str, SmoothRotLinear], unrotated: dict[str, torch.Tensor],
                    act: dict[str, torch.Tensor], config: QuantVGGTConfig) -> None:
    for short, layer in layers.items():
        w = unrotated[short] if config.smooth_weight_stat == "unrotated" else layer.weight
        w_max = w.abs().amax(dim=0).float()
        s = (act[short].to(w_max.device).pow(config.alpha) / w_max.pow(1 - config.alpha)).clamp(min=1e-5)
        layer.smooth.copy_(s)


def calibrate_block(view: QuantView, ref: BlockRef, data: BlockData, config: QuantVGGTConfig, spec: QuantSpec,
                    runner: BlockRunner) -> dict:
    """Wrap block ``ref``'s linears, initialise ``s``, learn ``s`` and the clips, reparameterise."""
    start = time.perf_counter()
    block = ref.module
    dtype = ref.param_dtype
    block.float()
    rotations = {k: r.to(data.device) for k, r in _rotations(ref, config.seed).items()}
    clips = len(data.inputs)
    act = (_act_statistics(runner, ref, data, rotations, max(1, math.floor(clips * config.stat_fraction)),
                           config.stat_momentum) if config.smooth else {})
    unrotated = {k: lin.weight.detach().clone() for k, lin in ref.linears.items()}
    layers = _install(ref, spec, config, rotations)
    if config.smooth:
        _init_smoothing(layers, unrotated, act, config)
    del unrotated
    block.requires_grad_(False)
    smooth = [lay.smooth for lay in layers.values()] if config.smooth else []
    clip_params = [p for lay in layers.values() for p in lay.clip_parameters()]
    for p in smooth + clip_params:
        p.requires_grad_(True)
    groups = [{"params": ps, "lr": lr} for ps, lr in ((smooth, config.smooth_lr), (clip_params, config.clip_lr)) if ps]
    train = bool(groups) and not spec.is_fp and config.epochs > 0
    epoch_losses, first, total = [], None, config.epochs * clips if train else 0
    if train:
        optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1), eta_min=config.eta_min)
        with torch.enable_grad():
            for _ in range(config.epochs):
                values = []
                for x, pos, target in data.batches():  # one clip per step (QuantVGGT's batch 1)
                    loss = F.mse_loss(runner(ref, x, pos), target)  # plain MSE, not normalised
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    values.append(loss.item())
                    first = values[0] if first is None else first
                epoch_losses.append(sum(values) / len(values))
    for layer in layers.values():
        layer.reparameterize()
    block.requires_grad_(False)
    block.to(dtype)
    return {"loss_init": first, "loss_final": epoch_losses[-1] if epoch_losses else None,
            "epoch_losses": epoch_losses, "steps": total, "calib_s": time.perf_counter() - start}


def rebuild_quantvggt(view: QuantView, config: QuantVGGTConfig, spec: QuantSpec) -> None:
    """The structure ``quantvggt`` leaves (reparameterised ``SmoothRotLinear``s), for a strict state-dict load."""
    for ref in view.blocks:
        for layer in _install(ref, spec, config, _rotations(ref, config.seed), rotate_weights=False).values():
            layer.mark_merged()


@register(QuantVGGTConfig, rebuild=rebuild_quantvggt, calibrated=True)
def quantvggt(view: QuantView, config: QuantVGGTConfig, spec: QuantSpec, ctx: QuantContext) -> dict:
    calib = ctx.require_calib("QuantVGGT")
    start = time.perf_counter()
    device = ctx.device
    clips = split_clips(calib, config.sampling.pool_size)
    sampling: dict = {"enabled": False, "pool": len(clips)}
    if config.sampling.enabled and not spec.is_fp:
        picked, report = diverse_sample(view, clips, config.sampling, device)
        sampling = {"enabled": True, **report}
        clips = [clips[i] for i in picked]
    sample_s = time.perf_counter() - start
    runner = block_runner(view, config.global_tokens)

    def block_fn(ref: BlockRef, data: BlockData) -> dict:
        return calibrate_block(view, ref, data, config, spec, runner)

    # the default runner (None) lets the engine share FP inputs/targets through the target store, if one is given
    engine_runner = None if config.global_tokens == "sequence" else runner
    result = calibrate_blocks(view, clips, block_fn, propagate="fp", device=device, runner=engine_runner,
                              cache_dtype=CACHE_DTYPES[config.cache_dtype], description="quantvggt",
                              store=ctx.target_store, precision=ctx.precision)
    result.update({"quantize_s": time.perf_counter() - start, "sampling_s": sample_s, "sampling": sampling,
                   "calibration_clips": len(clips), "quantized_linears": 0 if spec.is_fp else 4 * len(view.blocks),
                   "config": dataclasses.asdict(config)})
    return result


__all__ = ["QuantVGGTConfig", "SmoothRotLinear", "block_runner", "quantvggt", "rebuild_quantvggt"]
