"""Pictures of the Fisher: a task × block heatmap and per-block channel profiles (PNG, in the job dir)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from fgq.fisher.compute import TASKS
from fgq.io import save_figure


def normalized_by_mean(values: Sequence[float]) -> list[float]:
    """Values divided by their mean (unchanged if the mean is not positive): puts tasks on one scale."""
    mean = sum(values) / len(values) if values else 0.0
    return [v / mean for v in values] if mean > 0 else list(values)


def block_labels(view) -> list[str]:
    """Short labels in execution order: VGGT ``F0, G0, F1, …``; π3 ``D0, D1, …`` (frame/global alternate)."""
    labels = []
    for ref in view.blocks:
        number = ref.name.rsplit(".", 1)[-1]
        labels.append(f"{ref.kind[0].upper()}{number}" if "aggregator" in ref.name else f"D{number}")
    return labels


def save_fisher_figures(fisher: torch.Tensor, out_dir: str | os.PathLike, labels: Sequence[str] | None = None,
                        names: Sequence[str] = TASKS, weights: torch.Tensor | None = None) -> list[Path]:
    """PNG pictures of a Fisher ``[T, L, C]``: ``fisher_blocks.png`` (task × block heatmap of log10 of the
    block's channel mean, each task divided by its global mean) and ``fisher_channels.png`` (per block, the
    sorted channel profile of each task, normalised the same way; with ``weights [L, C]`` the FGQ weights
    too). Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    f = fisher.detach().double().cpu()
    f = f / (f.mean(dim=(1, 2), keepdim=True) + 1e-30)
    t, blocks, channels = f.shape
    labels = list(labels) if labels is not None else [str(i) for i in range(blocks)]
    paths = []

    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * blocks + 2), 0.6 * t + 1.5))
    image = ax.imshow(torch.log10(f.mean(dim=2) + 1e-30).numpy(), aspect="auto", cmap="viridis")
    ax.set_yticks(range(t), list(names))
    ax.set_xticks(range(blocks), labels, rotation=90, fontsize=7)
    ax.set_title("log10 block Fisher / task mean")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    paths.append(out / "fisher_blocks.png")
    save_figure(fig, paths[-1], dpi=120)
    plt.close(fig)

    cols = min(8, blocks)
    rows = (blocks + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.8 * rows), squeeze=False, sharey=True)
    for b in range(rows * cols):
        ax = axes[b // cols][b % cols]
        if b >= blocks:
            ax.axis("off")
            continue
        for k in range(t):
            ax.plot(torch.sort(f[k, b], descending=True).values.numpy(), label=names[k], lw=1)
        if weights is not None:
            ax.plot(torch.sort(weights[b].double(), descending=True).values.numpy(), "k--", lw=1, label="weight")
        ax.set_yscale("log")
        ax.set_title(labels[b], fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"channel profile per block (sorted, {channels} channels)", fontsize=9)
    fig.tight_layout()
    paths.append(out / "fisher_channels.png")
    save_figure(fig, paths[-1], dpi=100)
    plt.close(fig)
    return paths


def save_scatter(result: dict, out_dir: str | Path, name: str = "fisher_validation.png") -> Path:
    """One panel per task (and one for the pooled, per-task normalised values): predicted vs measured per
    block on log-log axes (linear where a side has no positive value), each point labelled with its block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = result["blocks"]
    tasks = result["tasks"]
    panels = [(t, tasks[t]["predicted"], tasks[t]["measured"], tasks[t]) for t in tasks]
    pooled_x = [v for t in tasks for v in normalized_by_mean(tasks[t]["predicted"])]
    pooled_y = [v for t in tasks for v in normalized_by_mean(tasks[t]["measured"])]
    panels.append(("pooled (per-task normalised)", pooled_x, pooled_y, result["pooled_normalized"]))

    def fmt(v):
        return "–" if v is None else f"{v:.2f}"

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, x, y, r) in zip(axes[0], panels, strict=True):
        logscale = any(v > 0 for v in x) and any(v > 0 for v in y)
        keep = [i for i in range(len(x)) if not logscale or (x[i] > 0 and y[i] > 0)]
        if len(x) == len(labels):
            ax.scatter([x[i] for i in keep], [y[i] for i in keep], s=14)
            for i in keep:
                ax.annotate(labels[i], (x[i], y[i]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        else:  # pooled: one colour per task
            n = len(labels)
            for k, task in enumerate(tasks):
                idx = [i for i in keep if k * n <= i < (k + 1) * n]
                ax.scatter([x[i] for i in idx], [y[i] for i in idx], s=14, label=task)
            ax.legend(fontsize=7)
        if logscale:
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis, values in ((ax.xaxis, [x[i] for i in keep]), (ax.yaxis, [y[i] for i in keep])):
                if values and max(values) > 10 * min(values):  # a major tick in range: no crowded minor labels
                    axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"predicted Σ_c F·s² ({result['noise']} noise)")
        ax.set_ylabel("measured output MSE")
        ax.set_title(f"{title}\nPearson {fmt(r['pearson'])} (log {fmt(r['pearson_log10'])}) · "
                     f"Spearman {fmt(r['spearman'])}", fontsize=8)
        ax.tick_params(labelsize=7)
    spec = result["spec"]
    fig.suptitle(f"Fisher-predicted vs measured per-block loss · one block at a time · "
                 f"w{spec['w_bits']}a{spec['a_bits']} · {result['clips']} clips · {result['wrap']}", fontsize=9)
    fig.tight_layout()
    path = out / name
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
