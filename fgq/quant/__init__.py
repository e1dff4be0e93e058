"""Quantization: ``QuantSpec``, fake-quant primitives, ``QuantLinear``, and the algorithms behind one entry
point, ``quantize(model, config, spec, calib, fisher)``."""

from fgq.quant import rtn  # noqa: F401 — registers RTN
from fgq.quant.linear import QuantLinear
from fgq.quant.registry import quantize
from fgq.quant.rtn import RTNConfig
from fgq.quant.spec import QuantSpec

__all__ = ["QuantLinear", "QuantSpec", "RTNConfig", "quantize"]
