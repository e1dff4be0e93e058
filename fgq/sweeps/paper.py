"""The paper's reported numbers (``fgq/sweeps/paper_results.csv``: a third-party transcription of the FGQ paper, not
checked against the PDF; its W4A4 Tables 5/6 disagree with Tables 1/3) and how our names map to them."""

from __future__ import annotations

import csv
import re
from pathlib import Path

REFERENCE = Path(__file__).with_name("paper_results.csv")
PAPER_MODELS = {"vggt": "VGGT-1B", "pi3": "Pi3"}  # only with a checkpoint: random weights are not the paper's
PAPER_DATASETS = {"co3d": "Co3Dv2", "re10k": "RealEstate10K", "seven_scenes": "7-Scenes", "eth3d": "ETH3D",
                  "dtu": "DTU", "kitti_mono": "KITTI-mono", "kitti_video": "KITTI-video"}
PAPER_METRICS = {
    **{f"auc@{t}": (f"AUC@{t}", "value") for t in (30, 15, 5, 3)},
    **{f"{m}_{s}": (m.capitalize() if m != "nc" else "NC", {"mean": "mean", "med": "median"}[s])
       for m in ("acc", "comp", "nc") for s in ("mean", "med")},
    "abs_rel": ("AbsRel", "value"), "sq_rel": ("SqRel", "value"), "rmse": ("RMSE", "value"),
    "delta_1.25": ("delta<1.25", "value"),
}
# Cost columns: the paper's metric and the factor to our unit (seconds, MB); the paper measured them while
# calibrating on Co3Dv2.
PAPER_COSTS = {"calib_s": ("calib_gpu_time_h", 3600.0), "peak_mb": ("calib_gpu_mem_GB", 1024.0)}
CALIBRATION_DATASET = "Co3Dv2 (calibration)"


def method_key(name: str) -> str:
    """Paper method names compared without the order of Table 5's task lists (``FGQ[Fisher=a+b]`` = ``b+a``)."""
    match = re.fullmatch(r"(.*)\[Fisher=(.*)\]", name)
    return f"{match[1]}[Fisher={'+'.join(sorted(match[2].split('+')))}]" if match else name


def load_reference(path: Path = REFERENCE) -> dict[tuple, float]:
    """The paper's numbers by (table, model, method, wbits, abits, dataset, metric, stat)."""
    if not path.is_file():
        return {}
    with path.open() as f:
        return {(r["table"], r["model"], method_key(r["method"]), int(r["wbits"]), int(r["abits"]), r["dataset"],
                 r["metric"], r["stat"]): float(r["value"]) for r in csv.DictReader(f)}


def paper_value(reference: dict, tables: list[str], model: str | None, method: str | None,
                bits: tuple[int, int] | None, kind: str, eval_set: str | None, metric: str,
                calibrated_on_co3d: bool = False) -> float | None:
    """The paper's number for one cell of our table (in our units), or ``None`` where the paper has none."""
    if model is None or method is None or bits is None:
        return None
    if kind == "metric" and eval_set in PAPER_DATASETS and metric in PAPER_METRICS:
        key, scale = (PAPER_DATASETS[eval_set], *PAPER_METRICS[metric]), 1.0
    elif kind == "cost" and metric in PAPER_COSTS and calibrated_on_co3d:
        name, scale = PAPER_COSTS[metric]
        key = (CALIBRATION_DATASET, name, "value")
    else:
        return None
    found = [reference.get((t, model, method_key(method), *bits, *key)) for t in tables]
    return next((v * scale for v in found if v is not None), None)
