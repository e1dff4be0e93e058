"""Where and in what precision a job runs: ``trainer.accelerator`` and ``trainer.precision`` resolved once, and the
autocast context the evaluation runs under (bf16 on CUDA by default; any mixed precision also on CPU)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from fgq.errors import ConfigError

# trainer.precision → the autocast dtype (None: no autocast). Names as Lightning's Trainer spells them.
AUTOCAST_DTYPES = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def resolve_device(accelerator: str) -> torch.device:
    """``auto``: CUDA when visible, else CPU; ``gpu``/``cuda`` without a visible CUDA device is a config error."""
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA device is visible (use trainer=cpu)")
        return torch.device("cuda")
    if accelerator == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"trainer.accelerator={accelerator}: use auto, cpu or gpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: ``bf16-mixed`` on CUDA, ``32-true`` on CPU; otherwise one of ``AUTOCAST_DTYPES``."""
    precision = str(precision)
    if precision == "auto":
        return "bf16-mixed" if device.type == "cuda" else "32-true"
    if precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"trainer.precision={precision}: use auto, {', '.join(AUTOCAST_DTYPES)}")
    return precision


def autocast_dtype(device: torch.device, precision: str | None) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None``: no autocast); ``None`` precision = ``auto``."""
    return AUTOCAST_DTYPES[resolve_precision(precision or "auto", device)]


def autocast(device: torch.device, precision: str | None) -> AbstractContextManager:
    dtype = autocast_dtype(device, precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
