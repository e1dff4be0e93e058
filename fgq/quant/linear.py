"""``QuantLinear``: a linear layer whose input is fake-quantized per token and whose weight is fake-quantized
per channel/group. It keeps the original ``weight``/``bias`` parameters, so state-dict keys do not change."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgq.quant.primitives import quantize_activation, quantize_weight
from fgq.quant.spec import QuantSpec


class QuantLinear(nn.Module):
    def __init__(self, linear: nn.Linear, spec: QuantSpec) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.spec = spec
        # True once an algorithm (RTN, GPTQ) has written the de-quantized weight in place.
        self.weight_is_quantized = False

    def quantized_weight(self) -> torch.Tensor:
        if self.weight_is_quantized or not self.spec.quantizes_weights:
            return self.weight
        s = self.spec
        return quantize_weight(self.weight, s.w_bits, s.w_sym, s.group_size, s.w_clip_ratio, s.grid)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        return quantize_activation(x, s.a_bits, s.a_sym, s.a_clip_ratio, s.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, {self.spec.tag}"


def swap_linears(model: nn.Module, names: list[str], spec: QuantSpec) -> dict[str, QuantLinear]:
    """Replace the named ``nn.Linear`` modules of ``model`` by ``QuantLinear`` (in place)."""
    swapped = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        layer = getattr(parent, child)
        if isinstance(layer, QuantLinear):
            raise ValueError(f"{name} is already quantized: quantize a fresh model")
        swapped[name] = QuantLinear(layer, spec)
        setattr(parent, child, swapped[name])
    return swapped
