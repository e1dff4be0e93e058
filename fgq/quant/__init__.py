"""Quantization: ``QuantSpec``, fake-quant primitives, ``QuantLinear``, and the algorithms behind one entry
point, ``quantize(model, config, spec, calib, fisher)``."""

from fgq.quant import gptq, rtn  # noqa: F401 — importing registers the algorithms
from fgq.quant.gptq import GPTQConfig
from fgq.quant.linear import QuantLinear
from fgq.quant.registry import quantize
from fgq.quant.rtn import RTNConfig
from fgq.quant.spec import QuantSpec

__all__ = ["GPTQConfig", "QuantLinear", "QuantSpec", "RTNConfig", "quantize"]
