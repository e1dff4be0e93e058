"""QuaRot-style per-linear online Hadamard rotation (after QuaRot, Ashkboos et al.).

Every calibrated linear (qkv, proj, fc1, fc2 of each block; qkv fused, one rotation per input tensor) becomes a
``RotatedLinear`` with its own randomised Hadamard ``R = D·H/√n`` (``fgq.quant.hadamard``):

    y = Q_a( WHT(x ⊙ d)/√n ) · Q_w(W·R)ᵀ + b        (x·R online, W·R folded offline)

Since ``R·Rᵀ = I`` this is exact in floating point with the quantizers off (``quantize(..., QuantSpec())``
installs the rotations all the same, which is what the invariance test checks). The rotated weight is then
quantized per output channel by RTN (``weight_quantizer=rtn``: QuantVGGT's code with ``--not_smooth`` and
no LWC/LAC, the likely source of the VGGT papers' "QuaRot" rows) or GPTQ (``weight_quantizer=gptq``, on the
rotated, fake-quantized activations: the Hessian hook sees ``quantize_input(x)``, which rotates first).

This is not QuaRot's residual-stream rotation: nothing is fused into LayerNorm, the price is one fast
WHT per quantized linear per token. The rotation signs are seeded per (seed, linear name) and saved as buffers.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from fgq.models.adapter import LINEAR_PATHS, QuantView
from fgq.quant.context import QuantContext
from fgq.quant.gptq import GPTQConfig, gptq_blocks
from fgq.quant.hadamard import HadamardRotation, rotation_generator
from fgq.quant.linear import QuantLinear
from fgq.quant.registry import register
from fgq.quant.spec import QuantSpec

WEIGHT_QUANTIZERS = ("rtn", "gptq")


@dataclass
class QuaRotConfig:
    """``weight_quantizer``: ``rtn`` | ``gptq`` (with the ``gptq`` settings); ``seed``: the rotation signs."""

    weight_quantizer: str = "rtn"
    seed: int = 0
    gptq: GPTQConfig = field(default_factory=GPTQConfig)

    def __post_init__(self) -> None:
        if self.weight_quantizer not in WEIGHT_QUANTIZERS:
            raise ValueError(f"quantizer.weight_quantizer={self.weight_quantizer!r}: use one of "
                             f"{', '.join(WEIGHT_QUANTIZERS)}")

    @property
    def needs_calibration(self) -> bool:
        """Only the GPTQ weight path needs calibration clips (registry.needs_calibration reads this)."""
        return self.weight_quantizer == "gptq"


class RotatedLinear(QuantLinear):
    """A ``QuantLinear`` whose input is rotated online (``x·R``) before the per-token quantizer; the stored
    ``weight`` is ``W·R`` (rotated once when installed). Keys: ``weight``, ``bias``, ``rotation.signs``
    (+ ``rotation.block`` for non-power-of-two widths)."""

    def __init__(self, linear: nn.Linear, spec: QuantSpec, rotation: HadamardRotation,
                 rotate_weight: bool = True) -> None:
        super().__init__(linear, spec)
        if rotation.n != self.in_features:
            raise ValueError(f"rotation of size {rotation.n} for a linear with {self.in_features} inputs")
        self.rotation = rotation.to(self.weight.device)
        if rotate_weight:
            with torch.no_grad():
                self.weight.copy_(rotation.rotate(self.weight))

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        # Rotating here (not in forward) lets GPTQ's Hessian hook, which calls quantize_input, see x·R.
        return super().quantize_input(self.rotation(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rotated"


def install_rotations(view: QuantView, spec: QuantSpec, seed: int, rotate_weights: bool = True
                      ) -> dict[str, RotatedLinear]:
    """Replace every calibrated linear of ``view`` by a ``RotatedLinear`` (in place)."""
    layers = {}
    for name, linear in view.linear_names().items():
        if isinstance(linear, QuantLinear):
            raise ValueError(f"{name} is already quantized: quantize a fresh model")
        rotation = HadamardRotation(linear.in_features, rotation_generator("quarot", seed, name))
        parent_name, _, child = name.rpartition(".")
        layers[name] = RotatedLinear(linear, spec, rotation, rotate_weight=rotate_weights)
        setattr(view.model.get_submodule(parent_name), child, layers[name])
    for ref in view.blocks:  # keep the view's handles on the live modules
        ref.linears = {short: ref.module.get_submodule(path) for short, path in LINEAR_PATHS.items()}
    return layers


def _rotation_figures(layers: dict[str, RotatedLinear]) -> dict:
    fast = sum(layer.rotation.fast for layer in layers.values())
    return {"rotated_linears": len(layers), "fast_rotations": fast, "fallback_rotations": len(layers) - fast}


def rebuild_quarot(view: QuantView, config: QuaRotConfig, spec: QuantSpec) -> None:
    """The structure ``quarot`` leaves (``RotatedLinear``s holding rotated, de-quantized weights), for a
    strict state-dict load; the signs and weights come from the file."""
    for layer in install_rotations(view, spec, config.seed, rotate_weights=False).values():
        layer.weight_is_quantized = spec.quantizes_weights


@register(QuaRotConfig, rebuild=rebuild_quarot)
def quarot(view: QuantView, config: QuaRotConfig, spec: QuantSpec, ctx: QuantContext) -> dict:
    start = time.perf_counter()
    use_gptq = config.weight_quantizer == "gptq" and spec.quantizes_weights
    calib = ctx.require_calib("QuaRot with weight_quantizer=gptq") if use_gptq else None
    # GPTQ writes each weight itself; until then the weight quantizer is off (activations already quantized).
    layers = install_rotations(view, dataclasses.replace(spec, w_bits=16) if use_gptq else spec, config.seed)
    figures: dict = {}
    if use_gptq:
        figures = gptq_blocks(view, config.gptq, spec, calib, ctx.device, "quarot+gptq", ctx.precision)
    elif spec.quantizes_weights:
        with torch.no_grad():
            for layer in layers.values():
                layer.weight.copy_(layer.quantized_weight())
                layer.weight_is_quantized = True
    return {**figures, "quantize_s": time.perf_counter() - start, "quantized_linears": 0 if spec.is_fp
            else len(layers), "weight_quantizer": config.weight_quantizer, **_rotation_figures(layers)}


__all__ = ["QuaRotConfig", "RotatedLinear", "install_rotations", "quarot", "rebuild_quarot"]
