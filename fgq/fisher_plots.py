"""Pictures of the Fisher: a task × block heatmap and per-block channel profiles (PNG, in the job dir)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from fgq.fisher import TASKS


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
    fig.savefig(paths[-1], dpi=120)
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
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
