"""QuaRot-style rotation: FP invariance with the quantizers off, outlier flattening beats plain RTN on an
outlier-heavy layer, RTN/GPTQ weight paths, determinism, save and reload, the YAML."""

import pytest
import torch
from helpers import assert_reload_identical, composed, fixture_images, fixture_pi3, fixture_vggt, model_outputs

from fgq.quant import QuantSpec, QuaRotConfig, quantize
from fgq.quant.gptq import GPTQConfig, HessianAccumulator
from fgq.quant.hadamard import HadamardRotation
from fgq.quant.linear import QuantLinear
from fgq.quant.primitives import quantize_activation
from fgq.quant.quarot import RotatedLinear

pytestmark = pytest.mark.usefixtures("one_thread")

W4A4 = QuantSpec(w_bits=4, a_bits=4)
CALIB = [{"images": fixture_images((1, 2, 3, 28, 28), seed=k)} for k in range(2)]
IMAGES = fixture_images((1, 2, 3, 28, 28), seed=9)
def _outputs(model):
    return model_outputs(model, IMAGES)


@pytest.mark.parametrize(("family", "weight_quantizer"), [("vggt", "rtn"), ("vggt", "gptq"), ("pi3", "rtn")])
def test_rotated_model_equals_fp_with_quantizers_off(family, weight_quantizer):
    build = fixture_vggt if family == "vggt" else fixture_pi3
    fp, model = build(), build()
    cost = quantize(model, QuaRotConfig(weight_quantizer=weight_quantizer), QuantSpec(), calib=CALIB)
    rotated = [m for m in model.modules() if isinstance(m, RotatedLinear)]
    assert len(rotated) == 4 * len(model.quant_view().blocks) == cost["rotated_linears"]
    assert not torch.allclose(rotated[0].weight, fp.quant_view().blocks[0].linears["qkv"].weight)  # W·R stored
    expected, got = _outputs(fp), _outputs(model)
    for key, value in expected.items():
        scale = value.abs().max()
        assert (got[key] - value).abs().max() <= 1e-5 * scale, key


def test_rotation_flattens_outliers_per_token_a4():
    """A layer whose input has a few huge channels: per-token 4-bit quantization of x·R loses far less."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 128, generator=g)
    x[:, [3, 77]] *= 50.0
    linear = torch.nn.Linear(128, 64)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(64, 128, generator=g) / 128**0.5)
    ref = linear(x).detach()
    spec = QuantSpec(w_bits=16, a_bits=4)
    plain = QuantLinear(linear, spec)
    with torch.no_grad():
        err_plain = (plain(x) - ref).pow(2).mean()
    rotated = RotatedLinear(torch.nn.Linear(128, 64), spec, HadamardRotation(128, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        rotated.weight.copy_(rotated.rotation.rotate(linear.weight))
        rotated.bias.copy_(linear.bias)
        err_rot = (rotated(x) - ref).pow(2).mean()
    assert err_rot < 0.5 * err_plain, (float(err_rot), float(err_plain))


def test_quantize_input_rotates_first_so_gptq_sees_x_times_r():
    rot = HadamardRotation(64, torch.Generator().manual_seed(2))
    layer = RotatedLinear(torch.nn.Linear(64, 8), W4A4, rot)
    x = torch.randn(3, 10, 64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(layer.quantize_input(x), quantize_activation(rot(x), 4))
    hook = HessianAccumulator()
    handle = layer.register_forward_hook(hook)
    with torch.no_grad():
        layer(x)
    handle.remove()
    xq = quantize_activation(rot(x), 4).reshape(-1, 64)
    assert torch.allclose(hook.H, 2 / 3 * xq.T @ xq, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_quantizer", ["rtn", "gptq"])
def test_w4a4_end_to_end_weights_on_the_grid_and_deterministic(weight_quantizer):
    config = QuaRotConfig(weight_quantizer=weight_quantizer)
    model = fixture_vggt()
    cost = quantize(model, config, W4A4, calib=CALIB)
    assert cost["quantized_linears"] == 32 and cost["fallback_rotations"] == 0
    assert ("blocks" in cost) == (weight_quantizer == "gptq")
    for layer in (m for m in model.modules() if isinstance(m, RotatedLinear)):
        assert layer.weight_is_quantized
        assert max(len(row.unique()) for row in layer.weight) <= 16  # 4-bit codes per output channel
    out = _outputs(model)
    assert all(torch.isfinite(v).all() for v in out.values())
    again = fixture_vggt()
    quantize(again, config, W4A4, calib=CALIB)
    assert all(torch.equal(v, _outputs(again)[k]) for k, v in out.items())
    other = fixture_vggt()
    quantize(other, QuaRotConfig(weight_quantizer=weight_quantizer, seed=1), W4A4, calib=CALIB)
    assert not torch.equal(out["depth"], _outputs(other)["depth"])


def test_gptq_needs_calibration_data_rtn_does_not():
    quantize(fixture_vggt(), QuaRotConfig(), W4A4)  # no data needed
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize(fixture_vggt(), QuaRotConfig(weight_quantizer="gptq"), W4A4)


@pytest.mark.parametrize("weight_quantizer", ["rtn", "gptq"])
def test_save_and_reload_gives_identical_outputs(tmp_path, weight_quantizer):
    config = QuaRotConfig(weight_quantizer=weight_quantizer)
    model = fixture_vggt()
    quantize(model, config, W4A4, calib=CALIB)
    assert_reload_identical(model, config, W4A4, tmp_path, IMAGES)


def test_config_yaml_and_validation():
    config = composed("quantizer", "quarot")
    assert isinstance(config, QuaRotConfig) and config == QuaRotConfig()
    assert isinstance(config.gptq, GPTQConfig)
    assert composed("quantizer", "quarot", ("quantizer.gptq.percdamp=0.1",)).gptq.percdamp == 0.1
    with pytest.raises(ValueError, match="weight_quantizer"):
        QuaRotConfig(weight_quantizer="awq")
