"""Hydra targets of ``fgq/conf/model/*.yaml``: build a model from its architecture knobs and, when
``checkpoint`` is set, load it strictly (built on ``meta`` first so that no second full copy exists)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from fgq.models.checkpoint import load_checkpoint
from fgq.models.pi3 import Pi3
from fgq.models.vggt import VGGT

log = logging.getLogger(__name__)


def build(cls: type[nn.Module], checkpoint: str | None = None, init_seed: int = 0, **arch) -> nn.Module:
    if checkpoint:
        with torch.device("meta"):
            model = cls(**arch)
        load_checkpoint(model, checkpoint)
        log.info("%s: loaded %s", cls.__name__, checkpoint)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = cls(**arch)
        log.info("%s: random init (seed %d) — no checkpoint configured", cls.__name__, init_seed)
    model.arch = arch  # the architecture knobs, recorded so that saved quantized models can be checked
    return model.eval()


def vggt(checkpoint: str | None = None, init_seed: int = 0, **arch) -> VGGT:
    return build(VGGT, checkpoint, init_seed, **arch)


def pi3(checkpoint: str | None = None, init_seed: int = 0, **arch) -> Pi3:
    return build(Pi3, checkpoint, init_seed, **arch)
