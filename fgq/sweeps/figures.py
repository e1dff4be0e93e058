"""Figures of a sweep: each task's headline metric against the bit setting per quantizer, the per-task normalised
degradation at each bit setting (the paper's Fig. 2), and the pictures the jobs made themselves (Fisher heatmaps
of FGQ jobs, Fisher-validation scatter plots)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes or in CI
import matplotlib.pyplot as plt

from fgq.sweeps.reading import Sweep
from fgq.sweeps.render import Plot
from fgq.sweeps.table import Table, bits_label


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def metric_vs_bits(table: Table, path: Path) -> Path | None:
    """One panel per (evaluation set, task) on the table's first metric of that task; one line per method."""
    firsts: dict[tuple, int] = {}
    for i, col in enumerate(table.columns):
        if col.kind == "metric":
            firsts.setdefault((col.eval_set, col.task), i)
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
            ys = [fp.values[i] if fp else None] + [
                next((r.values[i] for r in table.rows if r.group == g and r.label == method and r.status == "ok"),
                     None) for g in groups]
            points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=method)
        if fp and fp.values[i] is not None:
            ax.axhline(fp.values[i], color="gray", linestyle="--", linewidth=1)
        ax.set_title(f"{eval_set} · {task}")
        ax.set_xlabel("bits")
        ax.set_ylabel(f"{col.label.split(' ', 1)[-1]} ({'higher' if col.higher else 'lower'} is better)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def degradation(table: Table, path: Path) -> Path | None:
    """Fig. 2: per bit setting, each task's headline degradation (% of FP, positive = worse) per method."""
    rows = [r for r in table.rows if r.group != "FP" and r.status == "ok" and r.job and r.job.result]
    entries: dict[tuple, dict[str, dict[str, float]]] = {}  # (eval, task) -> group -> method -> value
    for row in rows:
        for eval_set, tasks in (row.job.result.get("degradation") or {}).items():
            for task, entry in tasks.items():
                value = next((v for k, v in entry.items() if k.startswith("degradation(")), None)
                if isinstance(value, (int, float)):
                    entries.setdefault((eval_set, task), {}).setdefault(row.group, {})[row.label] = 100 * value
    groups = list(dict.fromkeys(r.group for r in rows))
    if not entries or not groups:
        return None
    methods = list(dict.fromkeys(r.label for r in rows))
    fig, axes = plt.subplots(1, len(groups), figsize=(max(4.5, 1.3 * len(entries)) * len(groups), 3.6),
                             squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, group in zip(axes[0], groups, strict=True):
        for m, method in enumerate(methods):
            values = [entries[k].get(group, {}).get(method, float("nan")) for k in entries]
            ax.bar([i + m * width for i in range(len(entries))], values, width, label=method)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(entries))])
        ax.set_xticklabels([f"{e}\n{t}" for e, t in entries], fontsize=8)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(bits_label(group))
        ax.set_ylabel("degradation vs FP [%]")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
                ("metric_vs_bits", metric_vs_bits, "headline metric per task vs bits, per quantizer (dashed: FP)"),
                ("degradation", degradation, "per-task degradation vs FP at each bit setting (paper Fig. 2)")):
            path = fn(table, folder / f"{slug}_{name}.png")
            if path is not None:
                plots.append(Plot(f"{slug}_{name}", path, f"{table.title}: {caption}"))
    return plots + job_pictures(sweep)
