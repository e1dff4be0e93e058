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

# The config groups' dataclass schemas (Hydra's ConfigStore), before any config is composed.
from fgq import schemas  # noqa: E402

schemas.register()
