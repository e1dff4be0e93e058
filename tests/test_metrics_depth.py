"""Depth masks, alignments, error metrics and pixel-weighted aggregation, on hand-computed cases."""

import math

import pytest
import torch

from fgq.metrics import (
    DepthAccumulator,
    align_depth,
    depth_errors,
    depth_mask,
    evaluate_depth,
    irls_scale,
    l1_scale_shift,
    median_scale,
)
from fgq.metrics.depth import METRIC_KEYS


def positive(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 9 + 1


def test_mask():
    gt = torch.tensor([0.0, -1.0, 2.0, 100.0, math.nan])
    assert depth_mask(gt).tolist() == [False, False, True, True, False]
    assert depth_mask(gt, max_depth=80).tolist() == [False, False, True, False, False]


@pytest.mark.parametrize("method", ["irls_scale", "median", "scale_shift"])
def test_alignments_recover_a_known_scale(method):
    p = positive(200)
    aligned = align_depth(p, 2.5 * p, method)
    assert torch.allclose(aligned, 2.5 * p, rtol=1e-3)


def test_scale_estimates():
    p = positive(500)
    assert irls_scale(p, 2.5 * p).item() == pytest.approx(2.5, rel=1e-9)
    assert median_scale(p, 2.5 * p).item() == pytest.approx(2.5, rel=1e-12)
    assert align_depth(p, 2.5 * p, "none") is p


def test_irls_is_robust_to_outliers_like_l1():
    p = positive(1000)
    g = 2.0 * p
    g[::10] *= 5  # 10 % gross outliers
    assert irls_scale(p, g).item() == pytest.approx(2.0, rel=1e-3)
    assert (g.mean() / p.mean()).item() > 2.5  # its least-squares-like start is far off


def test_irls_scale_is_clamped():
    p = positive(50)
    assert irls_scale(p, 1e-7 * p).item() == pytest.approx(1e-3)


def test_median_is_the_lower_median_like_torch():
    p, g = torch.ones(4, dtype=torch.float64), torch.tensor([1.0, 2.0, 3.0, 10.0], dtype=torch.float64)
    assert median_scale(p, g).item() == 2.0  # numpy's median would give 2.5


def test_scale_and_shift_recovered():
    p = positive(2000)
    # start: s₀ = median(g)/median(p) ≈ 1.029, t₀ = 0; Adam (lr 1e-4) walks to (1.02, 0.05) within 1000 steps
    s, t = l1_scale_shift(p, 1.02 * p + 0.05)
    assert s == pytest.approx(1.02, abs=1e-4)
    assert t == pytest.approx(0.05, abs=1e-3)


def test_scale_and_shift_stops_early_and_runs_under_inference_mode():
    p = positive(200)
    with torch.inference_mode():  # Lightning's test loop
        s, t = l1_scale_shift(p, p)  # already optimal: the loss soon changes by < tol
    assert s == pytest.approx(1.0, abs=1e-3) and t == pytest.approx(0.0, abs=1e-3)
    # an lr so small that nothing moves: the loss is constant, so it stops after the second step
    s, t = l1_scale_shift(p, 3 * p, lr=1e-12)
    assert s == pytest.approx(3.0, abs=1e-9)


def test_errors_by_hand():
    g = torch.tensor([1.0, 2.0, 4.0, 5.0], dtype=torch.float64)
    p = torch.tensor([1.0, 2.5, 2.0, 5.5], dtype=torch.float64)
    m = depth_errors(p, g)
    # p − g = [0, .5, −2, .5]
    assert m["abs_rel"] == pytest.approx((0 + 0.25 + 0.5 + 0.1) / 4)
    assert m["sq_rel"] == pytest.approx((0 + 0.125 + 1.0 + 0.05) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 0.25 + 4 + 0.25) / 4))
    log_ratios = (0.0, math.log(1.25), math.log(0.5), math.log(1.1))
    assert m["log_rmse"] == pytest.approx(math.sqrt(sum(r**2 for r in log_ratios) / 4))
    # max(p/g, g/p) = [1, 1.25, 2, 1.1]; 1.25 is not < 1.25
    assert m["delta_1.25"] == 0.5
    assert m["delta_1.25^2"] == 0.75
    assert m["delta_1.25^3"] == 0.75


def test_non_positive_predictions_are_clamped_only_for_log_and_delta():
    g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    m = depth_errors(torch.tensor([0.0, 1.0], dtype=torch.float64), g)
    assert m["abs_rel"] == pytest.approx(0.5)  # |0 − 1|/1 and 0, unclamped
    assert m["log_rmse"] == pytest.approx(math.sqrt(math.log(1e-5) ** 2 / 2))
    assert m["delta_1.25"] == 0.5


def test_evaluate_masks_aligns_and_counts():
    gt = torch.tensor([[0.0, 2.0], [4.0, 8.0]])
    pred = torch.tensor([[123.0, 1.0], [2.0, 4.0]])  # half of gt where valid; junk where gt = 0
    m = evaluate_depth(pred, gt, alignment="median")
    assert m["valid_pixels"] == 3
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-7) and m["delta_1.25"] == 1.0
    assert set(m) == {*METRIC_KEYS, "valid_pixels"}
    unaligned = evaluate_depth(pred, gt, alignment="none")
    assert unaligned["abs_rel"] == pytest.approx(0.5)
    clipped = evaluate_depth(pred, gt, alignment="median", post_clip_max=5.0)
    assert clipped["abs_rel"] == pytest.approx((8 - 5) / 8 / 3)
    empty = evaluate_depth(pred, torch.zeros_like(gt), alignment="irls_scale")
    assert empty["valid_pixels"] == 0 and math.isnan(empty["abs_rel"])
    with pytest.raises(ValueError, match="alignment"):
        evaluate_depth(pred, gt, alignment="bogus")


def test_one_alignment_per_call():
    gt = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    pred = torch.tensor([[0.5, 1.0], [0.25, 0.5]], dtype=torch.float64)  # frame scales 2 and 4
    per_frame = [evaluate_depth(pred[i], gt[i], alignment="median")["abs_rel"] for i in range(2)]
    assert per_frame == pytest.approx([0.0, 0.0], abs=1e-12)
    # one scale for both frames (video): the lower median ratio is 1.0/1.0 → s = 1/0.5 = 2
    assert evaluate_depth(pred, gt, alignment="median")["abs_rel"] == pytest.approx((0 + 0 + 0.5 + 0.5) / 4)


def test_pixel_weighted_aggregation():
    acc = DepthAccumulator()
    row = dict.fromkeys(METRIC_KEYS, 0.0)
    acc.add({**row, "abs_rel": 0.1, "valid_pixels": 100})
    acc.add({**row, "abs_rel": 0.4, "valid_pixels": 300})
    acc.add({**dict.fromkeys(METRIC_KEYS, math.nan), "valid_pixels": 0})  # no weight, no NaN
    m = acc.compute()
    assert m["abs_rel"] == pytest.approx((0.1 * 100 + 0.4 * 300) / 400)
    assert m["valid_pixels"] == 400
    acc.reset()
    with pytest.raises(ValueError, match="no unit"):
        acc.compute()
