"""Save a quantized model and load it later for evaluation without recalibrating.

``save_quantized`` writes ``quantized.safetensors`` (the whole state dict, transforms and clipping included)
and ``quantized.yaml`` (the model node, the quantizer node and the bits that made it). ``quantizer=load``
rebuilds the structure from those and loads the tensors strictly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from fgq.io import atomic_write, save_state_dict
from fgq.models.adapter import QuantView
from fgq.models.checkpoint import CheckpointError, check_state_dict
from fgq.quant.context import QuantContext
from fgq.quant.registry import rebuild, register
from fgq.quant.spec import QuantSpec


def _architecture(model: torch.nn.Module) -> dict:
    return {"family": model.family, **OmegaConf.to_container(OmegaConf.create(getattr(model, "arch", {})))}


def save_quantized(model: torch.nn.Module, quantizer: DictConfig, spec: QuantSpec, out_dir: Path) -> Path:
    """Write ``quantized.safetensors`` + ``quantized.yaml`` into ``out_dir`` (each file atomically)."""
    path = out_dir / "quantized.safetensors"
    meta = {"model": _architecture(model), "quantizer": OmegaConf.to_container(quantizer, resolve=True),
            "bits": spec.to_dict()}
    save_state_dict(model, path)
    atomic_write(path.with_suffix(".yaml"), lambda tmp: tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(meta))))
    return path


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
    rebuild(view.model, instantiate(meta.quantizer), saved_spec)
    try:
        state = load_file(str(path))
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:200]})") from None
    check_state_dict(view.model, state, path)
    view.model.load_state_dict(state, strict=True)
    return {"quantize_s": time.perf_counter() - start, "loaded_from": str(path)}

