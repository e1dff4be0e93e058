"""GPTQ: weight rounding with inverse-Hessian error feedback (Frantar et al., GPTQ; reference code ``IST-DASLab/gptq``).

Per block (in execution order, through the shared calibration engine with ``propagate="quant"``, so each
block sees the outputs of the already quantized prefix, as in the reference code):
1. the linears are ``QuantLinear``s; weights stay FP until GPTQ writes them, but activation quantizers are
   ON when ``a_bits < 16`` (as FlatQuant's GPTQ pass does), so every Hessian is built from the fake-quantized
   input the matmul really sees;
2. true-sequential groups ``[qkv] → [proj] → [fc1] → [fc2]``: before each group the block is rerun on all
   calibration batches, so later groups see the earlier ones already quantized (one pass for all four with
   ``true_sequential=False``); hooks accumulate ``H = (2/N)·Σ x xᵀ`` in fp32 (the reference ``add_batch``);
3. the reference ``fasterquant`` per linear; the de-quantized weight is written back (``weight_is_quantized``).

The quantizer grid is the project's (``spec.grid``: FlatQuant's signed grid by default, the GPTQ repo's unsigned
one as an option), via ``fgq.quant.primitives``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fgq.models.adapter import LINEAR_PATHS, BlockRef, QuantView
from fgq.quant.calibrate import BlockData, calibrate_blocks
from fgq.quant.context import QuantContext
from fgq.quant.linear import QuantLinear, swap_linears
from fgq.quant.primitives import fake_quant_with, qparams
from fgq.quant.registry import register
from fgq.quant.rtn import rebuild_quantized_linears
from fgq.quant.spec import QuantSpec

log = logging.getLogger(__name__)

QParams = tuple[torch.Tensor, torch.Tensor, int, int]


@dataclass
class GPTQConfig:
    """GPTQ options; the bit-widths, symmetry, groups and grid come from the ``QuantSpec``."""

    blocksize: int = 128  # columns per lazy-batch update (speed only; the result is the same up to rounding)
    percdamp: float = 0.01  # damping added to diag(H), relative to mean(diag H)
    act_order: bool = False  # quantize columns in order of decreasing diag(H)
    static_groups: bool = False  # with groups: fit every group's grid on the original W before any update
    true_sequential: bool = True  # [qkv] → [proj] → [fc1] → [fc2], rerunning the block before each group
    max_damp_retries: int = 5  # on a failed Cholesky, percdamp ×10 up to this many times
    cache_dtype: str = "float32"  # dtype of the cached block inputs (on CPU)


class HessianAccumulator:
    """Forward hook on a ``QuantLinear``: ``H = (2/N)·Σ_tokens x̂ x̂ᵀ`` of its (fake-quantized) input, fp32.
    ``N`` counts leading-dimension elements as the reference does (only H's scale depends on it)."""

    def __init__(self) -> None:
        self.H: torch.Tensor | None = None
        self.n = 0

    def __call__(self, module: QuantLinear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = module.quantize_input(inputs[0].detach())
        if x.dim() == 2:
            x = x[None]
        batch = x.shape[0]
        x = x.reshape(-1, x.shape[-1]).float()
        if self.H is None:
            self.H = torch.zeros(x.shape[1], x.shape[1], device=x.device, dtype=torch.float32)
        self.H *= self.n / (self.n + batch)
        self.n += batch
        x = math.sqrt(2 / self.n) * x
        self.H.addmm_(x.T, x)


@contextmanager
def _no_tf32() -> Iterator[None]:
    """TF32 matmuls would spoil H and its inverse (the reference turns them off globally; we restore)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _inverse_cholesky(H: torch.Tensor, percdamp: float, max_retries: int, name: str) -> tuple[torch.Tensor, float]:
    """Upper ``U`` with ``(H + damp·I)⁻¹ = UᵀU``; on failure (not PD, NaN) retry with percdamp ×10."""
    damp, mean_diag = percdamp, H.diagonal().mean()
    for attempt in range(max_retries + 1):
        damped = H.clone()
        damped.diagonal().add_(damp * mean_diag)
        try:
            L = torch.linalg.cholesky(damped)
            U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
            if bool(torch.isfinite(U).all()):
                if attempt:
                    log.warning("GPTQ %s: Cholesky failed with percdamp=%g; used percdamp=%g", name, percdamp, damp)
                return U, damp
        except torch.linalg.LinAlgError:
            pass
        damp *= 10
    raise RuntimeError(f"GPTQ {name}: H is not positive definite even with percdamp={damp / 10:g} "
                       f"({max_retries} retries); check the calibration inputs for NaN/inf")


def _fasterquant(
    W: torch.Tensor, H: torch.Tensor, spec: QuantSpec, blocksize: int = 128, percdamp: float = 0.01,
    act_order: bool = False, static_groups: bool = False, max_damp_retries: int = 5, name: str = "weight",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The reference ``fasterquant`` on one ``[out, in]`` weight; returns ``(Q, losses, percdamp used)``."""
    dtype, W, H = W.dtype, W.detach().float().clone(), H.detach().float().clone()
    columns, gs = W.shape[1], spec.group_size
    if gs is not None and columns % gs:
        raise ValueError(f"weight group size {gs} does not divide the input width {columns} ({name})")

    def fit(w: torch.Tensor) -> QParams:
        return qparams(w, spec.w_bits, spec.w_sym, weight=True, clip=spec.w_clip_ratio, grid=spec.grid)

    params = fit(W)  # per-channel grid on the rows as given (before dead columns are zeroed), as the reference
    dead = H.diagonal() == 0
    H.diagonal()[dead] = 1
    W[:, dead] = 0  # an input that is always 0: its weights are free, zero them
    static = [fit(W[:, g:g + gs]) for g in range(0, columns, gs)] if gs and static_groups else None
    perm = torch.argsort(H.diagonal(), descending=True, stable=True) if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    original = perm.tolist() if perm is not None else list(range(columns))
    U, damp = _inverse_cholesky(H, percdamp, max_damp_retries, name)
    del H
    if gs and static is None:
        # Refit groups on fully updated columns: keep each group inside one lazy block. (The reference refits
        # on W whose in-block updates are still pending when groupsize < blocksize.)
        blocksize = max(gs, blocksize // gs * gs)
    Q, losses = torch.zeros_like(W), torch.zeros_like(W)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1, U1, E1 = W[:, i1:i2].clone(), U[i1:i2, i1:i2], torch.zeros(W.shape[0], i2 - i1, device=W.device)
        for i in range(i2 - i1):
            col = i1 + i
            if static is not None:
                params = static[original[col] // gs]
            elif gs and col % gs == 0:
                params = fit(W1[:, i:i + gs])
            w, d = W1[:, i], U1[i, i]
            q = fake_quant_with(w[:, None], *params)[:, 0]
            Q[:, col], losses[:, col] = q, (w - q) ** 2 / d**2 / 2
            E1[:, i] = err = (w - q) / d
            W1[:, i + 1:] -= err[:, None] * U1[i, i + 1:][None]
        W[:, i2:] -= E1 @ U[i1:i2, i2:]  # lazy batch update of the later columns
    if perm is not None:
        inverse = torch.argsort(perm)
        Q, losses = Q[:, inverse], losses[:, inverse]
    return Q.to(dtype), losses, damp


def gptq_quantize_weight(
    W: torch.Tensor, H: torch.Tensor, spec: QuantSpec, blocksize: int = 128, percdamp: float = 0.01,
    act_order: bool = False, static_groups: bool = False, *, max_damp_retries: int = 5, name: str = "weight",
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ on one ``[out, in]`` weight with Hessian ``H`` ``[in, in]`` (e.g. ``(2/N)·XᵀX``).

    Returns the de-quantized ``Q`` (``W``'s dtype, original column order) and the per-weight losses
    ``(w − q)²/(2·U_ii²)`` ``[out, in]`` (their sum is the GPTQ objective estimate). Groups and the grid come
    from ``spec``; ``spec.w_bits == 16`` returns ``W`` unchanged.
    """
    if not spec.quantizes_weights:
        return W, torch.zeros_like(W, dtype=torch.float32)
    with _no_tf32():
        Q, losses, _ = _fasterquant(W, H, spec, blocksize, percdamp, act_order, static_groups, max_damp_retries, name)
    return Q, losses


def _collect_hessians(view: QuantView, ref: BlockRef, data: BlockData,
                      layers: dict[str, QuantLinear]) -> dict[str, HessianAccumulator]:
    accumulators = {short: HessianAccumulator() for short in layers}
    handles = [layer.register_forward_hook(accumulators[short]) for short, layer in layers.items()]
    try:
        with torch.no_grad():
            for x, pos, _ in data.batches():
                view.run_block(ref, x, pos)
    finally:
        for handle in handles:
            handle.remove()
    return accumulators


def gptq_blocks(view: QuantView, config: GPTQConfig, spec: QuantSpec, calib: Iterable[dict], device: torch.device,
                description: str, precision: str | None = None) -> dict:
    """GPTQ on the model's installed ``QuantLinear``s (plain, or rotated by QuaRot), block by block on the quantized
    prefix's outputs, in true-sequential groups as configured. Hessians and blocks are fp32 (no TF32) whatever the
    job's ``precision``, which reaches only the embedding pass."""
    steps = [[short] for short in LINEAR_PATHS] if config.true_sequential else [list(LINEAR_PATHS)]

    def block_fn(ref: BlockRef, data: BlockData) -> dict:
        losses, damps = {}, {}
        for step in steps:
            layers: dict[str, QuantLinear] = {s: ref.module.get_submodule(LINEAR_PATHS[s]) for s in step}
            accumulators = _collect_hessians(view, ref, data, layers)
            for short, layer in layers.items():
                name = f"{ref.name}.{LINEAR_PATHS[short]}"
                Q, loss, damp = _fasterquant(
                    layer.weight, accumulators.pop(short).H, spec, config.blocksize, config.percdamp,
                    config.act_order, config.static_groups, config.max_damp_retries, name)
                with torch.no_grad():
                    layer.weight.copy_(Q)
                layer.spec, layer.weight_is_quantized = spec, True
                losses[short], damps[short] = float(loss.sum()), damp
        return {"gptq_loss": losses, "gptq_percdamp": damps}

    with _no_tf32():
        return calibrate_blocks(view, calib, block_fn, propagate="quant", device=device,
                                cache_dtype=getattr(torch, config.cache_dtype), description=description,
                                precision=precision)


@register(GPTQConfig, rebuild=rebuild_quantized_linears, calibrated=True)
def gptq(view: QuantView, config: GPTQConfig, spec: QuantSpec, ctx: QuantContext) -> dict:
    """GPTQ is deterministic: the same clips and weights give the same result (no seed to set)."""
    start = time.perf_counter()
    if spec.is_fp:
        return {"quantize_s": 0.0, "quantized_linears": 0}
    if not spec.quantizes_weights:  # activation-only: nothing for GPTQ to do, the quantizers are dynamic
        layers = swap_linears(view.model, list(view.linear_names()), spec)
        return {"quantize_s": time.perf_counter() - start, "quantized_linears": len(layers)}
    calib = ctx.require_calib("GPTQ")
    # Weights stay FP (activations quantized) until GPTQ writes them, so un-quantized layers never use RTN.
    pending = dataclasses.replace(spec, w_bits=16)
    swap_linears(view.model, list(view.linear_names()), pending)
    result = gptq_blocks(view, config, spec, calib, ctx.device, "GPTQ", ctx.precision)
    quantized = sum(isinstance(m, QuantLinear) and m.weight_is_quantized for m in view.model.modules())
    return {**result, "quantize_s": time.perf_counter() - start, "quantized_linears": quantized}


__all__ = ["GPTQConfig", "HessianAccumulator", "gptq", "gptq_blocks", "gptq_quantize_weight"]
