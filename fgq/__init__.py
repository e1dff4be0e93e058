"""fgq: task-aware post-training quantization of feed-forward 3D reconstruction transformers."""

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

ROOT = Path(__file__).resolve().parents[1]
# ``${fgq_root:}`` in configs: the repository (shipped weights, caches), wherever the command is run from.
OmegaConf.register_new_resolver("fgq_root", lambda: str(ROOT), replace=True)
