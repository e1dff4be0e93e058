"""Umeyama, ICP, normals and Acc/Comp/NC, on known transforms and hand-computed clouds."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from fgq.metrics import (
    PointMapAccumulator,
    apply_similarity,
    estimate_normals,
    evaluate_pointmap,
    icp_point_to_point,
    reconstruction_metrics,
    umeyama,
)
from fgq.metrics.pointmap import METRIC_KEYS


def surface(n_side: int = 40, seed: int = 0) -> np.ndarray:
    """A wavy, non-symmetric height field ``[n_side², 3]`` with slightly jittered samples."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(0, 1, n_side), np.linspace(0, 0.8, n_side))
    u, v = u + rng.uniform(-2e-3, 2e-3, u.shape), v + rng.uniform(-2e-3, 2e-3, v.shape)
    z = 0.15 * np.sin(5 * u) * np.cos(3 * v) + 0.1 * u * v
    return np.stack((u, v, z), axis=-1).reshape(-1, 3)


def rigid(angle_deg: float, axis: tuple[float, float, float], t: tuple[float, float, float]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.radians(angle_deg) * np.asarray(axis) / np.linalg.norm(axis)).as_matrix()
    m[:3, 3] = t
    return m


def transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return apply_similarity(points, 1.0, m[:3, :3], m[:3, 3])


# --- Umeyama ----------------------------------------------------------------------------------------------------


def test_umeyama_recovers_a_random_similarity():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    rot, c, t = Rotation.random(random_state=2).as_matrix(), 2.3, np.array([0.5, -1.0, 3.0])
    c_hat, rot_hat, t_hat = umeyama(x, apply_similarity(x, c, rot, t))
    assert c_hat == pytest.approx(c, rel=1e-12)
    assert np.allclose(rot_hat, rot, atol=1e-12)
    assert np.allclose(t_hat, t, atol=1e-12)
    _, rot_rigid, _ = umeyama(x, apply_similarity(x, 1.0, rot, t), with_scale=False)
    assert np.allclose(rot_rigid, rot, atol=1e-12)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 3)) * np.array([3.0, 2.0, 1.0])
    y = x * np.array([1.0, 1.0, -1.0])  # a mirror image: the unconstrained optimum is a reflection
    u, _, vt = np.linalg.svd((y - y.mean(0)).T @ (x - x.mean(0)) / len(x))
    assert np.linalg.det(u @ vt) < 0  # so this case exercises the S fix
    c, rot, _ = umeyama(x, y)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    # The fixed R is the best proper rotation (Kabsch), and c = tr(D S)/σ² uses the flipped singular value.
    best, _ = Rotation.align_vectors(y - y.mean(0), x - x.mean(0))
    assert np.allclose(rot, best.as_matrix(), atol=1e-9)
    d = np.linalg.svd((y - y.mean(0)).T @ (x - x.mean(0)) / len(x), compute_uv=False)
    assert c == pytest.approx((d[0] + d[1] - d[2]) / np.mean(np.sum((x - x.mean(0)) ** 2, axis=1)))


# --- ICP --------------------------------------------------------------------------------------------------------


def test_icp_recovers_a_small_rigid_perturbation():
    target = surface()
    perturbation = rigid(2.0, (0.3, 1.0, 0.2), (0.01, -0.005, 0.008))
    source = transform(perturbation, target)
    result = icp_point_to_point(source, target, threshold=0.1)
    assert np.allclose(result.transformation, np.linalg.inv(perturbation), atol=1e-8)
    assert result.fitness == 1.0 and result.inlier_rmse < 1e-8
    assert 1 < result.iterations <= 30


def test_icp_does_not_make_a_clean_alignment_worse():
    target = surface(seed=4)
    source = target + np.random.default_rng(5).normal(scale=2e-3, size=target.shape)
    before = reconstruction_metrics(source, target, np.ones_like(source), np.ones_like(target))
    result = icp_point_to_point(source, target, threshold=0.1)
    after = reconstruction_metrics(
        transform(result.transformation, source), target, np.ones_like(source), np.ones_like(target)
    )
    initial_rmse = np.sqrt(np.mean(cKDTree(target).query(source)[0] ** 2))  # every pair is within 0.1
    assert result.inlier_rmse <= initial_rmse + 1e-12
    assert after["acc_mean"] <= before["acc_mean"] + 1e-9


def test_icp_without_correspondences_is_the_identity():
    target = surface(10)
    result = icp_point_to_point(target + 5.0, target, threshold=0.1)
    assert np.array_equal(result.transformation, np.eye(4))
    assert result.fitness == 0.0 and result.inlier_rmse == 0.0
    with pytest.raises(ValueError, match="positive"):
        icp_point_to_point(target, target, threshold=0.0)


# --- normals ----------------------------------------------------------------------------------------------------


def test_normals_of_a_plane_are_the_plane_normal_up_to_sign():
    rng = np.random.default_rng(6)
    n = np.array([1.0, 2.0, 2.0]) / 3.0
    a = np.cross(n, [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    uv = rng.uniform(-1, 1, size=(500, 2))
    points = uv[:, :1] * a + uv[:, 1:] * b + np.array([0.3, -2.0, 5.0])
    normals = estimate_normals(points)
    assert normals.shape == (500, 3)
    assert np.allclose(np.abs(normals @ n), 1.0, atol=1e-10)


def test_normals_fall_back_to_z_where_undefined():
    assert np.array_equal(estimate_normals(np.zeros((2, 3))), [[0, 0, 1], [0, 0, 1]])
    assert np.array_equal(estimate_normals(np.ones((40, 3))), np.tile([0.0, 0.0, 1.0], (40, 1)))


# --- Acc / Comp / NC --------------------------------------------------------------------------------------------


def test_identical_clouds():
    points = surface(seed=7)
    normals = estimate_normals(points)
    m = reconstruction_metrics(points, points, normals, normals)
    assert list(m) == list(METRIC_KEYS)
    assert m["acc_mean"] == m["acc_med"] == m["comp_mean"] == m["comp_med"] == 0.0
    for key in ("nc_mean", "nc_med", "nc1_mean", "nc1_med", "nc2_mean", "nc2_med"):
        assert m[key] == pytest.approx(1.0, abs=1e-12)


def test_shifted_point_by_hand():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    pred = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.3], [5, 5, 5]])
    gt_normals = np.tile([0.0, 0.0, 1.0], (4, 1))
    pred_normals = np.array([[0.0, 0, 1], [0, 0, -1], [0, 0, 1], [0, 1, 0], [0, 0, 1]])
    m = reconstruction_metrics(pred, gt, pred_normals, gt_normals)
    # pred → nearest GT: [0, 0, 0, 0.3, |(5,5,5) − (1,1,0)| = √57]
    assert m["acc_mean"] == pytest.approx((0.3 + math.sqrt(57)) / 5)
    assert m["acc_med"] == 0.0
    # GT → nearest pred: [0, 0, 0, 0.3]
    assert m["comp_mean"] == pytest.approx(0.3 / 4)
    assert m["comp_med"] == 0.0
    # nc1 = |n_gt[nn] · n_pred| = [1, 1, 1, 0, 1] (sign ignored); nc2 = |n_gt · n_pred[nn]| = [1, 1, 1, 0]
    assert m["nc1_mean"] == pytest.approx(0.8) and m["nc1_med"] == 1.0
    assert m["nc2_mean"] == pytest.approx(0.75) and m["nc2_med"] == 1.0
    assert m["nc_mean"] == pytest.approx((0.8 + 0.75) / 2) and m["nc_med"] == 1.0


# --- one sequence end to end and the dataset mean ---------------------------------------------------------------


@pytest.mark.parametrize("icp", [False, True])
def test_evaluate_sequence_undoes_a_similarity_and_ignores_invalid_pixels(icp):
    s, h, w = 2, 20, 30
    gt = surface(60, seed=8)[: s * h * w].reshape(s, h, w, 3)
    rot = Rotation.random(random_state=9).as_matrix()
    pred = apply_similarity(gt, 0.4, rot, np.array([1.0, 2.0, -3.0]))  # prediction in its own frame and scale
    valid = np.ones((s, h, w), dtype=bool)
    valid[0, :3] = False
    pred[0, :3] = 1e3  # junk where the ground truth is invalid
    m = evaluate_pointmap(torch.tensor(pred), torch.tensor(gt), torch.tensor(valid), icp=icp, icp_threshold=0.1)
    assert m["acc_mean"] < 1e-9 and m["comp_mean"] < 1e-9
    assert m["nc_mean"] == pytest.approx(1.0, abs=1e-9)


def test_evaluate_sequence_rejects_bad_inputs():
    points = np.zeros((1, 2, 2, 3))
    with pytest.raises(ValueError, match="shape"):
        evaluate_pointmap(points, points[..., :2], np.ones((1, 2, 2), bool))
    with pytest.raises(ValueError, match="at least 3 valid"):
        evaluate_pointmap(points, points, np.zeros((1, 2, 2), bool))


def test_dataset_mean_of_per_sequence_values():
    acc = PointMapAccumulator()
    acc.add({**dict.fromkeys(METRIC_KEYS, 1.0), "acc_med": 0.2})
    acc.add({**dict.fromkeys(METRIC_KEYS, 3.0), "acc_med": 0.4, "extra": 9.0})
    m = acc.compute()
    assert acc.num_sequences == 2
    assert m["acc_mean"] == 2.0 and m["acc_med"] == pytest.approx(0.3)  # mean of per-sequence medians
    assert set(m) == set(METRIC_KEYS)
    acc.reset()
    with pytest.raises(ValueError, match="empty"):
        acc.compute()
