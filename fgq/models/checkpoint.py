"""Strict checkpoint loading for VGGT and π3: ``.pt``/``.pth``/``.bin`` (``torch.load(weights_only=True)``)
and ``.safetensors``; state dict at the top level or under ``"model"``. A mismatch is an error that names
the file, never a partial load."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)
_SHOWN = 5


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded into the configured model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file (set model.checkpoint to an existing file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:  # zip-format checkpoints can be memory-mapped: no second full copy in RAM
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, random bytes, pickled code, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights only load failed" in reason.lower():  # torch's advice (weights_only=False) would run its code
            reason = ("it holds pickled Python objects besides tensors, which are never loaded since they can run "
                      "code; save a plain state dict or safetensors")
        raise CheckpointError(f"checkpoint {path}: not a readable checkpoint ({reason[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"checkpoint {path}: does not hold a state dict of named tensors")
    return state


def _first(names: list[str]) -> str:
    more = f", … (+{len(names) - _SHOWN})" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise one ``CheckpointError`` listing counts and the first missing / unexpected / wrong-shape keys."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)}≠{expected[k]}"
        for k in expected if k in state and tuple(state[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(keys)} ({_first(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise CheckpointError(
            f"checkpoint {path} does not match the configured {type(model).__name__}: " + "; ".join(parts)
            + " — check model=… and its size knobs"
        )
    check_finite(state, path)


def check_finite(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise one ``CheckpointError`` naming the tensors that hold NaN or infinity (a corrupt or diverged file)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path}: {len(bad)} tensor(s) hold NaN or infinity ({_first(bad)}); "
                              "the file is corrupt or comes from a diverged run")


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` strictly into ``model`` (which may live on the ``meta`` device: tensors are assigned,
    not copied). Keys under ``model.skipped_checkpoint_prefixes`` (VGGT's track head) are dropped with
    one logged line."""
    state = read_state_dict(path)
    skip = tuple(getattr(model, "skipped_checkpoint_prefixes", ()))
    skipped = [k for k in state if skip and k.startswith(skip)]
    if skipped:
        log.info("checkpoint %s: skipped %d keys under %s (not implemented: not used by fgq)",
                 path, len(skipped), "/".join(skip))
        state = {k: v for k, v in state.items() if k not in set(skipped)}
    check_state_dict(model, state, path)
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model
