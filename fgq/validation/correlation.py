"""The statistics of the Fisher validation (``fgq.validation.measure``): the uniform-noise model and the
predicted per-block loss ``Σ_c F[k, l, c] · s²[l, c]``, and Pearson/Spearman r between predicted and measured
values on the linear and the log10 scale."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fgq.fisher.plots import normalized_by_mean

R_KEYS = ("pearson", "spearman", "pearson_log10", "spearman_log10")


# ---------------------------------------------------------------------------------------------------------------
# The predicted side


def uniform_noise_variance(absmax: torch.Tensor, bits: int) -> torch.Tensor:
    """``(2·absmax / 2^bits)² / 12``: the variance of uniform rounding noise of step ``2·absmax / 2^bits``."""
    return (2.0 * absmax.double() / 2.0**bits).square() / 12.0


def predicted_loss(fisher: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """``pred[k, l] = Σ_c F[k, l, c] · s²[l, c]`` for a Fisher ``[T, L, C]`` and a noise variance ``[L, C]``
    (float64)."""
    if fisher.dim() != 3 or tuple(noise_var.shape) != tuple(fisher.shape[1:]):
        raise ValueError(f"fisher {tuple(fisher.shape)} and noise variance {tuple(noise_var.shape)}: expected "
                         "[T, L, C] and [L, C]")
    return (fisher.double() * noise_var.double().unsqueeze(0)).sum(dim=-1)


# ---------------------------------------------------------------------------------------------------------------
# Correlations


def _finite_pair(x: Sequence[float], y: Sequence[float], log10: bool) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for a, b in zip(x, y, strict=True):
        if log10:
            if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
                continue
            a, b = math.log10(a), math.log10(b)
        elif not (math.isfinite(a) and math.isfinite(b)):
            continue
        xs.append(a)
        ys.append(b)
    return xs, ys


def _r(fn, x: list[float], y: list[float]) -> float | None:
    """``fn(x, y)`` (a scipy.stats correlation) or ``None`` where undefined (< 3 points, or a constant side)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    value = float(fn(x, y)[0])
    return value if math.isfinite(value) else None


def correlations(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """Pearson and Spearman r between predicted and measured values, on the linear and the log10 scale
    (``None`` where undefined); ``n`` and ``n_log10``: the points used."""
    from scipy import stats

    out: dict = {}
    for log10 in (False, True):
        x, y = _finite_pair(predicted, measured, log10)
        suffix = "_log10" if log10 else ""
        out[f"pearson{suffix}"] = _r(stats.pearsonr, x, y)
        out[f"spearman{suffix}"] = _r(stats.spearmanr, x, y)
        out[f"n{suffix}"] = len(x)
    return out


def correlation_table(predicted: dict[str, list[float]], measured: dict[str, list[float]]) -> dict:
    """``{task: correlations, "pooled": …, "pooled_normalized": …}`` for per-task lists over blocks."""
    tasks = list(predicted)
    out = {t: correlations(predicted[t], measured[t]) for t in tasks}
    out["pooled"] = correlations([v for t in tasks for v in predicted[t]], [v for t in tasks for v in measured[t]])
    out["pooled_normalized"] = correlations([v for t in tasks for v in normalized_by_mean(predicted[t])],
                                            [v for t in tasks for v in normalized_by_mean(measured[t])])
    return out


def r_summary(result: dict) -> dict[str, float]:
    """Flat ``{"<noise>/<task|pooled>/<r key>": r}`` of every defined r value (for loggers and the console)."""
    out = {}
    for side in (result, result["alternative"]):
        groups = {**side["tasks"], "pooled": side["pooled"], "pooled_normalized": side["pooled_normalized"]}
        for name, values in groups.items():
            for key in R_KEYS:
                if values.get(key) is not None:
                    out[f"{side['noise']}/{name}/{key}"] = values[key]
    return out
