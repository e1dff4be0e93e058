"""VGGT and π3 with the official parameter names, checkpoint loading, geometry and preprocessing."""

from fgq.models.adapter import BlockRef, QuantView
from fgq.models.checkpoint import CheckpointError, load_checkpoint
from fgq.models.pi3 import Pi3
from fgq.models.vggt import VGGT

__all__ = ["VGGT", "BlockRef", "CheckpointError", "Pi3", "QuantView", "load_checkpoint"]
