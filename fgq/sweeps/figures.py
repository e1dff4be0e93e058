"""Figures of a sweep: each task's headline metric against the bit setting per quantizer, the per-task normalised
degradation at each bit setting (the paper's Fig. 2), both with their 95 % intervals as error bars, and the
pictures the jobs made themselves (Fisher heatmaps of FGQ jobs, Fisher-validation scatter plots)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes or in CI
import matplotlib.pyplot as plt

from fgq.io import save_figure
from fgq.sweeps.reading import Sweep
from fgq.sweeps.render import Plot
from fgq.sweeps.table import Table, bits_label


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _first_metrics(table: Table) -> dict[tuple, int]:
    """(evaluation set, task) → the column of the table's first metric of that task (the panels of both figures)."""
    firsts: dict[tuple, int] = {}
    for i, col in enumerate(table.columns):
        if col.kind == "metric":
            firsts.setdefault((col.eval_set, col.task), i)
    return firsts


def _yerr(value: float, estimate) -> list[float]:
    """Error-bar lengths below and above ``value`` for an interval (0 when there is none)."""
    if estimate is None:
        return [0.0, 0.0]
    return [max(value - estimate.low, 0.0), max(estimate.high - value, 0.0)]


def metric_vs_bits(table: Table, path: Path) -> Path | None:
    """One panel per (evaluation set, task) on the table's first metric of that task; one line per method, with
    the 95 % interval of each value as an error bar (the FP value's as a band around the dashed line)."""
    firsts = _first_metrics(table)
    groups = list(dict.fromkeys(r.group for r in table.rows if r.group != "FP"))
    if not firsts or not groups:
        return None
    xs = ["FP", *[bits_label(g) for g in groups]]
    fig, axes = plt.subplots(1, len(firsts), figsize=(4.2 * len(firsts), 3.4), squeeze=False)
    fp = next((r for r in table.rows if r.group == "FP"), None)
    for ax, ((eval_set, task), i) in zip(axes[0], firsts.items(), strict=True):
        col = table.columns[i]
        methods = list(dict.fromkeys(r.label for r in table.rows if r.group != "FP"))
        for method in methods:
            cells = [(fp.values[i], fp.intervals[i] if fp.intervals else None) if fp else (None, None)]
            for g in groups:
                row = next((r for r in table.rows if r.group == g and r.label == method and r.status == "ok"), None)
                cells.append((row.values[i], row.intervals[i] if row.intervals else None) if row else (None, None))
            points = [(x, y, _yerr(y, ci)) for x, (y, ci) in zip(xs, cells, strict=True) if y is not None]
            if points:
                x, y, err = zip(*points, strict=True)
                ax.errorbar(x, y, yerr=list(zip(*err, strict=True)), marker="o", capsize=3, label=method)
        if fp and fp.values[i] is not None:
            ax.axhline(fp.values[i], color="gray", linestyle="--", linewidth=1)
            ci = fp.intervals[i] if fp.intervals else None
            if ci is not None:
                ax.axhspan(ci.low, ci.high, color="gray", alpha=0.12, linewidth=0)
        ax.set_title(f"{eval_set} · {task}")
        ax.set_xlabel("bits")
        ax.set_ylabel(f"{col.label.split(' ', 1)[-1]} ({'higher' if col.higher else 'lower'} is better)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def degradation_bars(table: Table) -> dict[str, dict[str, list[tuple[float, float, float]]]]:
    """Per bit setting and method, per panel (``_first_metrics``): the degradation vs FP in % of the FP value
    (positive = worse) of the row's mean over seeds, and its paired 95 % interval (``(value, low, high)``; the
    interval collapses to the value when the row has none). NaN where the row or FP value is missing."""
    fp = next((r for r in table.rows if r.group == "FP"), None)
    firsts = _first_metrics(table)
    out: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    if fp is None:
        return out
    for row in table.rows:
        if row.group == "FP" or row.status != "ok":
            continue
        bars = []
        for i in firsts.values():
            base, value = fp.values[i], row.values[i]
            if base is None or value is None or base == 0:
                bars.append((math.nan, math.nan, math.nan))
                continue
            sign = (-1.0 if table.columns[i].higher else 1.0) * 100 / abs(base)  # difference → % worse
            diff = row.vs_fp[i] if row.vs_fp else None
            lo, hi = (diff.low, diff.high) if diff is not None else (value - base, value - base)
            ends = sorted((sign * lo, sign * hi))
            bars.append((sign * (value - base), ends[0], ends[1]))
        out.setdefault(row.group, {})[row.label] = bars
    return out


def degradation(table: Table, path: Path) -> Path | None:
    """Fig. 2: per bit setting, each task's degradation (% of FP, positive = worse) per method, with error bars from
    the paired interval of method − FP (over sequences and seeds)."""
    bars = degradation_bars(table)
    panels = list(_first_metrics(table))
    if not bars or not panels:
        return None
    methods = list(dict.fromkeys(m for by_method in bars.values() for m in by_method))
    fig, axes = plt.subplots(1, len(bars), figsize=(max(4.5, 1.3 * len(panels)) * len(bars), 3.6), squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, (group, by_method) in zip(axes[0], bars.items(), strict=True):
        for m, method in enumerate(methods):
            cells = by_method.get(method) or [(math.nan,) * 3] * len(panels)
            values = [c[0] for c in cells]
            err = [[max(c[0] - c[1], 0.0) for c in cells], [max(c[2] - c[0], 0.0) for c in cells]]
            ax.bar([i + m * width for i in range(len(panels))], values, width, yerr=err, capsize=2, label=method)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(panels))])
        ax.set_xticklabels([f"{e}\n{t}" for e, t in panels], fontsize=8)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(bits_label(group))
        ax.set_ylabel("degradation vs FP [%]")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def job_pictures(sweep: Sweep) -> list[Plot]:
    """Each distinct job picture once: the first FGQ job's Fisher heatmaps (every FGQ job of a sweep shares the
    Fisher of its model and clips), and every Fisher-validation scatter plot."""
    out, seen = [], set()
    for job in sweep.jobs:
        if job.status != "ok" or job.path is None:
            continue
        model = sweep.value(job, "model")
        for name in ("fisher_blocks.png", "fisher_channels.png"):
            if (job.path / name).is_file() and (model, name) not in seen:
                seen.add((model, name))
                out.append(Plot(f"{model}_{name[:-4]}", job.path / name, f"{model}: {name[:-4]} (job {job.name})"))
        if (job.path / "fisher_validation.png").is_file():
            overrides = " ".join(f"{k}={v}" for k, v in job.overrides.items())
            out.append(Plot(f"validation_{job.name}", job.path / "fisher_validation.png",
                            f"Fisher validation, job {job.name} ({overrides})"))
    return out


def make_figures(sweep: Sweep, tables: list[Table], folder: Path) -> list[Plot]:
    folder.mkdir(parents=True, exist_ok=True)
    plots = []
    for table in tables:
        slug = _slug(table.title)
        for name, fn, caption in (
                ("metric_vs_bits", metric_vs_bits,
                 "headline metric per task vs bits, per quantizer, 95 % intervals (dashed: FP)"),
                ("degradation", degradation,
                 "per-task degradation vs FP at each bit setting (paper Fig. 2); bars: paired 95 % interval")):
            path = fn(table, folder / f"{slug}_{name}.png")
            if path is not None:
                plots.append(Plot(f"{slug}_{name}", path, f"{table.title}: {caption}"))
    return plots + job_pictures(sweep)
