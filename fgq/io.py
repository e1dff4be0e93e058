"""Atomic file writes: a temporary file in the target's folder, then ``os.replace`` — a reader (or a crash)
never sees a half-written metrics.json, checkpoint or cache entry. Files get the permissions the process's umask
gives any new file (``mkstemp`` alone would leave them owner-only), and JSON is strict (NaN and infinity as
``null``)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def nan_json(value: Any) -> Any:
    """The inverse of ``finite_json`` for a tree that holds only numbers and strings (metrics, records): every
    ``None`` back to NaN."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: nan_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_json(v) for v in value]
    return value


# The parts of a job's metrics.json that hold only numbers (``null`` there was a NaN).
NUMERIC_PARTS = ("fp", "quant", "records")


def write_json_atomic(path: Path, data: dict) -> Path:
    text = json.dumps(finite_json(json.loads(json.dumps(data, default=float))), indent=2, allow_nan=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """A matplotlib figure as an image file (format from the suffix), atomically."""
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi))


def save_state_dict(model: torch.nn.Module, path: Path) -> Path:
    """The whole state dict as safetensors (CPU, contiguous), atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp)))
