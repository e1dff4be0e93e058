"""RTN: round-to-nearest. Weights are fake-quantized once from their own range; activations (if quantized)
use the dynamic per-token quantizer with no clipping. No data, no transforms."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from fgq.models.adapter import QuantView
from fgq.quant.context import QuantContext
from fgq.quant.linear import swap_linears
from fgq.quant.registry import register
from fgq.quant.spec import QuantSpec


@dataclass
class RTNConfig:
    """RTN has no options: the bits group says everything."""


def rebuild_quantized_linears(view: QuantView, config: object, spec: QuantSpec) -> None:
    """RTN and GPTQ leave plain ``QuantLinear``s holding de-quantized weights."""
    if spec.is_fp:
        return
    for layer in swap_linears(view.model, list(view.linear_names()), spec).values():
        layer.weight_is_quantized = True


@register(RTNConfig, rebuild=rebuild_quantized_linears)
def rtn(view: QuantView, config: RTNConfig, spec: QuantSpec, ctx: QuantContext) -> dict:
    start = time.perf_counter()
    if spec.is_fp:
        return {"quantize_s": 0.0, "quantized_linears": 0}
    layers = swap_linears(view.model, list(view.linear_names()), spec)
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.copy_(layer.quantized_weight())
            layer.weight_is_quantized = True
    return {"quantize_s": time.perf_counter() - start, "quantized_linears": len(layers)}
