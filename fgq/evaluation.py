"""Evaluation: ``evaluate`` runs a model over every evaluation set (a plain loop on the job's device, under the
job's autocast) and ``DatasetEvaluator`` feeds standardized predictions and ground truth of each clip to the metric
accumulators of the tasks a protocol asks for, keeping the per-sequence values they aggregate (``records``: per
pair for pose, per unit for depth, per sequence for the point map) so that uncertainty can be computed later
without rerunning (``metrics_from_records`` gives back the dataset metrics from any subset of them)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from fgq.errors import NonFiniteError
from fgq.metrics import (
    DepthAccumulator,
    PointMapAccumulator,
    PoseAccumulator,
    evaluate_depth,
    evaluate_pointmap,
    relative_pose_errors,
)
from fgq.models.geometry import unproject_depth
from fgq.runtime import autocast

NEEDS = {"camera": "extrinsics", "depth": "depth", "points": "world_points"}  # ground truth each task needs
MODEL_SIDE = ("points_source", "pred_resize")  # protocol keys that say how the model's outputs become geometry


class DatasetEvaluator:
    """``update`` once per batch, ``compute`` once per evaluation: ``{task: {metric: value}}``."""

    def __init__(
        self,
        tasks: tuple[str, ...] = ("camera", "depth", "points"),
        pose_convention: str = "fgq",
        pose_averaging: str = "pooled",
        depth_align: str = "median",
        depth_align_scope: str = "sequence",
        icp: bool = True,
        icp_threshold: float = 0.1,
        points_stride: int = 1,
        name: str = "eval",
    ) -> None:
        if depth_align_scope not in ("frame", "sequence"):
            raise ValueError(f"depth_align_scope={depth_align_scope!r}: use frame (mono) or sequence (video)")
        self.tasks = tuple(tasks)
        self.name = name
        self.depth_align, self.depth_align_scope = depth_align, depth_align_scope
        self.icp, self.icp_threshold = icp, icp_threshold
        # Every k-th pixel in both directions; the paper's protocols use all pixels (1).
        self.points_stride = points_stride
        self.pose = PoseAccumulator(averaging=pose_averaging, convention=pose_convention)
        self.depth = DepthAccumulator()
        self.points = PointMapAccumulator()
        self._records: dict[str, list[dict]] = {task: [] for task in self.tasks}

    def update(self, pred: dict[str, torch.Tensor], batch: dict) -> None:
        """``pred``: ``extrinsics [B,S,3,4]``, ``depth [B,S,H,W]``, ``points [B,S,H,W,3]`` (any device/dtype)."""
        for task, key in NEEDS.items():
            if task in self.tasks and key not in batch:
                raise ValueError(f"eval set '{self.name}': task '{task}' needs ground-truth {key}, which this dataset "
                                 f"does not provide; remove it from dataset.eval.{self.name}.protocol.tasks")
        pred = {k: v.detach().float().cpu() for k, v in pred.items()}
        if "depth" in batch and pred["depth"].shape != batch["depth"].shape:
            raise ValueError(f"eval set '{self.name}': predicted depth {tuple(pred['depth'].shape)} does not match "
                             f"the ground truth {tuple(batch['depth'].shape)} (pass size= to geometry())")
        gt_depth = torch.where(batch["valid"], batch["depth"], 0.0).float().cpu() if "depth" in batch else None
        for b, meta in enumerate(batch["meta"]):
            sequence = str(meta.get("sequence", ""))
            if "camera" in self.tasks:
                category = meta.get("category", "")
                rot, trans = relative_pose_errors(pred["extrinsics"][b], batch["extrinsics"][b].float().cpu(),
                                                  self.pose.convention)
                self.pose.add_errors(rot, trans, category)
                self._records["camera"].append({"sequence": sequence, "category": category,
                                                "rot_err_deg": rot.tolist(), "trans_err_deg": trans.tolist()})
            if "depth" in self.tasks:
                units = pred["depth"][b] if self.depth_align_scope == "frame" else pred["depth"][b][None]
                gts = gt_depth[b] if self.depth_align_scope == "frame" else gt_depth[b][None]
                for unit, (p, g) in enumerate(zip(units, gts, strict=True)):
                    values = evaluate_depth(p, g, alignment=self.depth_align)
                    self.depth.add(values)
                    self._records["depth"].append({"sequence": sequence, "unit": unit, **values})
            if "points" in self.tasks:
                k = self.points_stride
                values = evaluate_pointmap(
                    pred["points"][b][:, ::k, ::k], batch["world_points"][b][:, ::k, ::k],
                    batch["valid"][b][:, ::k, ::k], icp=self.icp, icp_threshold=self.icp_threshold,
                )
                self.points.add(values)
                self._records["points"].append({"sequence": sequence, **values})

    def records(self) -> dict[str, list[dict]]:
        """Per task, the values ``compute`` aggregates, one entry per sequence (pose: its pairs' errors; depth: one
        per unit, frame or sequence; points: the sequence's metrics), each with its ``sequence`` id."""
        return {task: list(rows) for task, rows in self._records.items()}

    def compute(self) -> dict[str, dict[str, float]]:
        out = {}
        if "camera" in self.tasks:
            out["camera"] = self.pose.compute()
        if "depth" in self.tasks:
            out["depth"] = self.depth.compute()
        if "points" in self.tasks:
            out["points"] = self.points.compute()
        return out


def metrics_from_records(records: dict[str, list[dict]], protocol: dict) -> dict[str, dict[str, float]]:
    """The dataset metrics of ``records`` (all of them, or a resample: the bootstrap's building block), aggregated
    exactly as ``DatasetEvaluator.compute`` does under ``protocol``."""
    evaluator = protocol_evaluator("records", {**protocol, "tasks": list(records)})
    for row in records.get("camera", []):
        evaluator.pose.add_errors(np.asarray(row["rot_err_deg"]), np.asarray(row["trans_err_deg"]), row["category"])
    for row in records.get("depth", []):
        evaluator.depth.add(row)
    for row in records.get("points", []):
        evaluator.points.add(row)
    return evaluator.compute()


def protocol_evaluator(name: str, protocol: dict) -> DatasetEvaluator:
    """A fresh evaluator for one evaluation set's protocol (``dataset.eval.<name>.protocol``)."""
    return DatasetEvaluator(**{k: v for k, v in protocol.items() if k not in MODEL_SIDE}, name=name)


def batch_geometry(model: nn.Module, predictions: dict, batch: dict, protocol: dict) -> dict:
    """The model's predictions as evaluation geometry at the ground truth's size (``model.geometry``)."""
    size = tuple(batch["depth"].shape[-2:]) if "depth" in batch else None
    return model.geometry(predictions, protocol.get("points_source", "depth_camera"), size=size,
                          resize=protocol.get("pred_resize", "bilinear"))


def _check_outputs(predictions: dict, batch: dict, where: str) -> None:
    """The model's raw outputs are finite, or one ``NonFiniteError`` names the output and the sequence."""
    for key, value in predictions.items():
        if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            b = int((~torch.isfinite(value)).flatten(1).any(1).nonzero()[0]) if value.dim() > 1 else 0
            sequence = batch["meta"][b].get("sequence", b) if b < len(batch["meta"]) else b
            raise NonFiniteError(f"{where}, sequence {sequence}: the model's output '{key}' holds NaN or infinity")


@torch.no_grad()
def evaluate(model: nn.Module, loaders: dict[str, Iterable[dict]], protocols: dict[str, dict],
             device: torch.device, precision: str = "32-true", progress: bool = False, phase: str = "FP"
             ) -> tuple[dict[str, dict], dict[str, dict]]:
    """``({eval set: {task: {metric: value}}}, {eval set: {task: records}})`` of ``model`` (already on ``device``,
    put in eval mode here). ``phase`` (FP, quantized) names the evaluation in the progress bar and in errors."""
    model.eval()
    results, records = {}, {}
    with Progress(transient=True, disable=not progress) as bar:
        for name, loader in loaders.items():
            evaluator = protocol_evaluator(name, protocols[name])
            task = bar.add_task(f"{phase} evaluation of {name}",
                                total=len(loader) if hasattr(loader, "__len__") else None)
            for batch in loader:
                with autocast(device, precision):
                    predictions = model(batch["images"].to(device))
                _check_outputs(predictions, batch, f"{phase} evaluation, eval set '{name}'")
                evaluator.update(batch_geometry(model, predictions, batch, protocols[name]), batch)
                bar.advance(task)
            results[name] = evaluator.compute()
            records[name] = evaluator.records()
    return results, records


def trivial_geometry(batch: dict) -> dict[str, torch.Tensor]:
    """The sanity floor every model must beat: image-blind cameras and, per image, a constant depth equal to the
    ground-truth median, unprojected with the true intrinsics.

    The cameras share one rotation and step sideways (camera i at x = i). Identical cameras would score AUC = 0
    by construction (a zero translation has no direction); a sideways sweep is the best constant guess for
    orbits and sweeps, since the translation metric ignores the sign of the direction. The points are the constant
    depths unprojected with identical cameras (a sweep of unknown length would only misplace them further)."""
    images = batch["images"]
    b, s, _, h, w = images.shape
    identical = torch.eye(4)[:3].expand(b, s, 3, 4)
    extrinsics = identical.clone()
    extrinsics[..., 0, 3] = -torch.arange(s, dtype=extrinsics.dtype)
    gt = torch.where(batch["valid"], batch["depth"], torch.nan).flatten(2)
    depth = gt.nanmedian(dim=-1).values[..., None, None].expand(b, s, h, w).clone()
    points = unproject_depth(depth, identical, batch["intrinsics"])
    return {"extrinsics": extrinsics, "depth": depth, "points": points}
