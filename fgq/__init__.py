"""fgq: task-aware post-training quantization of feed-forward 3D reconstruction transformers."""

__version__ = "0.1.0"
