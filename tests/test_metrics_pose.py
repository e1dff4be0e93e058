"""Relative-pose errors, AUC binning and dataset averaging, checked on hand-computed cases."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from fgq.metrics import PoseAccumulator, pose_auc, pose_metrics, relative_pose_errors, translation_error_deg
from fgq.metrics.pose import pair_indices


def w2c(rot: np.ndarray, t: tuple[float, float, float]) -> torch.Tensor:
    return torch.cat((torch.tensor(rot, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)[:, None]), dim=1)


def random_w2c(n: int, seed: int) -> torch.Tensor:
    rots = Rotation.random(n, random_state=seed).as_matrix()
    ts = np.random.default_rng(seed).normal(size=(n, 3, 1))
    return torch.tensor(np.concatenate((rots, ts), axis=2))


# --- AUC ---------------------------------------------------------------------------------------------------------


def test_auc_bin_edges_last_bin_closed():
    errors = np.array([0.0, 1.0, 2.999, 3.0])
    # bins [0,1) [1,2) [2,3]: 0 → bin 0; 1.0 → bin 1; 2.999 and 3.0 → bin 2 (the last bin is closed)
    # hist/N = [1/4, 1/4, 2/4]; cumsum = [0.25, 0.5, 1.0]; mean = 1.75/3
    assert pose_auc(errors, np.zeros(4), 3) == pytest.approx(1.75 / 3, abs=1e-15)
    # The "#(e < k)" form would give (1 + 2 + 3)/4/3 = 0.5: it misses the e == T pair.
    # Just above T is outside every bin: hist/N = [1/4, 1/4, 1/4] → cumsum [.25, .5, .75] → mean 0.5
    assert pose_auc(np.array([0.0, 1.0, 2.999, 3.0001]), np.zeros(4), 3) == pytest.approx(0.5, abs=1e-15)


def test_auc_uses_the_larger_of_the_two_errors():
    # max(0.5, 1.5) = 1.5 → bin [1, 2] of T = 2: cumsum [0, 1] → 0.5
    assert pose_auc(np.array([0.5]), np.array([1.5]), 2) == pytest.approx(0.5)
    assert pose_auc(np.array([1.5]), np.array([0.5]), 2) == pytest.approx(0.5)


def test_auc_of_zero_errors_is_one():
    for t in (30, 15, 5, 3, 1):
        assert pose_auc(np.zeros(7), np.zeros(7), t) == 1.0


def test_auc_equals_mean_fraction_below_each_integer_away_from_edges():
    rng = np.random.default_rng(0)
    rot, trans = rng.uniform(0, 40, 1000) + 1e-6, rng.uniform(0, 40, 1000) + 1e-6
    e = np.maximum(rot, trans)
    assert not np.any(np.isin(e, np.arange(41)))
    for t in (30, 15, 5, 3):
        expected = np.mean([np.mean(e < k) for k in range(1, t + 1)])
        assert pose_auc(rot, trans, t) == pytest.approx(expected, abs=1e-12)


def test_auc_rejects_non_integer_thresholds():
    with pytest.raises(ValueError, match="positive integer"):
        pose_auc(np.zeros(2), np.zeros(2), 2.5)
    with pytest.raises(ValueError, match="positive integer"):
        pose_auc(np.zeros(2), np.zeros(2), 0)


def test_pose_metrics_keys_and_units():
    rot, trans = np.array([1.0, 10.0]), np.array([2.0, 40.0])
    m = pose_metrics(rot, trans, thresholds=(30, 3))
    assert set(m) == {"auc@30", "auc@3", "rra@30", "rta@30", "rra@3", "rta@3"}
    assert m["rra@30"] == 100.0 and m["rta@30"] == 50.0  # percent
    assert m["rra@3"] == 50.0 and m["rta@3"] == 50.0
    # max errors [2, 40]; T = 3: bins [0,1) [1,2) [2,3] → hist/N [0, 0, 1/2] → cumsum mean (1/2)/3
    assert m["auc@3"] == pytest.approx(1 / 6)


# --- relative pose errors ---------------------------------------------------------------------------------------


def test_pair_order():
    i1, i2 = pair_indices(4)
    assert list(zip(i1.tolist(), i2.tolist(), strict=True)) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_rotation_error_of_a_known_rotation():
    eye = np.eye(3)
    gt = torch.stack((w2c(eye, (0, 0, 0)), w2c(eye, (1, 0, 0))))
    pred = torch.stack((w2c(eye, (0, 0, 0)), w2c(Rotation.from_euler("y", 10, degrees=True).as_matrix(), (1, 0, 0))))
    for convention in ("fgq", "recons_eval"):
        rot_err, _ = relative_pose_errors(pred, gt, convention)
        assert rot_err.item() == pytest.approx(10.0, abs=1e-6)


def test_translation_error_is_an_angle_between_lines():
    eye = np.eye(3)
    gt = torch.stack((w2c(eye, (0, 0, 0)), w2c(eye, (1, 0, 0))))

    def err(t: tuple[float, float, float]) -> float:
        pred = torch.stack((w2c(eye, (0, 0, 0)), w2c(eye, t)))
        return relative_pose_errors(pred, gt)[1].item()

    assert err((0, 1, 0)) == pytest.approx(90.0, abs=1e-6)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert err((c, 0, s)) == pytest.approx(30.0, abs=1e-6)
    assert err((3, 0, 0)) == pytest.approx(0.0, abs=1e-5)  # scale is ignored
    # Reversed direction: the squared cosine makes it 0, not 180 (arccos(√(1 − 1e-15)) ≈ 1.8e-6°).
    assert err((-1, 0, 0)) == pytest.approx(0.0, abs=1e-5)


def test_non_finite_translation_error_is_replaced_before_conversion():
    bad = translation_error_deg(torch.tensor([[math.nan, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    big = 1e6 * 180.0 / math.pi
    assert bad.item() == pytest.approx(big - 180.0)  # min(e, |180 − e|)


def test_perfect_prediction_scores_zero():
    gt = random_w2c(5, seed=1)
    rot_err, trans_err = relative_pose_errors(gt, gt)
    assert rot_err.shape == trans_err.shape == (10,)
    assert torch.all(rot_err < 1e-5) and torch.all(trans_err < 1e-5)  # only the 1e-15 clamps remain
    # float32 (the reference's precision): arccos near 1 turns rounding into up to ~0.1°, far below one AUC bin
    rot_err, trans_err = relative_pose_errors(gt.float(), gt.float())
    assert torch.all(rot_err < 0.1) and torch.all(trans_err < 0.1)


def test_conventions_agree_on_rotation_but_not_translation():
    gt, pred = random_w2c(6, seed=2), random_w2c(6, seed=3)
    rot_a, trans_a = relative_pose_errors(pred, gt, "fgq")
    rot_b, trans_b = relative_pose_errors(pred, gt, "recons_eval")
    assert torch.allclose(rot_a, rot_b, atol=1e-6)
    assert not torch.allclose(trans_a, trans_b, atol=1e-3)


def test_homogeneous_inputs_and_errors():
    gt, pred = random_w2c(4, seed=4), random_w2c(4, seed=5)
    bottom = torch.tensor([[[0.0, 0, 0, 1]]], dtype=torch.float64).expand(4, 1, 4)
    a = relative_pose_errors(pred, gt)
    b = relative_pose_errors(torch.cat((pred, bottom), 1), torch.cat((gt, bottom), 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="convention"):
        relative_pose_errors(pred, gt, "bogus")
    with pytest.raises(ValueError, match="frames"):
        relative_pose_errors(pred[:3], gt)


# --- dataset averaging ------------------------------------------------------------------------------------------


def filled(averaging: str) -> PoseAccumulator:
    acc = PoseAccumulator(averaging=averaging, thresholds=(3,))
    # added out of order on purpose: categories are sorted, pooled ignores them
    acc.add_errors(np.array([0.0, 1.5, 0.0]), np.array([0.0, 0.0, 10.0]), category="b")
    acc.add_errors(np.array([0.0]), np.array([0.0]), category="a")
    return acc


def test_per_category_then_mean_by_hand():
    m = filled("per_category").compute()
    # a: max errors [0] → AUC@3 = 1.  b: max errors [0, 1.5, 10] → hist/N [1/3, 1/3, 0] → cumsum [1/3, 2/3, 2/3]
    # → AUC@3 = 5/9.  Mean over categories: (1 + 5/9)/2 = 7/9.
    assert m["auc@3"] == pytest.approx(7 / 9)
    assert m["rra@3"] == pytest.approx(100.0)  # a 100, b 100
    assert m["rta@3"] == pytest.approx((100.0 + 200 / 3) / 2)  # a 100, b 2/3


def test_pooled_by_hand():
    acc = filled("pooled")
    m = acc.compute()
    # max errors [0, 1.5, 10, 0] → hist/N [2/4, 1/4, 0] → cumsum [.5, .75, .75] → AUC@3 = 2/3
    assert m["auc@3"] == pytest.approx(2 / 3)
    assert m["rta@3"] == pytest.approx(75.0)
    assert acc.num_pairs == 4
    assert set(acc.category_metrics()) == {"a", "b"}


def test_accumulator_from_poses_and_reset():
    acc = PoseAccumulator(averaging="per_category")
    gt = random_w2c(10, seed=6).float()
    acc.add(gt, gt, category="chair")
    acc.add(gt, gt, category="apple")
    assert acc.num_pairs == 90
    m = acc.compute()
    assert [k for k in m if k.startswith("auc")] == ["auc@30", "auc@15", "auc@5", "auc@3"]
    assert all(m[f"auc@{t}"] == 1.0 for t in (30, 15, 5, 3))
    acc.reset()
    with pytest.raises(ValueError, match="empty"):
        acc.compute()


def test_averaging_has_no_default():
    with pytest.raises(TypeError):
        PoseAccumulator()  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="averaging"):
        PoseAccumulator(averaging="mean")  # type: ignore[arg-type]
