"""The Fisher cache: safetensors files under ``paths.cache_dir``, keyed by a digest of everything the Fisher
depends on (model weights and structure, calibration clips, estimator, precision), shared by every job of a
sweep; a changed weight or clip changes the key, so an entry is never stale."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from fgq.digest import data_digest, model_digest, source_digest
from fgq.fisher.compute import CACHE_VERSION, TASKS, FisherConfig, compute_fisher, take_clips, use_amp
from fgq.io import atomic_write

log = logging.getLogger(__name__)

CODE = ("models", "fisher/compute.py")  # the source a Fisher depends on (the key changes when it does)


class FisherCache:
    """Fishers stored as ``<cache_dir>/fisher-<sha256>.safetensors`` (tensor ``fisher`` + metadata).

    The key covers the code that computes it (``CODE``), the model (weights and architecture), the clips (bytes and
    metadata), the tasks, the estimator (and for ``empirical`` its projections and seed) and the precision (bf16
    autocast or fp32); resolution and frames enter through the image shapes and are also recorded. Writes are atomic (a
    temporary file in the same folder, then ``os.replace``), so concurrent jobs of a sweep can share it."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.dir = Path(cache_dir)

    def key(self, model: nn.Module, batches: Sequence[dict], tasks: Sequence[str], estimator: str,
            num_projections: int, seed: int, amp: bool) -> tuple[str, dict]:
        shape = tuple(batches[0]["images"].shape)
        settings = {
            "version": CACHE_VERSION,
            "code": source_digest(CODE),
            "model": model_digest(model),
            "data": data_digest(batches),
            "clips": sum(b["images"].shape[0] for b in batches),
            "frames": shape[1],
            "resolution": list(shape[-2:]),
            "tasks": list(tasks),
            "estimator": estimator,
            "num_projections": num_projections if estimator == "empirical" else None,
            "seed": seed if estimator == "empirical" else None,
            "precision": "bf16-autocast" if amp else "fp32",
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        return key, settings

    def path(self, key: str) -> Path:
        return self.dir / f"fisher-{key}.safetensors"

    def load(self, key: str) -> torch.Tensor | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                fisher = f.get_tensor("fisher")
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            log.warning("Fisher cache %s is unreadable (%s): recomputing", path, err)
            return None
        if meta.get("key") != key or fisher.dim() != 3:
            log.warning("Fisher cache %s does not match its key: recomputing", path)
            return None
        return fisher

    def save(self, key: str, fisher: torch.Tensor, settings: dict, blocks: Sequence[str] = ()) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        meta = {"key": key, "settings": json.dumps(settings, sort_keys=True), "blocks": json.dumps(list(blocks))}
        tensor = fisher.detach().to("cpu", torch.float32).contiguous()
        return atomic_write(path, lambda tmp: save_file({"fisher": tensor}, str(tmp), metadata=meta))

    def get_or_compute(
        self,
        model: nn.Module,
        calib: Iterable[dict],
        tasks: Sequence[str] = TASKS,
        estimator: str = "summed_output",
        device: torch.device | str | None = None,
        num_projections: int = 8,
        num_clips: int | None = None,
        seed: int = 0,
        amp: bool | None = None,
    ) -> tuple[torch.Tensor, bool]:
        """``(fisher, hit)``: the cached Fisher for exactly these inputs, or a fresh one (then stored)."""
        batches = take_clips(calib, num_clips)  # read once: the key and the computation see the same clips
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        key, settings = self.key(model, batches, tasks, estimator, num_projections, seed, use_amp(dev, amp))
        cached = self.load(key)
        if cached is not None:
            log.info("Fisher: cache hit %s", self.path(key).name)
            return cached, True
        fisher = compute_fisher(model, batches, tasks=tasks, estimator=estimator, device=dev,
                                num_projections=num_projections, seed=seed, amp=amp)
        blocks = [ref.name for ref in model.quant_view().blocks]
        self.save(key, fisher, settings, blocks)
        log.info("Fisher: computed and cached %s", self.path(key).name)
        return fisher, False


def fisher_for(model: nn.Module, calib: Iterable[dict], config: FisherConfig,
               device: torch.device | str | None = None, amp: bool | None = None) -> tuple[torch.Tensor, bool]:
    """The Fisher of all tasks ``[3, L, C]`` the way ``config`` says (through the cache when
    ``config.cache_dir`` is set); returns ``(fisher, cache_hit)``. ``amp``: bf16 autocast (``None``: on CUDA only)."""
    kwargs = dict(tasks=TASKS, estimator=config.estimator, device=device, num_projections=config.num_projections,
                  num_clips=config.num_clips, seed=config.seed, amp=amp)
    if config.cache_dir:
        return FisherCache(config.cache_dir).get_or_compute(model, calib, **kwargs)
    return compute_fisher(model, calib, **kwargs), False
