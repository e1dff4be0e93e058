"""fgq: task-aware post-training quantization of feed-forward 3D reconstruction transformers."""

import os
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

# MKL's default kernels depend on memory alignment, so two runs of one seed could differ in the last bits on
# CPU (seen as metrics differing between identical jobs). Conditional numerical reproducibility makes them
# identical; it is read at MKL's first call, so setting it here (before any compute) suffices.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

ROOT = Path(__file__).resolve().parents[1]
# ``${fgq_root:}`` in configs: the repository (shipped weights, caches), wherever the command is run from.
OmegaConf.register_new_resolver("fgq_root", lambda: str(ROOT), replace=True)
