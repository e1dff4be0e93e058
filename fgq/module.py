"""``QuantExperiment``: calibration and evaluation as one LightningModule, for users who drive a job from their
own ``Trainer`` (the pipeline itself evaluates with the plain loop of ``fgq.evaluation``: the same numbers, with
no Lightning round trips).

    exp = QuantExperiment(model, protocols, FGQConfig(), QuantSpec(w_bits=4, a_bits=4), calib=clips,
                          fisher_config=FisherConfig(tasks=["points"]))
    trainer.test(exp, dataloaders=loaders)   # FP evaluation      → exp.results["fp"]
    trainer.test(exp, dataloaders=loaders)   # quantize, evaluate → exp.results["quant"], exp.cost

Lightning supplies the device, precision, progress bar and loggers; quantization runs at the start of the second
``test`` on the trainer's device, through ``fgq.quant.quantize`` (``context``: ``QuantContext`` fields but the
device).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from fgq.evaluation import DatasetEvaluator, batch_geometry, protocol_evaluator
from fgq.quant import QuantContext, QuantSpec, quantize


class QuantExperiment(L.LightningModule):
    def __init__(self, model: nn.Module, protocols: dict[str, dict], quantizer: Any = None,
                 spec: QuantSpec | None = None, **context: Any) -> None:
        super().__init__()
        if (quantizer is None) != (spec is None):
            raise ValueError("QuantExperiment: give both quantizer and spec, or neither (FP evaluation only)")
        self.model = model
        self.names = list(protocols)
        self.protocols = protocols
        self.quantizer, self.spec, self.context = quantizer, spec, context
        self.results: dict[str, dict[str, dict]] = {}
        self.records: dict[str, dict[str, dict]] = {}  # per phase and eval set: DatasetEvaluator.records()
        self.cost: dict | None = None
        self._evaluators: dict[str, DatasetEvaluator] = {}

    @property
    def phase(self) -> str:
        """``fp`` until the model is quantized, then ``quant``."""
        return "fp" if self.cost is None else "quant"

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)

    def on_test_start(self) -> None:
        if self.quantizer is not None and self.cost is None and "fp" in self.results:
            context = QuantContext(**self.context, device=self.device)
            self.cost = quantize(self.model, self.quantizer, self.spec, context)

    def on_test_epoch_start(self) -> None:
        self.model.eval()
        self._evaluators = {name: protocol_evaluator(name, self.protocols[name]) for name in self.names}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.names[dataloader_idx]
        with torch.no_grad():
            predictions = self.model(batch["images"])
        self._evaluators[name].update(batch_geometry(self.model, predictions, batch, self.protocols[name]), batch)

    def on_test_epoch_end(self) -> None:
        phase = {name: evaluator.compute() for name, evaluator in self._evaluators.items()}
        for name, tasks in phase.items():
            self.log_dict({f"{self.phase}/{name}/{task}/{metric}": value for task, values in tasks.items()
                           for metric, value in values.items()}, add_dataloader_idx=False)
        self.results[self.phase] = phase
        self.records[self.phase] = {name: evaluator.records() for name, evaluator in self._evaluators.items()}
