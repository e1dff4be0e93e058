"""The quantizer registry and the one entry point ``quantize(model, config, spec, calib, fisher)``.

Each algorithm has a config dataclass (what ``conf/quantizer/*.yaml`` instantiates) registered with the
function that applies it; the config's type selects the algorithm, as in torchao's ``quantize_``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fgq.models.adapter import QuantView
from fgq.quant.spec import QuantSpec

_REGISTRY: dict[type, Callable[..., dict]] = {}
# How to rebuild a quantized model's structure (no calibration) before loading its saved state dict.
_REBUILD: dict[type, Callable[[QuantView, Any, QuantSpec], None]] = {}
_NEEDS_CALIBRATION: set[type] = set()


def register(config_type: type, rebuild: Callable[[QuantView, Any, QuantSpec], None] | None = None,
             calibrated: bool = False) -> Callable:
    """``calibrated``: the algorithm needs calibration clips (checked before any work starts)."""
    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        _REGISTRY[config_type] = fn
        if rebuild is not None:
            _REBUILD[config_type] = rebuild
        if calibrated:
            _NEEDS_CALIBRATION.add(config_type)
        return fn

    return wrap


def needs_calibration(config: Any) -> bool:
    """Registered with ``calibrated=True``, or a config whose ``needs_calibration`` attribute says so (e.g. a
    quantizer that needs data only in some settings)."""
    return bool(getattr(config, "needs_calibration", type(config) in _NEEDS_CALIBRATION))


def rebuild(model: nn.Module, config: Any, spec: QuantSpec) -> None:
    """Give ``model`` the module structure that ``quantize(model, config, spec)`` produces, without calibrating,
    so that a saved quantized state dict loads strictly."""
    fn = _REBUILD.get(type(config))
    if fn is None:
        raise ValueError(f"quantizer {type(config).__name__} cannot be reloaded (no rebuild registered)")
    fn(model.quant_view(), config, spec)


def quantize(
    model: nn.Module,
    config: Any,
    spec: QuantSpec,
    calib: Iterable[dict] | None = None,
    fisher: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Quantize ``model`` in place through its quantization view; returns cost figures (time, memory, ...).

    ``calib`` yields batches of the common batch type; ``fisher`` is ``[tasks, blocks, channels]`` (FGQ).
    """
    fn = _REGISTRY.get(type(config))
    if fn is None:
        known = ", ".join(sorted(t.__name__ for t in _REGISTRY))
        raise ValueError(f"no quantizer registered for {type(config).__name__} (known: {known})")
    return fn(model.quant_view(), config, spec, calib=calib, fisher=fisher, device=torch.device(device))
