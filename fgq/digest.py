"""Content digests that key the caches (``fgq.caches``, ``fgq.fisher.cache``): a changed weight or clip changes
the key, so a cache entry is never stale."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence

import torch
from torch import nn

from fgq import PACKAGE


@functools.lru_cache(maxsize=8)
def source_digest(entries: tuple[str, ...]) -> str:
    """sha256 of the package's source files under ``entries`` (folders or files, relative to ``fgq/``): a cache
    keyed by it goes stale the moment the code that computes its entries changes."""
    h = hashlib.sha256()
    for entry in entries:
        path = PACKAGE / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(file.relative_to(PACKAGE).as_posix().encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """sha256 of the model class, its architecture (``model.arch`` and the module tree), and every state-dict
    tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    arch = {"class": type(model).__name__, "arch": getattr(model, "arch", None), "modules": repr(model)}
    h.update(json.dumps(arch, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def data_digest(batches: Sequence[dict]) -> str:
    """sha256 of the clips: image tensor bytes, shapes and each batch's ``meta`` (sequence, frame ids, ...)."""
    h = hashlib.sha256()
    for batch in batches:
        images = batch["images"].detach().to("cpu", torch.float32).contiguous()
        h.update(f"images|{tuple(images.shape)}".encode())
        h.update(images.reshape(-1).view(torch.uint8).numpy())
        h.update(json.dumps(batch.get("meta"), sort_keys=True, default=str).encode())
    return h.hexdigest()
