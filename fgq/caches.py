"""Caches shared by the jobs of a sweep (and by later sweeps): FP evaluation results and FP block targets, under
``paths.cache_dir`` next to the Fisher cache (``fgq/fisher/cache.py``).

Keys are sha256 digests of everything an entry depends on: the model config with the checkpoint file's identity
(path, size, mtime), the data config, the calibration settings, the device and precision, and a digest of the
source code that computes the entry (so a fixed metric or model bug never serves an old number). Dataset files
are identified by their configured paths only: after changing files under a dataset root, delete the cache (or
run with ``cache=none``). Every file is written atomically, and an entry made of several files (FP targets) is
only read once its ``complete.json`` marker exists, so a job killed half-way never leaves a usable half entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fgq.digest import data_digest, source_digest
from fgq.io import atomic_write, nan_json, write_json_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = "fgq-cache-v1"  # bump when an entry's layout or meaning changes
# Source that determines FP outputs, FP metrics and calibration targets (the key changes when any of it does).
CODE = ("models", "metrics", "data", "evaluation.py", "module.py", "quant/calibrate.py")  # in the package


def digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def code_digest() -> str:
    return source_digest(CODE)


def file_identity(path: str) -> dict:
    """A checkpoint's identity without reading it: resolved path, size and modification time."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        return {"path": str(p), "missing": True}
    stat = p.stat()
    return {"path": str(p), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(model_cfg: DictConfig) -> dict:
    node = OmegaConf.to_container(model_cfg, resolve=True)
    if node.get("checkpoint"):
        node["checkpoint"] = file_identity(str(node["checkpoint"]))
    return node


def fp_eval_key(cfg: DictConfig, device: str, precision: str) -> str:
    """FP metrics depend on the model, the evaluation sets and their protocols, the device and precision, the seed."""
    return digest({
        "version": CACHE_VERSION, "code": code_digest(), "model": model_identity(cfg.model),
        "eval": OmegaConf.to_container(cfg.dataset.eval, resolve=True), "device": device, "precision": precision,
        "seed": cfg.seed,
    })


def fp_targets_key(cfg: DictConfig, device: str, precision: str) -> str:
    """FP block inputs/targets depend on the model, the calibration clips (their config), the device and the
    precision (the embedding pass runs under its autocast); ``TargetCache.open`` adds the cache dtype and the block
    list."""
    calib = OmegaConf.to_container(cfg.calib, resolve=True)
    sources = calib.pop("sources", None) or {}
    calib["data"] = sources.get(calib.get("source"))  # the chosen source only: the others do not matter
    return digest({"version": CACHE_VERSION, "code": code_digest(), "model": model_identity(cfg.model),
                   "calib": calib, "device": device, "precision": precision})


class ResultCache:
    """JSON values (the FP evaluation's ``{eval set: {task: {metric: value}}}``) as ``<dir>/<key>.json``."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def load(self, key: str) -> dict | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            log.warning("cache entry %s is unreadable (%s): recomputing", path, err)
            return None
        return nan_json(entry["value"]) if entry.get("key") == key else None  # null was NaN (strict JSON)

    def save(self, key: str, value: dict) -> Path:
        return write_json_atomic(self.path(key), {"key": key, "value": value})


class TargetSession:
    """One calibration's FP inputs (first block) and targets (every block) in ``<root>/<key>/``: read back on a
    hit, written block by block on a miss when the whole entry fits ``max_bytes``."""

    def __init__(self, folder: Path, max_bytes: float) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.hit = (folder / "complete.json").is_file()
        self.storing = False
        self._inputs: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.figures: dict = {"hit": self.hit, "stored": False}

    def _file(self, name: str) -> Path:
        return self.folder / f"{name}.safetensors"

    def _read(self, name: str, prefix: str) -> list[torch.Tensor]:
        with safe_open(str(self._file(name)), "pt") as f:
            names = f.keys()  # safe_open is not iterable
            keys = sorted((k for k in names if k.startswith(prefix)), key=lambda k: int(k.rsplit("_", 1)[1]))
            return [f.get_tensor(k) for k in keys]

    def _write(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        atomic_write(self._file(name), lambda tmp: save_file(tensors, str(tmp)))

    def load_inputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._inputs is None:
            self._inputs = list(zip(self._read("inputs", "x_"), self._read("inputs", "pos_"), strict=True))
        return self._inputs

    def load_targets(self, index: int) -> list[torch.Tensor]:
        return self._read(f"block-{index:03d}", "y_")

    def save_inputs(self, inputs: Sequence[tuple[torch.Tensor, torch.Tensor]], num_blocks: int) -> None:
        """Store only if the entry (inputs + one target set per block, each the inputs' size) fits the bound."""
        size = sum(x.numel() * x.element_size() for x, _ in inputs) * (num_blocks + 1)
        self.figures["size_mb"] = size / 2**20
        if size > self.max_bytes:
            log.info("FP targets: %.2f GB exceed cache.fp_targets_max_gb, not cached", size / 2**30)
            self.figures["skipped"] = "over cache.fp_targets_max_gb"
            return
        self.storing = True
        self._write("inputs", {**{f"x_{i}": x for i, (x, _) in enumerate(inputs)},
                               **{f"pos_{i}": p for i, (_, p) in enumerate(inputs)}})

    def save_targets(self, index: int, targets: Sequence[torch.Tensor]) -> None:
        if self.storing:
            self._write(f"block-{index:03d}", {f"y_{i}": y for i, y in enumerate(targets)})

    def close(self) -> dict:
        if self.storing:
            write_json_atomic(self.folder / "complete.json", {"size_mb": self.figures["size_mb"]})
            self.figures["stored"] = True
        return self.figures


class TargetCache:
    """The store ``QuantContext.target_store`` hands to the calibration engine (FP propagation only).

    ``loader``: the calibration loader the job's key describes. An algorithm that calibrates on other clips (a
    subset, a new order: QuantVGGT's sampling) gets a key from those clips' bytes instead."""

    def __init__(self, root: str | Path, key: str, max_gb: float, loader: Iterable[dict] | None = None) -> None:
        self.root, self.key, self.max_bytes, self.loader = Path(root), key, max_gb * 2**30, loader

    def open(self, blocks: Sequence[str], dtype: torch.dtype, calib: Iterable[dict]) -> TargetSession:
        clips = "configured loader" if calib is self.loader else data_digest(calib)  # the loader: no re-reading
        sub = digest({"key": self.key, "blocks": list(blocks), "dtype": str(dtype), "clips": clips})
        session = TargetSession(self.root / sub, self.max_bytes)
        if session.hit:
            try:  # a damaged entry (disk full, manual edits) is recomputed, not trusted
                session.load_inputs()
            except (SafetensorError, OSError, ValueError) as err:
                log.warning("FP targets cache %s is unreadable (%s): recomputing", session.folder, err)
                shutil.rmtree(session.folder, ignore_errors=True)
                session = TargetSession(self.root / sub, self.max_bytes)
        log.info("FP targets: %s", "loaded from the cache" if session.hit else "computing")
        return session
