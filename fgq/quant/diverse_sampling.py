"""QuantVGGT's noise-filtered diverse sampling of calibration clips (QuantVGGT paper; code ``wlfeng0509/QuantVGGT``).

From a pool of candidate clips (the calibration clips the quantizer is given, up to ``pool_size``), one FP
forward per clip through the quantization view yields:

1. **Noise statistics**: mean and std of the input of the last ``noise_block_fraction`` of the blocks, in
   whole frame+global pairs (the input of their ``norm1``; VGGT-1B: frame/global blocks 20–23 = the last 8 of
   48, hence 1/6; a tiny VGGT with 8 blocks uses its last pair), over frame 0 for frame blocks and the whole
   clip for global blocks. Per category and block, Tukey fences ``[Q1 − 1.5·IQR, Q3 + 1.5·IQR]`` on the means
   and on the stds; a clip outside any fence is abnormal. ``outlier_filter=apply`` drops abnormal clips (the
   paper's intent); ``compute_only`` reports them but keeps them (what the released code does: it rebuilds the
   list from all indices); ``off`` skips the statistics.
2. **Frame-aware diversity features**: the last aggregator output ``cat(last frame block, last global block)``
   ``[S, P, 2C]``, average-pooled by 2 over channels and (patch tokens only; the special tokens are kept) over
   tokens; per clip the ``S − 1`` mean-over-tokens cosine similarities between frame f and frame 0.
3. **k-means** (``clusters``, k-means++ init, ``n_init`` restarts, seeded; written here, no scikit-learn) on the
   features of the remaining clips, then ``per_cluster`` clips drawn at random from each cluster, topped up at
   random from the unselected clips when a cluster is smaller, so ``clusters·per_cluster`` clips are chosen
   (all of them when the pool is not larger than that).

Every random choice comes from ``numpy.random.default_rng(seed)`` (the code's ``random_state`` is 42).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fgq.models.adapter import QuantView

OUTLIER_FILTERS = ("apply", "compute_only", "off")


@dataclass
class SamplerConfig:
    """Knobs of the diverse sampler; ``enabled=False`` calibrates on every pool clip."""

    enabled: bool = True
    pool_size: int | None = None  # candidates: the first N calibration clips (None: all of them)
    clusters: int = 5
    per_cluster: int = 4
    n_init: int = 50
    outlier_filter: str = "apply"  # apply (paper) | compute_only (released code) | off
    noise_block_fraction: float = 1 / 6
    seed: int = 42

    def __post_init__(self) -> None:
        if self.outlier_filter not in OUTLIER_FILTERS:
            raise ValueError(f"quantizer.sampling.outlier_filter={self.outlier_filter!r}: use one of "
                             f"{', '.join(OUTLIER_FILTERS)}")
        if self.clusters < 1 or self.per_cluster < 1 or self.n_init < 1:
            raise ValueError("quantizer.sampling: clusters, per_cluster and n_init must be >= 1")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"quantizer.sampling.pool_size={self.pool_size!r}: must be >= 1 or null")
        if not 0 < self.noise_block_fraction <= 1:
            raise ValueError("quantizer.sampling.noise_block_fraction must be in (0, 1]")


def split_clips(calib: Iterable[dict], limit: int | None = None) -> list[dict]:
    """Calibration batches → single-clip batches (``images [1,S,3,H,W]``, ``meta`` a one-element list)."""
    clips = []
    for batch in calib:
        metas = batch.get("meta") or [{}] * batch["images"].shape[0]
        for i in range(batch["images"].shape[0]):
            if limit is not None and len(clips) >= limit:
                return clips
            clips.append({"images": batch["images"][i:i + 1], "meta": [metas[i]]})
    return clips


def _special_tokens(view: QuantView) -> int:
    """Tokens per frame before the patches (camera + registers), kept unpooled as in the released code."""
    return view.patch_start


@torch.no_grad()
def clip_features(view: QuantView, clip: dict, noise_blocks: list[int], device: torch.device
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One FP forward of ``clip``: ``(noise [len(noise_blocks), 2] (mean, std), diversity [S−1])``."""
    x, pos = view.embed(clip["images"].to(device))
    noise, last = [], {}
    for ref in view.blocks:
        if ref.index in noise_blocks:
            seen = x[:, 0] if ref.kind == "frame" else x  # frame 0 (frame blocks), the whole clip (global)
            noise.append((float(seen.mean()), float(seen.float().std())))
        x = view.run_block(ref, x, pos)
        last[ref.kind] = x
    out = torch.cat([last[k] for k in ("frame", "global") if k in last], dim=-1)[0].float()  # [S, P, 2C]
    out = F.avg_pool1d(out, 2)  # channels pooled by 2
    special = _special_tokens(view)
    patches = out[:, special:].transpose(1, 2)  # [S, C, P−special]
    pooled = F.avg_pool1d(patches, 2).transpose(1, 2) if patches.shape[-1] >= 2 else patches.transpose(1, 2)
    tokens = torch.cat((out[:, :special], pooled), dim=1)
    sims = F.cosine_similarity(tokens[1:], tokens[:1].expand_as(tokens[1:]), dim=-1).mean(dim=-1)
    return np.asarray(noise, dtype=np.float64).reshape(-1, 2), sims.cpu().double().numpy()


def tukey_abnormal(stats: np.ndarray, groups: list[str]) -> np.ndarray:
    """``stats [N, blocks, 2]`` → bool ``[N]``: outside a Tukey fence of its group on any block and statistic."""
    abnormal = np.zeros(stats.shape[0], dtype=bool)
    for group in sorted(set(groups)):
        idx = np.array([i for i, g in enumerate(groups) if g == group])
        values = stats[idx]
        q1, q3 = np.percentile(values, 25, axis=0), np.percentile(values, 75, axis=0)
        lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        abnormal[idx] = ((values < lo) | (values > hi)).reshape(len(idx), -1).any(axis=1)
    return abnormal


def kmeans(features: np.ndarray, k: int, n_init: int, rng: np.random.Generator, max_iter: int = 300,
           tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding, the best of ``n_init`` runs (lowest inertia):
    ``(labels [N], centers [k, D], inertia)``. ``tol`` is relative to the mean per-feature variance."""
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    k = min(k, n)
    threshold = tol * float(np.mean(np.var(x, axis=0))) if n > 1 else 0.0
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(n_init):
        centers = [x[rng.integers(n)]]
        for _ in range(1, k):  # k-means++: next centre with probability ∝ squared distance to the nearest
            d2 = np.min(((x[:, None] - np.asarray(centers)[None]) ** 2).sum(-1), axis=1)
            total = d2.sum()
            centers.append(x[rng.choice(n, p=d2 / total)] if total > 0 else x[rng.integers(n)])
        centers = np.asarray(centers)
        for _ in range(max_iter):
            labels = ((x[:, None] - centers[None]) ** 2).sum(-1).argmin(axis=1)
            moved = np.array([x[labels == j].mean(0) if np.any(labels == j) else centers[j] for j in range(k)])
            shift = float(((moved - centers) ** 2).sum())
            centers = moved
            if shift <= threshold:
                break
        labels = ((x[:, None] - centers[None]) ** 2).sum(-1).argmin(axis=1)
        inertia = float(((x - centers[labels]) ** 2).sum())
        if best is None or inertia < best[2] - 1e-12:
            best = (labels, centers, inertia)
    return best


def select_per_cluster(labels: np.ndarray, per_cluster: int, budget: int, rng: np.random.Generator) -> list[int]:
    """``per_cluster`` random members of every cluster, topped up at random to ``budget`` (positions into
    ``labels``, sorted)."""
    chosen: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen += rng.choice(members, size=min(per_cluster, len(members)), replace=False).tolist()
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    need = min(budget - len(chosen), len(rest))
    if need > 0:
        chosen += rng.choice(rest, size=need, replace=False).tolist()
    return sorted(int(i) for i in chosen)


def diverse_sample(view: QuantView, clips: list[dict], config: SamplerConfig, device: torch.device
                   ) -> tuple[list[int], dict]:
    """Indices into ``clips`` to calibrate on, and a report (pool, abnormal clips, cluster sizes, choice)."""
    n = len(clips)
    if n == 0:
        raise ValueError("diverse sampling: the calibration pool is empty")
    # whole frame+global pairs (both families alternate them): VGGT-1B 2·round(4.0) = 8, tiny (8 blocks) 2
    count = min(len(view.blocks), 2 * max(1, round(config.noise_block_fraction * len(view.blocks) / 2)))
    noise_blocks = [ref.index for ref in view.blocks[-count:]] if config.outlier_filter != "off" else []
    noise, diversity = zip(*(clip_features(view, c, noise_blocks, device) for c in clips), strict=True)
    frames = min(len(d) for d in diversity)
    features = np.stack([d[:frames] for d in diversity]) if frames else np.zeros((n, 1))
    report: dict = {"pool": n, "outlier_filter": config.outlier_filter,
                    "noise_blocks": [view.blocks[i].name for i in noise_blocks]}
    candidates = np.arange(n)
    if noise_blocks:
        groups = [str((c.get("meta") or [{}])[0].get("category", "all")) for c in clips]
        abnormal = tukey_abnormal(np.stack(noise), groups)
        report["abnormal"] = np.flatnonzero(abnormal).tolist()
        if config.outlier_filter == "apply" and not abnormal.all():
            candidates = np.flatnonzero(~abnormal)
    rng = np.random.default_rng(config.seed)
    labels, _, inertia = kmeans(features[candidates], config.clusters, config.n_init, rng)
    budget = config.clusters * config.per_cluster
    picked = candidates[select_per_cluster(labels, config.per_cluster, budget, rng)].tolist()
    report.update({"candidates": len(candidates), "cluster_sizes": np.bincount(labels).tolist(),
                   "inertia": inertia, "selected": picked,
                   "selected_clusters": [int(labels[np.flatnonzero(candidates == i)[0]]) for i in picked]})
    return picked, report


__all__ = ["SamplerConfig", "clip_features", "diverse_sample", "kmeans", "select_per_cluster", "split_clips",
           "tukey_abnormal"]
