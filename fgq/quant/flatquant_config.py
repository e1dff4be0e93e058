"""FlatQuant's settings (``fgq/conf/quantizer/flatquant.yaml``): their own module so that the block (``flat_block``)
and the calibration (``flatquant``) both read them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fgq.quant.transforms import TRANSFORM_KINDS

DIAG_INITS = ("sq_style", "one_style")
CACHE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
STAGES = ("host", "pinned", "device")


@dataclass
class FlatQuantConfig:
    """FlatQuant calibration settings; defaults are FGQ's FlatQuant-for-VGGT values (the official FGQ code).

    ``batch_size``: clips per optimiser step (FGQ ``cali_bsz`` = 2); the cached calibration batches are split
    into clips and regrouped (all clips of one step must have the same shape; a last, smaller step keeps the
    remainder). ``None``: one step per calibration batch as the loader yields it (``calib.batch_size``).
    ``deactive_amp``: ``None`` = the job's precision (``trainer.precision``; auto: bf16 autocast on CUDA as FGQ,
    fp32 on CPU); ``True`` forces fp32 (FGQ's ``--deactive_amp``); ``False`` forces bf16 autocast.
    ``cache_dtype``: dtype of the cached block inputs/targets on the host (FGQ: bf16).
    ``stage``: where a block's cached inputs/targets sit while it is calibrated (CUDA only; the same numbers either
    way): ``host`` (pageable memory, copied every step: FGQ's code), ``pinned`` (page-locked, asynchronous copies)
    or ``device`` (copied once per block; costs twice the cache size of one block in device memory).
    ``seed``: seeds the transform initialisation of block ``i`` through its own ``torch.Generator``.
    """

    epochs: int = 15
    lr: float = 5e-3
    clip_lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup: bool = True
    warmup_iters: int = 16
    warmup_start_factor: float = 0.01
    eta_min_ratio: float = 1e-3
    batch_size: int | None = 2
    diag_alpha: float = 0.5
    diag_init: str = "sq_style"
    lwc: bool = True
    lac: bool = True
    add_diag: bool = True
    transform: str = "svd"
    split_qkv: bool = True
    cache_dtype: str = "bfloat16"
    stage: str = "pinned"
    seed: int = 0
    deactive_amp: bool | None = None

    def __post_init__(self) -> None:
        if self.diag_init not in DIAG_INITS:
            raise ValueError(f"quantizer.diag_init={self.diag_init!r}: use one of {', '.join(DIAG_INITS)}")
        if self.transform not in TRANSFORM_KINDS:
            raise ValueError(f"quantizer.transform={self.transform!r}: use one of {', '.join(TRANSFORM_KINDS)}")
        if self.cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"quantizer.cache_dtype={self.cache_dtype!r}: use one of {', '.join(CACHE_DTYPES)}")
        if self.stage not in STAGES:
            raise ValueError(f"quantizer.stage={self.stage!r}: use one of {', '.join(STAGES)}")
        if self.epochs < 0 or self.warmup_iters < 0:
            raise ValueError("quantizer.epochs and quantizer.warmup_iters must be >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"quantizer.batch_size={self.batch_size!r}: must be >= 1 or null")
        if not 0.0 <= self.diag_alpha <= 1.0:
            raise ValueError(f"quantizer.diag_alpha={self.diag_alpha!r}: must be in [0, 1]")

    def autocast_dtype(self, job: torch.dtype | None) -> torch.dtype | None:
        """The autocast dtype of the training forwards, given the job's (``None``: fp32)."""
        if self.deactive_amp is None:
            return job
        return None if self.deactive_amp else torch.bfloat16
