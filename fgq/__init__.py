"""fgq: task-aware post-training quantization of feed-forward 3D reconstruction transformers."""

import os
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

# MKL's default kernels depend on memory alignment, so two runs of one seed could differ in the last bits on
# CPU (seen as metrics differing between identical jobs). Conditional numerical reproducibility makes them
# identical; it is read at MKL's first call, so setting it here (before any compute) suffices.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

PACKAGE = Path(__file__).resolve().parent  # holds fgq/conf/ and the shipped weights/ (package data)
CONF_DIR = PACKAGE / "conf"
# Where caches (.cache/) and data/ live by default: the checkout when fgq runs from one, otherwise (an installed
# package) the directory the command is started in.
ROOT = PACKAGE.parent if (PACKAGE.parent / "pyproject.toml").is_file() else Path.cwd()
# ``${fgq_package:}`` (shipped weights) and ``${fgq_root:}`` (caches, data) in configs, wherever the command runs.
OmegaConf.register_new_resolver("fgq_package", lambda: str(PACKAGE), replace=True)
OmegaConf.register_new_resolver("fgq_root", lambda: str(ROOT), replace=True)
# ``${fgq_seed:OFFSET}``: the job's top-level ``seed`` plus OFFSET, so one ``seed=N`` changes every random choice of a
# job (calibration clips, quantizer initialisation, Fisher projections) while each keeps its official value at
# ``seed=0`` (e.g. ``${fgq_seed:42}`` is the official ``Random(42)``) and stays overridable on its own.
OmegaConf.register_new_resolver(
    "fgq_seed", lambda offset=0, *, _root_: int(_root_.get("seed") or 0) + int(offset), replace=True)

# The config groups' dataclass schemas (Hydra's ConfigStore), before any config is composed.
from fgq import schemas  # noqa: E402

schemas.register()
