"""Quantization: ``QuantSpec``, fake-quant primitives, ``QuantLinear``, and the algorithms behind one entry
point, ``quantize(model, config, spec, calib, fisher)``."""

from fgq.quant import fgq, flatquant, gptq, quantvggt, quarot, rtn, saving  # noqa: F401 — importing registers them
from fgq.quant.context import QuantContext
from fgq.quant.fgq import FGQConfig
from fgq.quant.flatquant_config import FlatQuantConfig
from fgq.quant.gptq import GPTQConfig
from fgq.quant.linear import QuantLinear
from fgq.quant.quantvggt import QuantVGGTConfig
from fgq.quant.quarot import QuaRotConfig
from fgq.quant.registry import quantize
from fgq.quant.rtn import RTNConfig
from fgq.quant.saving import LoadConfig, save_quantized
from fgq.quant.spec import QuantSpec

__all__ = [
    "FGQConfig",
    "FlatQuantConfig",
    "GPTQConfig",
    "LoadConfig",
    "QuaRotConfig",
    "QuantContext",
    "QuantLinear",
    "QuantSpec",
    "QuantVGGTConfig",
    "RTNConfig",
    "quantize",
    "save_quantized",
]
