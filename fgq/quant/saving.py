"""Save a quantized model and load it later for evaluation without recalibrating.

``save_quantized`` writes ``quantized.safetensors`` (the whole state dict, transforms and clipping included)
and ``quantized.yaml`` (the model node, the quantizer node and the bits that made it). ``quantizer=load``
rebuilds the structure from those and loads the tensors strictly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from fgq.io import atomic_write, save_state_dict
from fgq.models.adapter import QuantView
from fgq.models.checkpoint import CheckpointError, check_state_dict
from fgq.quant.context import QuantContext
from fgq.quant.registry import rebuild, register
from fgq.quant.spec import QuantSpec

log = logging.getLogger(__name__)


def _architecture(model: torch.nn.Module) -> dict:
    return {"family": model.family, **OmegaConf.to_container(OmegaConf.create(getattr(model, "arch", {})))}


def save_quantized(model: torch.nn.Module, config: Any, spec: QuantSpec, out_dir: Path) -> Path:
    """Write ``quantized.safetensors`` + ``quantized.yaml`` into ``out_dir`` (each file atomically). ``config``: the
    quantizer's config dataclass (recorded with its class, so a reload rebuilds the same structure)."""
    path = out_dir / "quantized.safetensors"
    quantizer = {"_target_": f"{type(config).__module__}.{type(config).__qualname__}",
                 **OmegaConf.to_container(OmegaConf.structured(config))}
    meta = {"model": _architecture(model), "quantizer": quantizer, "bits": spec.to_dict()}
    save_state_dict(model, path)
    atomic_write(path.with_suffix(".yaml"), lambda tmp: tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(meta))))
    return path


def _saved_config(node: DictConfig, path: Path) -> Any:
    """The quantizer config recorded in ``quantized.yaml``. Keys its class no longer has are settings that only
    steered calibration (e.g. the ``fisher`` node FGQ files held before the Fisher became a job-level group):
    the structure a reload rebuilds does not depend on them, so they are left out, and said so."""
    values = OmegaConf.to_container(node)
    target = str(values.pop("_target_", ""))
    try:
        cls = get_class(target)
    except Exception:
        raise CheckpointError(f"{path}: quantizer class {target!r} of its quantized.yaml is unknown") from None
    known = {f.name for f in fields(cls)}
    ignored = sorted(set(values) - known)
    if ignored:
        log.info("%s: ignoring calibration-only settings %s of an older quantized.yaml", path, ", ".join(ignored))
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), {k: values[k] for k in known & set(values)}))


@dataclass
class LoadConfig:
    """Re-evaluate a saved quantized model: ``quantizer=load quantizer.path=<job>/quantized.safetensors``."""

    path: str = "???"


def saved_spec(config: LoadConfig) -> QuantSpec:
    """The bits a saved quantized model was made with (``quantizer=load`` evaluates with these)."""
    meta_path = Path(config.path).with_suffix(".yaml")
    if not meta_path.is_file():
        raise CheckpointError(f"quantizer.path={config.path}: {meta_path.name} is missing next to it (both files "
                              "come from a run with save_quantized=true)")
    return QuantSpec(**OmegaConf.to_container(OmegaConf.load(meta_path).bits))


@register(LoadConfig, saveable=False, spec_of=saved_spec)
def load_quantized(view: QuantView, config: LoadConfig, spec: QuantSpec, ctx: QuantContext) -> dict:
    """Rebuild the quantized structure recorded next to ``config.path`` and load its tensors strictly."""
    start = time.perf_counter()
    path = Path(config.path)
    meta_path = path.with_suffix(".yaml")
    if not path.is_file() or not meta_path.is_file():
        raise CheckpointError(f"quantizer.path={path}: needs {path.name} and {meta_path.name} from a run with "
                              "save_quantized=true")
    meta = OmegaConf.load(meta_path)
    if OmegaConf.to_container(meta.model) != _architecture(view.model):
        raise CheckpointError(f"{path} was quantized from a different model architecture than model=… here; "
                              "use the model config it was made with")
    saved_spec = QuantSpec(**OmegaConf.to_container(meta.bits))
    if saved_spec != spec:
        raise CheckpointError(f"{path} holds a {saved_spec.tag} model (bits {saved_spec.to_dict()}); "
                              f"run with the same bits, e.g. bits={saved_spec.tag}")
    rebuild(view.model, _saved_config(meta.quantizer, path), saved_spec)
    try:
        state = load_file(str(path))
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:200]})") from None
    check_state_dict(view.model, state, path)
    view.model.load_state_dict(state, strict=True)
    return {"quantize_s": time.perf_counter() - start, "loaded_from": str(path)}

