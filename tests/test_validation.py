"""The Fisher-as-sensitivity-proxy validation (fgq/validation/): shapes and ranges, the measured side against a
by-hand one-block quantization, exact quantization measures 0, the uniform-noise model by hand, the model is
left untouched, the picture, and the job (compose API, Fisher cache)."""

import copy
import json
import math

import pytest
import torch
from conftest import ROOT
from helpers import fixture_images, fixture_pi3, fixture_vggt
from hydra import compose, initialize_config_dir
from torch import nn

from fgq.fisher.compute import TASKS, compute_fisher
from fgq.fisher.plots import save_scatter
from fgq.quant import QuantSpec
from fgq.quant.linear import swap_linears
from fgq.validation.correlation import correlations, predicted_loss, uniform_noise_variance
from fgq.validation.job import run_fisher_validation
from fgq.validation.measure import fisher_validation

pytestmark = pytest.mark.usefixtures("one_thread")


SHAPE = (1, 2, 3, 28, 28)  # one clip of 2 frames, 2×2 patches
CLIPS = [{"images": fixture_images(SHAPE, seed=k)} for k in range(2)]
W4A4 = QuantSpec(w_bits=4, a_bits=4)


@pytest.fixture(scope="module")
def model():
    return fixture_vggt()


@pytest.fixture(scope="module")
def fisher(model):
    return compute_fisher(model, CLIPS)


@pytest.fixture(scope="module")
def result(model, fisher):
    return fisher_validation(model, CLIPS, W4A4, fisher=fisher)


def _r_values(r: dict):
    return [r[k] for k in ("pearson", "spearman", "pearson_log10", "spearman_log10")]


def test_one_value_per_block_and_task(model, result):
    blocks = len(model.quant_view().blocks)
    assert result["blocks"] == ["F0", "G0", "F1", "G1", "F2", "G2", "F3", "G3"]
    assert result["clips"] == 2
    for side in (result, result["alternative"]):
        assert set(side["tasks"]) == set(TASKS)
        for task in TASKS:
            for key in ("predicted", "measured") if side is result else ("predicted",):
                values = side["tasks"][task][key]
                assert len(values) == blocks
                assert all(math.isfinite(v) and v >= 0 for v in values)
        for group in (*side["tasks"].values(), side["pooled"], side["pooled_normalized"]):
            for r in _r_values(group):
                assert r is None or -1.0 - 1e-9 <= r <= 1.0 + 1e-9
    for task in TASKS:  # W4A4 damages every block a little: every r is defined
        assert all(r is not None for r in _r_values(result["tasks"][task]))
        assert max(result["tasks"][task]["measured"]) > 0
    json.dumps(result)  # JSON-able


def test_measured_side_by_hand(model, result):
    """Block 3 quantized by hand (RTN weights written in, per-token A4) on a copy: the per-task output MSE."""
    view = model.quant_view()
    ref = view.blocks[3]
    quant = copy.deepcopy(model)
    names = [f"{ref.name}.{path}" for path in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    with torch.no_grad():
        for layer in swap_linears(quant, names, W4A4).values():
            layer.weight.copy_(layer.quantized_weight())
            layer.weight_is_quantized = True
        totals = dict.fromkeys(TASKS, 0.0)
        for clip in CLIPS:
            fp = view.task_outputs(model(clip["images"]))
            q = quant.quant_view().task_outputs(quant(clip["images"]))
            for task in TASKS:
                totals[task] += float((q[task] - fp[task]).square().mean())
    for task in TASKS:
        assert result["tasks"][task]["measured"][3] == pytest.approx(totals[task] / len(CLIPS), rel=1e-5, abs=1e-30)


def test_model_is_left_untouched(fisher):
    model = fixture_vggt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out_before = model(CLIPS[0]["images"])["depth"]
    fisher_validation(model, CLIPS[:1], W4A4, fisher=fisher)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(type(lin) is nn.Linear for lin in model.quant_view().linear_names().values())
    with torch.no_grad():
        assert torch.equal(model(CLIPS[0]["images"])["depth"], out_before)


def test_exact_quantization_measures_zero(model, fisher):
    exact = fisher_validation(model, CLIPS[:1], QuantSpec(w_bits=16, a_bits=16), fisher=fisher)
    for task in TASKS:
        assert exact["tasks"][task]["measured"] == [0.0] * 8
        assert exact["tasks"][task]["predicted"] == [0.0] * 8  # measured Δh = 0 too
        assert exact["tasks"][task]["pearson"] is None  # undefined, not NaN
    assert exact["noise_bits"] == 16


def test_uniform_noise_by_hand():
    absmax = torch.tensor([[1.0, 2.0], [0.5, 0.0]])
    var = uniform_noise_variance(absmax, 4)
    expected = torch.tensor([[(2 / 16) ** 2 / 12, (4 / 16) ** 2 / 12], [(1 / 16) ** 2 / 12, 0.0]], dtype=torch.float64)
    assert torch.allclose(var, expected, rtol=1e-12, atol=0)
    fisher = torch.tensor([[[3.0, 1.0], [2.0, 5.0]]])  # one task, two blocks, two channels
    pred = predicted_loss(fisher, var)
    assert pred.shape == (1, 2)
    assert pred[0, 0].item() == pytest.approx(3 * (2 / 16) ** 2 / 12 + 1 * (4 / 16) ** 2 / 12, rel=1e-12)
    assert pred[0, 1].item() == pytest.approx(2 * (1 / 16) ** 2 / 12, rel=1e-12)


def test_uniform_side_uses_block_output_absmax(model, fisher, result):
    """The uniform-noise prediction of the run = Σ_c F·(2·absmax/2^4)²/12 with absmax of the FP block outputs."""
    view = model.quant_view()
    absmax = torch.zeros(len(view.blocks), fisher.shape[-1], dtype=torch.float64)
    handles = [ref.module.register_forward_hook(
        lambda _m, _a, out, i=i: absmax.__setitem__(i, torch.maximum(
            absmax[i], out.detach().abs().reshape(-1, out.shape[-1]).amax(0).double()))) for i, ref in
        enumerate(view.blocks)]
    try:
        with torch.no_grad():
            for clip in CLIPS:
                model(clip["images"])
    finally:
        for h in handles:
            h.remove()
    pred = predicted_loss(fisher, uniform_noise_variance(absmax, 4))
    assert result["alternative"]["noise"] == "uniform" and result["noise_bits"] == 4
    for k, task in enumerate(TASKS):
        assert result["alternative"]["tasks"][task]["predicted"] == pytest.approx(pred[k].tolist(), rel=1e-6)


def test_correlations():
    r = correlations([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.5])
    assert r["pearson"] == pytest.approx(0.998, abs=2e-3) and r["spearman"] == pytest.approx(1.0)
    assert r["n_log10"] == 4
    r = correlations([0.0, 1.0, 10.0, 100.0], [5.0, 10.0, 100.0, 1000.0])  # the 0 is dropped on log10
    assert r["n_log10"] == 3 and r["pearson_log10"] == pytest.approx(1.0)
    assert correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["pearson"] is None


def test_flatquant_wrap_runs(fisher):
    wrapped = fisher_validation(fixture_vggt(), CLIPS[:1], W4A4, fisher=fisher, wrap="flatquant")
    assert wrapped["wrap"] == "flatquant"
    for task in TASKS:
        assert all(math.isfinite(v) and v >= 0 for v in wrapped["tasks"][task]["measured"])
        assert max(wrapped["tasks"][task]["measured"]) > 0


def test_pi3_blocks():
    out = fisher_validation(fixture_pi3(), CLIPS[:1], W4A4)
    assert out["blocks"] == ["D0", "D1", "D2", "D3"]
    assert all(len(out["tasks"][t]["measured"]) == 4 for t in TASKS)


def test_scatter_png(result, tmp_path):
    path = save_scatter(result, tmp_path)
    assert path == tmp_path / "fisher_validation.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_job_writes_metrics_and_reuses_the_fisher_cache(tmp_path):
    overrides = ["experiment=fisher_validation", "logger=none", "calib.num_clips=2", "calib.frames=2",
                 "calib.sources.synthetic.height=28", "calib.sources.synthetic.width=28",
                 f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert cfg.job == "fisher_validation" and cfg.bits.w_bits == 4 and cfg.bits.a_bits == 4
    choices = {"model": "vggt_tiny", "bits": "w4a4", "experiment": "fisher_validation"}
    first = run_fisher_validation(cfg, tmp_path / "a", choices)
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["choices"] == choices and saved["spec"]["w_bits"] == 4
    assert saved["fisher"]["cache_hit"] is False
    v = saved["validation"]
    assert v["clips"] == 2 and len(v["blocks"]) == 8
    assert all(len(v["tasks"][t]["predicted"]) == len(v["tasks"][t]["measured"]) == 8 for t in TASKS)
    assert "measured/camera/pearson" in saved["r"] and "uniform/pooled/spearman" in saved["r"]
    assert (tmp_path / "a" / "fisher_validation.png").is_file()
    second = run_fisher_validation(cfg, tmp_path / "b", choices)
    assert second["fisher"]["cache_hit"] is True
    assert second["validation"]["tasks"] == first["validation"]["tasks"]
