"""The console report of one job: FP vs quantized metrics per dataset and task; ↑/↓ say which way each metric is
better, and "better by" is signed so that + is an improvement."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fgq.directions import higher_is_better

# Metrics shown on the console (metrics.json has all of them).
SHOWN = {
    "camera": ("auc@30", "auc@15", "auc@5", "auc@3"),
    "depth": ("abs_rel", "delta_1.25", "rmse"),
    "points": ("acc_mean", "comp_mean", "nc_mean"),
}


def improvement(metric: str, fp: float, quant: float) -> str:
    """How much better the quantized value is, signed so that + is better whichever way the metric goes: relative
    to FP, or absolute (``abs``) where the FP value is too close to 0 for a ratio to mean anything."""
    gain = (quant - fp) if higher_is_better(metric) else (fp - quant)
    if not (math.isfinite(fp) and math.isfinite(quant)):
        return "–"
    if abs(fp) < 0.01:
        return f"{gain:+.4f} abs"
    return f"{gain / abs(fp):+.1%}"


def print_summary(result: dict, out_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    choices = result.get("choices", {})
    title = " · ".join(f"{k}={choices[k]}" for k in ("model", "dataset", "quantizer", "bits") if k in choices)
    table = Table(title=title or "fgq", show_lines=False)
    for column in ("dataset", "task", "metric", "FP", "quantized", "better by"):
        table.add_column(column, justify="left" if column in ("dataset", "task", "metric") else "right")
    for name, tasks in result["fp"].items():
        for task, values in tasks.items():
            for metric in SHOWN.get(task, ()):
                if metric not in values:
                    continue
                fp, q = values[metric], result["quant"][name][task][metric]
                arrow = "↑" if higher_is_better(metric) else "↓"
                table.add_row(name, task, f"{metric} {arrow}", f"{fp:.4f}", f"{q:.4f}", improvement(metric, fp, q))
    console.print(table)
    timings = result.get("timings", {})
    console.print(f"time {timings.get('total_s', float('nan')):.1f} s · outputs in {out_dir}")
