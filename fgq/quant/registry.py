"""The quantizer registry and the one entry point ``quantize(model, config, spec, context)``.

Each algorithm has a config dataclass (what ``fgq/conf/quantizer/*.yaml`` instantiates) registered with the
function ``fn(view, config, spec, context) -> cost figures`` that applies it; the config's type selects the
algorithm, as in torchao's ``quantize_``. A registration also says whether the algorithm needs calibration
data, how to rebuild its structure for reloading, whether a model it made can be saved, and (for a config
that names a saved model) which bits the model really has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from fgq.models.adapter import QuantView
from fgq.quant.context import QuantContext
from fgq.quant.spec import QuantSpec

_REGISTRY: dict[type, Callable[..., dict]] = {}
# How to rebuild a quantized model's structure (no calibration) before loading its saved state dict.
_REBUILD: dict[type, Callable[[QuantView, Any, QuantSpec], None]] = {}
_NEEDS_CALIBRATION: set[type] = set()
_NOT_SAVEABLE: set[type] = set()
_SPEC_OF: dict[type, Callable[[Any], QuantSpec]] = {}


def register(config_type: type, rebuild: Callable[[QuantView, Any, QuantSpec], None] | None = None,
             calibrated: bool = False, saveable: bool = True,
             spec_of: Callable[[Any], QuantSpec] | None = None) -> Callable:
    """``calibrated``: the algorithm needs calibration clips (checked before any work starts). ``saveable=False``:
    ``save_quantized`` has nothing new to write (a reloaded model). ``spec_of(config)``: the bits the model will
    have whatever the job asked for (a saved model keeps the bits it was made with)."""
    def wrap(fn: Callable[..., dict]) -> Callable[..., dict]:
        _REGISTRY[config_type] = fn
        if rebuild is not None:
            _REBUILD[config_type] = rebuild
        if calibrated:
            _NEEDS_CALIBRATION.add(config_type)
        if not saveable:
            _NOT_SAVEABLE.add(config_type)
        if spec_of is not None:
            _SPEC_OF[config_type] = spec_of
        return fn

    return wrap


def saveable(config: Any) -> bool:
    return type(config) not in _NOT_SAVEABLE


def resolved_spec(config: Any, spec: QuantSpec) -> QuantSpec:
    """The bits ``quantize(model, config, spec)`` gives the model: ``spec``, unless the config fixes them."""
    fn = _SPEC_OF.get(type(config))
    return fn(config) if fn is not None else spec


def needs_calibration(config: Any) -> bool:
    """Registered with ``calibrated=True``, or a config whose ``needs_calibration`` attribute says so (e.g. a
    quantizer that needs data only in some settings)."""
    return bool(getattr(config, "needs_calibration", type(config) in _NEEDS_CALIBRATION))


def rebuild(model: nn.Module, config: Any, spec: QuantSpec) -> None:
    """Give ``model`` the module structure that ``quantize(model, config, spec)`` produces, without calibrating,
    so that a saved quantized state dict loads strictly. The new modules end up where the model's parameters are
    (a model already on the GPU stays whole there)."""
    fn = _REBUILD.get(type(config))
    if fn is None:
        raise ValueError(f"quantizer {type(config).__name__} cannot be reloaded (no rebuild registered)")
    device = next(model.parameters()).device
    fn(model.quant_view(), config, spec)
    model.to(device)


def quantize(model: nn.Module, config: Any, spec: QuantSpec, context: QuantContext | None = None,
             **fields: Any) -> dict:
    """Quantize ``model`` in place through its quantization view; returns cost figures (time, memory, ...).

    ``context`` (``QuantContext``) carries the calibration data, device, caches and output places; ``fields`` are
    a shorthand for a context built from them: ``quantize(model, config, spec, calib=clips, device="cuda")``.
    """
    if context is not None and fields:
        raise TypeError("quantize: pass either a QuantContext or its fields, not both")
    fn = _REGISTRY.get(type(config))
    if fn is None:
        known = ", ".join(sorted(t.__name__ for t in _REGISTRY))
        raise ValueError(f"no quantizer registered for {type(config).__name__} (known: {known})")
    return fn(model.quant_view(), config, spec, context if context is not None else QuantContext(**fields))
