"""Point-map reconstruction metrics as recons_eval's point-map evaluation (from Spann3R / CUT3R) computes them:
Umeyama Sim(3), point-to-point ICP, normals, Accuracy / Completion / Normal Consistency.

Everything runs in float64 numpy. ICP and normal estimation mirror Open3D's ``registration_icp`` (point-to-point)
and ``estimate_normals()`` with their default parameters, written on SciPy's ``cKDTree``.

Per sequence: pool the valid pixels of all frames → Umeyama Sim(3) prediction → GT → optional ICP (0.1 m, DTU
100 mm) → normals on both clouds → metrics. Dataset values are plain means of the per-sequence values (the
``*_med`` columns are means of per-sequence medians); distances are in the dataset's units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

METRIC_KEYS: tuple[str, ...] = (
    "acc_mean", "acc_med", "comp_mean", "comp_med", "nc_mean", "nc_med",
    "nc1_mean", "nc1_med", "nc2_mean", "nc2_med",
)
_FALLBACK_NORMAL = np.array([0.0, 0.0, 1.0])  # what Open3D assigns when a neighbourhood has no defined normal


def _as_float64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def umeyama(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``c·R·x + t ≈ y`` from corresponding points ``src`` and ``dst`` ``[N, 3]``.

    Umeyama (1991): ``Σ = (Y − μ_y)(X − μ_x)ᵀ/n = U D Vᵀ``; ``S = diag(1, 1, −1)`` when ``det U · det V < 0`` (so
    ``R`` is a rotation, never a reflection), else ``I``; ``R = U S Vᵀ``; ``c = tr(D S)/σ²_x`` with
    ``σ²_x = mean‖x − μ_x‖²`` (1 when ``with_scale`` is false); ``t = μ_y − c R μ_x``. Returns ``(c, R, t)``.
    """
    x, y = _as_float64(src), _as_float64(dst)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"umeyama needs two [N, 3] arrays of the same shape, got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise ValueError("umeyama needs at least one correspondence")
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mu_x, y - mu_y
    cov = yc.T @ xc / len(x)
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2] = -1.0
    rot = u @ np.diag(s) @ vt
    scale = float((d * s).sum() / (xc**2).sum(axis=1).mean()) if with_scale else 1.0
    return scale, rot, mu_y - scale * rot @ mu_x


def apply_similarity(points: np.ndarray, scale: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``c·R·p + t`` for points ``[..., 3]``."""
    return scale * points @ rot.T + t


@dataclass(frozen=True)
class IcpResult:
    """Like Open3D's ``RegistrationResult``: the composed rigid ``transformation`` ``[4, 4]`` (apply it to the
    original source), the final ``fitness`` (inlier fraction of the source) and ``inlier_rmse``, and the number
    of updates applied."""

    transformation: np.ndarray
    fitness: float
    inlier_rmse: float
    iterations: int


def _match(points: np.ndarray, tree: cKDTree, threshold: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Nearest target point of each source point, kept when strictly closer than ``threshold`` (Open3D's hybrid
    search keeps squared distances < r²). Returns source indices, target indices, fitness, inlier RMSE."""
    dist, idx = tree.query(points, k=1, distance_upper_bound=threshold, workers=-1)
    inlier = dist < threshold
    src_idx = np.flatnonzero(inlier)
    if src_idx.size == 0:
        return src_idx, src_idx, 0.0, 0.0
    fitness = src_idx.size / len(points)
    rmse = float(np.sqrt(np.sum(dist[inlier] ** 2) / src_idx.size))
    return src_idx, idx[inlier], fitness, rmse


def icp_point_to_point(
    source: np.ndarray,
    target: np.ndarray,
    threshold: float,
    *,
    max_iterations: int = 30,
    relative_fitness: float = 1e-6,
    relative_rmse: float = 1e-6,
) -> IcpResult:
    """Rigid point-to-point ICP from the identity, as Open3D's ``registration_icp`` with its default criteria.

    Each iteration: fit a rigid transform (Umeyama without scale) to the current inlier pairs (identity when there
    are none), move the source by it and compose; re-match; stop after ``max_iterations`` or once both the fitness
    and the inlier RMSE changed by less than their tolerances (absolute changes, despite Open3D's names).
    """
    if threshold <= 0:
        raise ValueError(f"ICP needs a positive max correspondence distance, got {threshold}")
    current, tgt = _as_float64(source), _as_float64(target)
    tree = cKDTree(tgt)
    transformation = np.eye(4)
    src_idx, tgt_idx, fitness, rmse = _match(current, tree, threshold)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        update = np.eye(4)
        if src_idx.size:
            _, update[:3, :3], update[:3, 3] = umeyama(current[src_idx], tgt[tgt_idx], with_scale=False)
        transformation = update @ transformation
        current = apply_similarity(current, 1.0, update[:3, :3], update[:3, 3])
        previous = fitness, rmse
        src_idx, tgt_idx, fitness, rmse = _match(current, tree, threshold)
        if abs(previous[0] - fitness) < relative_fitness and abs(previous[1] - rmse) < relative_rmse:
            break
    return IcpResult(transformation, fitness, rmse, iterations)


def estimate_normals(points: np.ndarray, knn: int = 30) -> np.ndarray:
    """Unit normals ``[N, 3]`` as Open3D's default ``estimate_normals()``: PCA of each point's ``knn`` nearest
    neighbours (itself included), the eigenvector of the smallest eigenvalue of their covariance.

    The sign is arbitrary (no orientation step; the NC metrics take ``|·|``). Where the normal is undefined —
    fewer than 3 points, or all neighbours coincide — it is ``(0, 0, 1)`` as in Open3D.
    """
    pts = _as_float64(points)
    if len(pts) < 3:
        return np.tile(_FALLBACK_NORMAL, (len(pts), 1))
    _, idx = cKDTree(pts).query(pts, k=min(knn, len(pts)), workers=-1)
    neighbours = pts[idx]
    centred = neighbours - neighbours.mean(axis=1, keepdims=True)
    cov = centred.transpose(0, 2, 1) @ centred / idx.shape[1]
    _, eigvecs = np.linalg.eigh(cov)  # eigenvalues ascending
    normals = np.ascontiguousarray(eigvecs[:, :, 0])
    normals[~cov.any(axis=(1, 2))] = _FALLBACK_NORMAL
    return normals


def reconstruction_metrics(
    pred: np.ndarray, gt: np.ndarray, pred_normals: np.ndarray, gt_normals: np.ndarray
) -> dict[str, float]:
    """Accuracy (pred → nearest GT), Completion (GT → nearest pred) and normal consistency of two clouds.

    ``nc1 = |n_gt[nn(pred)] · n_pred|``, ``nc2 = |n_gt · n_pred[nn(gt)]|``; ``nc_mean``/``nc_med`` average the
    two means/medians. Keys: ``METRIC_KEYS``.
    """
    pred, gt = _as_float64(pred), _as_float64(gt)
    pred_normals, gt_normals = _as_float64(pred_normals), _as_float64(gt_normals)
    acc, acc_nn = cKDTree(gt).query(pred, workers=-1)
    comp, comp_nn = cKDTree(pred).query(gt, workers=-1)
    nc1 = np.abs(np.sum(gt_normals[acc_nn] * pred_normals, axis=-1))
    nc2 = np.abs(np.sum(gt_normals * pred_normals[comp_nn], axis=-1))
    out = {
        "acc_mean": np.mean(acc), "acc_med": np.median(acc),
        "comp_mean": np.mean(comp), "comp_med": np.median(comp),
        "nc1_mean": np.mean(nc1), "nc1_med": np.median(nc1),
        "nc2_mean": np.mean(nc2), "nc2_med": np.median(nc2),
    }
    out["nc_mean"] = (out["nc1_mean"] + out["nc2_mean"]) / 2
    out["nc_med"] = (out["nc1_med"] + out["nc2_med"]) / 2
    return {key: float(out[key]) for key in METRIC_KEYS}


def evaluate_pointmap(
    pred_points: np.ndarray | torch.Tensor,
    gt_points: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor,
    *,
    icp: bool = True,
    icp_threshold: float = 0.1,
    normals_knn: int = 30,
) -> dict[str, float]:
    """Score one sequence: predicted and GT world points ``[S, H, W, 3]``, GT validity ``[S, H, W]``.

    Umeyama Sim(3) on all valid pixels pooled, applied to the prediction; only valid pixels are kept (same mask
    for both clouds); then, if ``icp``, rigid ICP with max correspondence distance ``icp_threshold`` (0.1 for
    metres, 100 for DTU's millimetres); normals; ``reconstruction_metrics``.
    """
    pred, gt = _as_float64(pred_points), _as_float64(gt_points)
    mask = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
    if pred.shape != gt.shape or pred.shape[-1] != 3 or mask.shape != pred.shape[:-1]:
        raise ValueError(
            f"expected points [..., 3] of one shape and a mask without the last axis; got prediction "
            f"{pred.shape}, ground truth {gt.shape}, mask {mask.shape}"
        )
    mask = mask.astype(bool)
    if mask.sum() < 3:
        raise ValueError(f"a sequence needs at least 3 valid pixels, got {int(mask.sum())}")
    # Transforming only the valid points is the same as transforming all of them and then masking.
    pred_valid, gt_valid = pred[mask], gt[mask]
    pred_valid = apply_similarity(pred_valid, *umeyama(pred_valid, gt_valid))
    if icp:
        result = icp_point_to_point(pred_valid, gt_valid, icp_threshold)
        pred_valid = apply_similarity(pred_valid, 1.0, result.transformation[:3, :3], result.transformation[:3, 3])
    return reconstruction_metrics(
        pred_valid, gt_valid, estimate_normals(pred_valid, normals_knn), estimate_normals(gt_valid, normals_knn)
    )


class PointMapAccumulator:
    """Plain mean over sequences of per-sequence ``evaluate_pointmap`` results (as FGQ: divided by the number of
    sequences actually added)."""

    def __init__(self) -> None:
        self._rows: list[dict[str, float]] = []

    def add(self, metrics: Mapping[str, float]) -> None:
        self._rows.append({key: float(metrics[key]) for key in METRIC_KEYS})

    @property
    def num_sequences(self) -> int:
        return len(self._rows)

    def compute(self) -> dict[str, float]:
        if not self._rows:
            raise ValueError("PointMapAccumulator is empty")
        return {key: float(np.mean([row[key] for row in self._rows])) for key in METRIC_KEYS}

    def reset(self) -> None:
        self._rows.clear()
