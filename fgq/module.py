"""``QuantExperiment``: the LightningModule that evaluates a model (FP, then quantized) on every eval set.

Lightning supplies devices, precision (bf16 autocast on CUDA), progress bars and loggers; the quantization
itself is plain PyTorch behind ``fgq.quant.quantize`` and runs between the two evaluations.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from fgq.evaluation import DatasetEvaluator


class QuantExperiment(L.LightningModule):
    def __init__(self, model: nn.Module, protocols: dict[str, dict]) -> None:
        super().__init__()
        self.model = model
        self.names = list(protocols)
        self.protocols = protocols
        self.phase = "fp"
        self.results: dict[str, dict[str, dict]] = {}
        self._evaluators: dict[str, DatasetEvaluator] = {}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)

    def on_test_epoch_start(self) -> None:
        self.model.eval()
        self._evaluators = {
            name: DatasetEvaluator(**{k: v for k, v in self.protocols[name].items()
                                 if k not in ("points_source", "pred_resize")}, name=name)
            for name in self.names
        }

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.names[dataloader_idx]
        with torch.no_grad():
            predictions = self.model(batch["images"])
        protocol = self.protocols[name]
        size = tuple(batch["depth"].shape[-2:]) if "depth" in batch else None
        geometry = self.model.geometry(predictions, protocol.get("points_source", "depth_camera"), size=size,
                                      resize=protocol.get("pred_resize", "bilinear"))
        self._evaluators[name].update(geometry, batch)

    def on_test_epoch_end(self) -> None:
        phase = {}
        for name, evaluator in self._evaluators.items():
            phase[name] = evaluator.compute()
            flat = {f"{self.phase}/{name}/{task}/{metric}": value
                    for task, values in phase[name].items() for metric, value in values.items()}
            self.log_dict(flat, add_dataloader_idx=False)
        self.results[self.phase] = phase
