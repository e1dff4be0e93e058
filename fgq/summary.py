"""The console report of one job: FP vs quantized metrics per dataset and task."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

# Metrics shown on the console (metrics.json has all of them).
SHOWN = {
    "camera": ("auc@30", "auc@15", "auc@5", "auc@3"),
    "depth": ("abs_rel", "delta_1.25", "rmse"),
    "points": ("acc_mean", "comp_mean", "nc_mean"),
}


def print_summary(result: dict, out_dir: Path, console: Console | None = None) -> None:
    console = console or Console()
    choices = result.get("choices", {})
    title = " · ".join(f"{k}={choices[k]}" for k in ("model", "dataset", "quantizer", "bits") if k in choices)
    table = Table(title=title or "fgq", show_lines=False)
    for column in ("dataset", "task", "metric", "FP", "quantized", "change"):
        table.add_column(column, justify="right" if column in ("FP", "quantized", "change") else "left")
    for name, tasks in result["fp"].items():
        for task, values in tasks.items():
            for metric in SHOWN.get(task, ()):
                if metric not in values:
                    continue
                fp, q = values[metric], result["quant"][name][task][metric]
                change = f"{(q - fp) / abs(fp):+.1%}" if fp else "–"
                table.add_row(name, task, metric, f"{fp:.4f}", f"{q:.4f}", change)
    console.print(table)
    timings = result.get("timings", {})
    console.print(f"time {timings.get('total_s', float('nan')):.1f} s · outputs in {out_dir}")
