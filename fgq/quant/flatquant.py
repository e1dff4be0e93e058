"""FlatQuant: learnable affine transforms, LWC and LAC, block-wise calibration, reparameterisation.

Follows FlatQuant (Sun et al.; code ``ruikangliu/FlatQuant``) as the official FGQ code ports it to VGGT (π3's
decoder blocks are the same ``Block`` class and get the same treatment).

Placement in one pre-norm block (``FlatQuantBlock``; ``x ⊙ c`` is a learnable diagonal, ``P = P_L ⊗ P_R``)::

    h = x + ls1( proj( AQ( mix_o( SDPA( rope(q_norm q), rope(k_norm k), v ) ) ) ) )
        (q, k, v) = qkv( AQ( (norm1(x) ⊙ c₁)·P₁ ) )        weights  W_qkv·diag(1/c₁)·P₁⁻ᵀ, then per head
                                                            W_v ← P_vᵀ·W_v, b_v ← b_v·P_v (after LWC)
        mix_o: per token X[heads, head_dim] ← P_oᵀ·X         weight   W_proj·(P_o ⊗ P_v)⁻ᵀ
    y = h + ls2( fc2( AQ( (GELU(fc1( AQ( (norm2(h) ⊙ c₂)·P₂ ) )) ⊙ c₃)·P₃ ) ) )
                                                            weights  W_1·diag(1/c₂)·P₂⁻ᵀ, W_2·diag(1/c₃)·P₃⁻ᵀ

``AQ`` is the per-token dynamic activation fake-quantiser with a learned clip pair (LAC); every weight is
clipped per output row (LWC) and fake-quantised per output channel. Transform names follow FGQ:
``ln_trans`` (P₁, c₁), ``v_trans`` (P_v, size head_dim), ``o_trans`` (P_o, size num_heads), ``fc1_trans``,
``fc2_trans``.

**qkv: split by default (``split_qkv=True``, bit-faithful to FGQ).** The fused ``attn.qkv`` weight is kept as
one ``[3C, C]`` tensor, but its input is fake-quantised three times, once per q/k/v row block, each with its own
LAC pair, exactly like FGQ's three ``q_proj/k_proj/v_proj`` linears (LWC is per output row either way).
``split_qkv=False`` uses one activation quantiser (one LAC pair) for the fused linear. Both are identical in FP.

**Two modes.** *Calibration*: the transforms are parameterised and every forward recomputes the transformed,
clipped, fake-quantised (STE) weights. *Eval* (after ``reparameterize()``): ``P`` matrices materialised, ``c₁``
and ``c₂`` folded into ``norm1``/``norm2`` (γ **and** β), ``P⁻ᵀ``/``1/c``/the V transform/LWC merged into the
weights in fp64 and the weight quantiser (RTN, per channel) applied once. What stays online: the Kronecker
matmuls before qkv/fc1/fc2, the head mix before proj, ``c₃`` before fc2, and per-token activation fake-quant.

**Quantiser-off behaviour.** LWC parameters exist only when weights are quantised (``w_bits < 16``), LAC
parameters only when activations are (``a_bits < 16``): clipping is part of the quantiser, so a W16A16
``FlatQuantBlock`` equals the FP block for any transforms.

**FGQ hook.** Every block loss goes through ``block_loss(output, target, channel_weight)``;
``flatquant_calibrate(..., channel_weight=fn)`` takes ``fn(ref) -> [C] tensor | None`` per block.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from fgq.errors import NonFiniteError
from fgq.models.adapter import BlockRef, QuantView
from fgq.quant.calibrate import BlockData, CalibSample, TargetStore, calibrate_blocks
from fgq.quant.context import QuantContext
from fgq.quant.flat_block import FlatQuantBlock
from fgq.quant.flatquant_config import CACHE_DTYPES, FlatQuantConfig
from fgq.quant.registry import register
from fgq.quant.spec import QuantSpec
from fgq.runtime import autocast_dtype

# ---------------------------------------------------------------------------------------------------------------
# Loss


def block_loss(
    output: torch.Tensor, target: torch.Tensor, channel_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block objective: ``L = mean over tokens and channels of w_c·(output − target)²`` (plain MSE when
    ``channel_weight`` is ``None``; FGQ passes a ``[C]`` weight broadcast over the last dimension).

    Returns ``(L / stopgrad(L), L.detach())``: the first is back-propagated (FlatQuant's normalisation, so the
    step follows ∇ log L and any constant factor of ``w`` cancels), the second is the un-normalised value to
    log. ``L = 0`` gives a zero loss instead of 0/0.
    """
    err = (output.float() - target.float()).square()
    if channel_weight is not None:
        err = err * channel_weight.to(err.device, err.dtype)
    loss = err.mean()
    value = loss.detach()
    return loss / value.clamp_min(torch.finfo(value.dtype).tiny), value


def _block_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"flatquant:{seed}:{index}".encode()))


def _replace_block(view: QuantView, ref: BlockRef, new: nn.Module) -> None:
    parent_name, _, child = ref.name.rpartition(".")
    setattr(view.model.get_submodule(parent_name), child, new)
    ref.module = new


def _input_absmax(view: QuantView, ref: BlockRef, data: BlockData) -> dict[str, torch.Tensor]:
    """Per-channel running max of |input| of qkv, fc1, fc2 over all calibration tokens (FP block, from 1e-5)."""
    stats: dict[str, torch.Tensor] = {}

    def hook(key: str):
        def record(_module, args):
            x = args[0].detach()
            m = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
            stats[key] = torch.maximum(stats.get(key, torch.full_like(m, 1e-5)), m)
        return record

    handles = [ref.linears[key].register_forward_pre_hook(hook(key)) for key in ("qkv", "fc1", "fc2")]
    try:
        with torch.no_grad():
            for s in data.inputs:
                view.run_block(ref, s.x.to(data.device, torch.float32), s.pos.to(data.device))
    finally:
        for h in handles:
            h.remove()
    return stats


def _step_groups(data: BlockData, batch_size: int | None) -> list[list[tuple[int, slice]]]:
    """Which (cached batch, rows) make up each optimiser step."""
    if batch_size is None:
        return [[(i, slice(None))] for i in range(len(data.inputs))]
    clips = [(i, slice(j, j + 1)) for i, s in enumerate(data.inputs) for j in range(s.x.shape[0])]
    return [clips[k:k + batch_size] for k in range(0, len(clips), batch_size)]


def _stage(data: BlockData, where: str) -> BlockData:
    """The block's cached inputs/targets where ``quantizer.stage`` says: ``host`` as cached (pageable host memory,
    copied every step, as FGQ), ``pinned`` (page-locked host memory: the per-step copies run asynchronously) or
    ``device`` (moved once for the whole block). The values are the same bytes in every case. Off CUDA: ``host``."""
    if data.device.type != "cuda" or where == "host":
        return data
    move = (lambda t: t.to(data.device)) if where == "device" else (lambda t: t.pin_memory())
    inputs = [CalibSample(move(s.x), move(s.pos)) for s in data.inputs]
    return BlockData(inputs, [move(t) for t in data.targets], data.device)


def _load_step(data: BlockData, group: list[tuple[int, slice]]) -> tuple[torch.Tensor, ...]:
    xs = [data.inputs[i].x[rows] for i, rows in group]
    if len({tuple(x.shape[1:]) for x in xs}) > 1:
        raise ValueError("calibration clips of one FlatQuant step differ in shape: use quantizer.batch_size=null")

    def gather(parts: list[torch.Tensor]) -> torch.Tensor:  # copy first (async from pinned memory), then join
        return torch.cat([t.to(data.device, non_blocking=True) for t in parts])

    x = gather(xs).float()
    pos = gather([data.inputs[i].pos[rows] for i, rows in group])
    target = gather([data.targets[i][rows] for i, rows in group]).float()
    return x, pos, target


def calibrate_block(
    view: QuantView, ref: BlockRef, data: BlockData, config: FlatQuantConfig, spec: QuantSpec,
    channel_weight: torch.Tensor | None = None, amp_dtype: torch.dtype | None = None,
) -> dict:
    """Wrap block ``ref`` in a ``FlatQuantBlock`` (installed in the model), calibrate it on FP inputs against FP
    targets (FlatQuant's block-wise calibration), reparameterise it. Returns the block's loss/step/time figures.
    ``amp_dtype``: the autocast of the training forwards (parameters stay fp32, as FGQ's); ``None``: fp32."""
    start = time.perf_counter()
    device = data.device
    block = ref.module
    dtype = ref.param_dtype
    data = _stage(data, config.stage)
    absmax = _input_absmax(view, ref, data) if (config.add_diag and config.diag_init == "sq_style") else None

    block.float()
    qblock = FlatQuantBlock(block, spec, config, _block_generator(config.seed, ref.index)).to(device)
    qblock.init_diagonals(absmax, config.diag_alpha, config.diag_init)
    _replace_block(view, ref, qblock)

    groups = _step_groups(data, config.batch_size)
    params = qblock.trainable_parameters()
    param_groups = [{"params": params["transforms"], "lr": config.lr}]
    if params["clips"]:
        param_groups.append({"params": params["clips"], "lr": config.lr * config.clip_lr_mult})
    optimizer = torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * len(groups)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(total, 1), eta_min=config.lr * config.eta_min_ratio)
    if config.warmup:
        warmup = torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=config.warmup_start_factor, total_iters=config.warmup_iters)
        scheduler = torch.optim.lr_scheduler.ChainedScheduler([warmup, scheduler])
    weight = channel_weight.to(device, torch.float32) if channel_weight is not None else None

    epoch_losses, first = [], None
    for _ in range(config.epochs):
        values = []
        for group in groups:
            x, pos, target = _load_step(data, group)
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                out = view.run_block(ref, x, pos)
            loss, value = block_loss(out, target, weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            values.append(value)  # kept on the device: no host sync inside the epoch
        epoch = torch.stack(values).double()
        if not bool(torch.isfinite(epoch).all()):  # one check per epoch: no host sync inside it
            step = int((~torch.isfinite(epoch)).nonzero()[0])
            raise NonFiniteError(f"{type(config).__name__.removesuffix('Config')} calibration: block {ref.name}, epoch "
                                 f"{len(epoch_losses) + 1}, step {step + 1}: the loss is {float(epoch[step])} "
                                 "(nothing is saved; try a lower quantizer.lr or trainer.precision=32-true)")
        first = float(epoch[0]) if first is None else first
        epoch_losses.append(float(epoch.mean()))
    qblock.reparameterize()
    qblock.to(dtype)
    return {
        "loss_init": first,  # un-normalised loss of the first step, before any update
        "loss_final": epoch_losses[-1] if epoch_losses else None,  # mean over the last epoch
        "epoch_losses": epoch_losses,
        "steps": total,
        "calib_s": time.perf_counter() - start,
    }


def flatquant_calibrate(
    view: QuantView, config: FlatQuantConfig, spec: QuantSpec, calib, device: torch.device,
    channel_weight: Callable[[BlockRef], torch.Tensor | None] | None = None, store: TargetStore | None = None,
    precision: str | None = None,
) -> dict:
    """FlatQuant over every block of ``view`` through ``calibrate_blocks`` (FP inputs, FP targets, shared through
    ``store`` when given). ``channel_weight(ref)`` gives block ``ref``'s ``[C]`` loss weight (FGQ) or ``None``
    (plain MSE). ``precision``: the job's (``fgq.runtime``; ``None`` = auto), unless ``config.deactive_amp`` is set."""
    if spec.is_fp:
        return {"quantize_s": 0.0, "quantized_linears": 0}

    amp_dtype = config.autocast_dtype(autocast_dtype(device, precision))

    def block_fn(ref: BlockRef, data: BlockData) -> dict:
        weight = channel_weight(ref) if channel_weight is not None else None
        return calibrate_block(view, ref, data, config, spec, weight, amp_dtype)

    with torch.enable_grad():
        result = calibrate_blocks(view, calib, block_fn, propagate="fp", device=device,
                                  cache_dtype=CACHE_DTYPES[config.cache_dtype], description="flatquant", store=store,
                                  precision=precision)
    splits = 3 if config.split_qkv else 1
    result.update({"quantized_linears": 4 * len(view.blocks),
                   "activation_quantizers": (3 + splits) * len(view.blocks), "config": asdict(config)})
    return result


def rebuild_flatquant(view: QuantView, config: FlatQuantConfig, spec: QuantSpec) -> None:
    """Give the model the structure ``quantize`` leaves (every block a reparameterised ``FlatQuantBlock``)
    without calibrating, so a saved quantized state dict loads strictly (the official FGQ code's load path). The
    values (merged weights, folded norms, matrices, c₃, LAC logits) then come from the state dict."""
    if spec.is_fp:
        return
    for ref in view.blocks:
        dtype = ref.param_dtype
        device = next(ref.module.parameters()).device  # transforms start on the host (seeded CPU generator)
        block = FlatQuantBlock(ref.module, spec, config, _block_generator(config.seed, ref.index)).to(device)
        block.reparameterize()
        block.to(dtype)
        _replace_block(view, ref, block)


@register(FlatQuantConfig, rebuild=rebuild_flatquant, calibrated=True)
def flatquant(view: QuantView, config: FlatQuantConfig, spec: QuantSpec, ctx: QuantContext) -> dict:
    return flatquant_calibrate(view, config, spec, ctx.require_calib("FlatQuant"), ctx.device,
                               store=ctx.target_store, precision=ctx.precision)
