"""The paired bootstrap over evaluation sequences (fgq.sweeps.intervals): coverage on draws with a known mean,
pairing, strata (pose per category), the spread over seeds, and a refusal to pair different evaluation sets."""

import numpy as np
import pytest

from fgq.metrics.pointmap import METRIC_KEYS
from fgq.sweeps.figures import degradation, degradation_bars
from fgq.sweeps.intervals import Estimate, PairedBootstrap
from fgq.sweeps.table import Column, Row, Table

POINTS = {"tasks": ["points"], "icp": False}


def _points(values, names=None) -> dict:
    names = names or [f"s{i}" for i in range(len(values))]
    return {"points": [{"sequence": n, **dict.fromkeys(METRIC_KEYS, float(v))} for n, v in zip(names, values,
                                                                                             strict=True)]}


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 120
    for trial in range(trials):
        draws = rng.normal(2.0, 1.0, size=40)
        estimate = PairedBootstrap([[_points(draws)]], POINTS, resamples=300, seed=trial).estimate(
            "points", "acc_mean")
        assert estimate.value == pytest.approx(draws.mean())
        hits += estimate.low <= 2.0 <= estimate.high
    assert 0.88 <= hits / trials <= 0.99  # percentile bootstrap of a mean, n = 40: close to nominal


def test_paired_difference_removes_the_shared_sequence_variation():
    base = np.random.default_rng(1).normal(0.0, 5.0, size=30)  # sequences differ a lot in difficulty
    fp, method = _points(base), _points(base + 0.1)  # the method is uniformly 0.1 worse
    boot = PairedBootstrap([[method], [fp]], POINTS, resamples=200)
    diff = boot.estimate("points", "acc_mean", [1, -1])
    assert diff.value == pytest.approx(0.1) and diff.significant
    assert diff.high - diff.low < 1e-9  # paired: the same sequences on both sides, so no sequence noise
    alone = boot.estimate("points", "acc_mean")
    assert alone.half_width > 0.5 and alone.low < alone.value < alone.high


def test_seeds_widen_the_interval_and_are_averaged():
    values = np.random.default_rng(2).normal(0.0, 1.0, size=30)
    one = PairedBootstrap([[_points(values)]], POINTS, resamples=300).estimate("points", "acc_mean")
    seeds = [_points(values - 1.0), _points(values + 1.0)]
    two = PairedBootstrap([seeds], POINTS, resamples=300).estimate("points", "acc_mean")
    assert two.value == pytest.approx(one.value)  # the mean over seeds
    assert two.half_width > one.half_width


def test_per_category_pose_is_resampled_within_categories():
    rows = [{"sequence": f"{c}{i}", "category": c, "rot_err_deg": [1.0], "trans_err_deg": [1.0]}
            for c, n in (("apple", 3), ("bench", 7)) for i in range(n)]
    boot = PairedBootstrap([[{"camera": rows}]], {"tasks": ["camera"], "pose_averaging": "per_category"})
    for _ in range(20):
        draw = boot._draw()
        assert sum(s.startswith("apple") for s in draw) == 3 and sum(s.startswith("bench") for s in draw) == 7


def test_different_evaluation_sets_cannot_be_paired():
    with pytest.raises(ValueError, match="different sequences"):
        PairedBootstrap([[_points([1.0, 2.0])], [_points([1.0, 2.0], ["a", "b"])]], POINTS)


def test_degradation_figure_bars_carry_the_paired_interval(tmp_path):
    """Fig. 2's bars: % of FP, positive = worse, with the paired interval of method − FP as the error bar."""
    columns = [Column("metric", "auc@30", "synthetic", "camera"), Column("metric", "abs_rel", "synthetic", "depth")]
    fp = Row("FP", "FP", None, [0.5, 0.2], intervals=[Estimate(0.5, 0.45, 0.55), Estimate(0.2, 0.18, 0.22)])
    rtn = Row("w4a3", "RTN", None, [0.4, 0.21], vs_fp=[Estimate(-0.1, -0.15, -0.05), Estimate(0.01, -0.002, 0.02)])
    bars = degradation_bars(Table("t", columns, [fp, rtn]))
    (auc, absrel), = bars["w4a3"].values()
    assert auc == pytest.approx((20.0, 10.0, 30.0))  # AUC 0.5 → 0.4 is 20 % worse, interval 10–30 %
    assert absrel == pytest.approx((5.0, -1.0, 10.0))  # AbsRel 0.2 → 0.21 is 5 % worse; the interval crosses 0
    assert degradation(Table("t", columns, [fp, rtn]), tmp_path / "fig.png").is_file()
