"""FGQ: FlatQuant calibration whose block loss is weighted per channel by the task Fisher.

As the official FGQ code implements it: the activation Fisher ``[T, L, C]`` of the **FP** model
(``fgq.fisher.compute``) becomes per-block, per-channel weights ``w[l] ∈ R^C`` (``fisher_to_weights``), and block
``l``'s FlatQuant loss becomes ``mean(w[l] · (B̂_l(X) − B_l(X))²)`` (normalised as ``L / stopgrad(L)``).
Everything else is FlatQuant with the same settings, so ``FGQConfig`` has ``FlatQuantConfig``'s fields (the
Fisher's settings come with the context), and a model quantized by FGQ has FlatQuant's structure (same rebuild
for reloading).

The Fisher comes from the caller (``QuantContext.fisher``, ``[3, L, C]``, tasks in ``fgq.fisher.compute.TASKS``
order) or is computed here from the calibration data, through the cache when ``fisher.cache_dir`` is set and the
context allows caches; with ``QuantContext.out_dir`` its heatmaps are written there. With
``fisher.granularity=none`` no Fisher is computed and the calibration is FlatQuant's, bit for bit.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from fgq.fisher.cache import fisher_for
from fgq.fisher.compute import TASKS, FisherConfig, fisher_summary, fisher_to_weights
from fgq.fisher.plots import block_labels, save_fisher_figures
from fgq.models.adapter import QuantView
from fgq.quant.context import QuantContext
from fgq.quant.flatquant import FlatQuantConfig, flatquant_calibrate, rebuild_flatquant
from fgq.quant.registry import register
from fgq.quant.spec import QuantSpec


@dataclass
class FGQConfig(FlatQuantConfig):
    """FlatQuant's settings (``fgq/conf/quantizer/flatquant.yaml``). The Fisher's settings are the job's ``fisher``
    group (tasks, task weights, granularity, floor, normalisation, estimator: ``FisherConfig``), which reaches FGQ
    as ``QuantContext.fisher_config`` (defaults when absent), so there is one copy of them per job."""


def _weights_summary(weights: torch.Tensor, floor: float) -> dict:
    return {
        "min": float(weights.min()), "max": float(weights.max()),
        "floored_fraction": float((weights <= floor).float().mean()),
        "block_max": [float(v) for v in weights.amax(dim=1)],  # the strongest channel of each block (mean ≈ 1)
    }


def _save_pictures(view: QuantView, fisher: torch.Tensor, weights: torch.Tensor, ctx: QuantContext) -> None:
    paths = save_fisher_figures(fisher, ctx.out_dir, block_labels(view), weights=weights)
    if ctx.log_images is not None:
        ctx.log_images({f"fisher/{p.stem}": p for p in paths})


@register(FGQConfig, rebuild=rebuild_flatquant, calibrated=True)
def fgq(view: QuantView, config: FGQConfig, spec: QuantSpec, ctx: QuantContext) -> dict:
    calib, device, fisher = ctx.require_calib("FGQ"), ctx.device, ctx.fisher
    if iter(calib) is calib:  # a one-shot iterator: the Fisher pass must not use up FlatQuant's clips
        calib = list(calib)
    if spec.is_fp:
        return flatquant_calibrate(view, config, spec, calib, device, store=ctx.target_store,
                                   precision=ctx.precision)
    fc = ctx.fisher_config or FisherConfig()
    if not ctx.use_caches:
        fc = dataclasses.replace(fc, cache_dir=None)
    start = time.perf_counter()
    figures: dict = {"granularity": fc.granularity, "weight_tasks": list(fc.tasks)}
    weights = None
    if fc.granularity != "none" or fisher is not None:
        if fisher is None:
            fisher, hit = fisher_for(view.model, calib, fc, device, amp=ctx.amp)
            figures.update(source="cache" if hit else "computed", estimator=fc.estimator)
            if fc.cache_dir:
                figures["cache_hit"] = hit
        else:
            figures["source"] = "given"
        fisher = fisher.detach().float().cpu()
        expected = (len(TASKS), len(view.blocks), view.channels)
        if tuple(fisher.shape) != expected:
            raise ValueError(f"FGQ: the Fisher has shape {tuple(fisher.shape)}, expected {list(expected)} "
                             f"(tasks {', '.join(TASKS)} × blocks × channels)")
        figures.update(fisher_summary(fisher, TASKS, [ref.name for ref in view.blocks]))
        if fc.granularity != "none":
            weights = fisher_to_weights(fisher, fc.task_weight_vector(TASKS), fc.granularity, fc.floor,
                                        fc.normalize)
            figures["weights"] = _weights_summary(weights, fc.floor)
    fisher_s = time.perf_counter() - start  # the Fisher's share of FGQ's calibration cost (paper Table 6)
    if weights is not None and ctx.out_dir is not None:
        _save_pictures(view, fisher, weights, ctx)
    channel_weight = (lambda ref: weights[ref.index]) if weights is not None else None
    result = flatquant_calibrate(view, config, spec, calib, device, channel_weight=channel_weight,
                                 store=ctx.target_store, precision=ctx.precision)
    result["flatquant_s"] = result["quantize_s"]
    result["fisher_s"] = fisher_s
    result["quantize_s"] = result["quantize_s"] + fisher_s
    result["fisher"] = figures
    return result
