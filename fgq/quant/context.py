"""What a job hands a quantizer: ``QuantContext``. Each algorithm takes what it needs from it (calibration clips,
the device, the shared FP-target store, the Fisher cache switch, where to put pictures), so the caller never
needs to know which algorithm it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from fgq.fisher.compute import FisherConfig
from fgq.quant.calibrate import TargetStore
from fgq.runtime import autocast_dtype


@dataclass
class QuantContext:
    """``calib``: batches of the common batch type (``None`` for data-free quantizers). ``target_store``: FP block
    inputs/targets shared by the FP-propagating calibrations of a sweep (``fgq.caches.TargetCache``).
    ``use_caches=False``: the Fisher cache is neither read nor written (``cache=none``). ``fisher``: a Fisher
    ``[tasks, blocks, channels]`` the caller already has (FGQ then skips computing one); ``fisher_config``: the job's
    ``fisher`` group (how a Fisher is computed and turned into weights; defaults when ``None``). ``out_dir`` and
    ``log_images``: where a quantizer writes the pictures it makes (FGQ's Fisher heatmaps) and how they reach the
    job's loggers. ``precision``: the job's ``trainer.precision`` (``None``: ``auto``, bf16 autocast on CUDA and fp32
    on CPU); the Fisher pass, the calibration's embedding pass and FlatQuant's training forwards run under its
    autocast, as the evaluation does."""

    calib: Iterable[dict] | None = None
    device: torch.device | str = "cpu"
    target_store: TargetStore | None = None
    use_caches: bool = True
    fisher: torch.Tensor | None = None
    fisher_config: FisherConfig | None = None
    out_dir: Path | None = None
    log_images: Callable[[dict[str, Path]], None] | None = None
    precision: str | None = None

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)

    @property
    def amp(self) -> bool:
        """Whether the job's forwards run under autocast (the Fisher's switch)."""
        return autocast_dtype(self.device, self.precision) is not None

    def require_calib(self, who: str) -> Iterable[dict]:
        """The calibration batches, or one clear error naming the quantizer that needs them."""
        if self.calib is None:
            raise ValueError(f"{who} needs calibration data (calib.source)")
        return self.calib
