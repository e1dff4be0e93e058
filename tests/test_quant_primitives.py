"""Fake-quant primitives, QuantSpec validation, QuantLinear and RTN properties."""

import pytest
import torch
from helpers import fixture_images, fixture_vggt

from fgq.quant import QuantLinear, QuantSpec, RTNConfig, quantize
from fgq.quant.primitives import qparams, quantize_activation, quantize_weight, round_ste


def test_symmetric_hand_case():
    # absmax 7 → scale 1 at 4 bits (qmax 7): values round to integers, half to even
    x = torch.tensor([[-7.0, -2.5, 0.4, 3.5, 7.0]])
    assert quantize_weight(x, 4).tolist() == [[-7.0, -2.0, 0.0, 4.0, 7.0]]
    scale, zero, qmin, qmax = qparams(x, 4, True, weight=True)
    assert scale.item() == 1.0 and zero.item() == 0 and (qmin, qmax) == (-8, 7)


def test_symmetric_clip_reaches_code_minus_8():
    x = torch.tensor([[-7.0, 7.0]])
    out = quantize_weight(x, 4, clip=0.5)  # scale 0.5: −7 → −14 clamps to −8 → −4
    assert out.tolist() == [[-4.0, 3.5]]


def test_asymmetric_hand_case():
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    scale, zero, qmin, qmax = qparams(x, 2, False, weight=True)  # range [0, 3], 3 steps
    assert scale.item() == 1.0 and zero.item() == 0 and (qmin, qmax) == (0, 3)
    assert torch.equal(quantize_weight(x, 2, sym=False), x)
    assert torch.equal(quantize_weight(torch.zeros(1, 4), 4, sym=False), torch.zeros(1, 4))  # degenerate row


def test_gptq_grid_symmetric():
    x = torch.tensor([[-1.5, 0.2, 1.5]])
    scale, zero, qmin, qmax = qparams(x, 4, True, weight=True, grid="gptq")
    assert abs(scale.item() - 3.0 / 15) < 1e-7 and zero.item() == 8 and (qmin, qmax) == (0, 15)
    # the largest positive value is clipped to 7·scale on this grid
    assert abs(quantize_weight(x, 4, grid="gptq")[0, 2].item() - 7 * 3.0 / 15) < 1e-6


def test_activation_scale_one_for_zero_tokens_and_per_token():
    x = torch.tensor([[0.0, 0.0, 0.0], [0.9, -2.0, 0.5], [100.0, 1.0, -1.0]])
    out = quantize_activation(x, 4)
    assert torch.equal(out[0], x[0])
    assert torch.allclose(out[1], torch.tensor([0.8571, -2.0, 0.5714]), atol=1e-4)  # scale 2/7 for token 1 only


def test_group_quantization_uses_one_scale_per_group():
    w = torch.cat((torch.full((1, 4), 0.01), torch.full((1, 4), 10.0)), dim=1)
    w[0, 0] = 0.02
    per_channel = quantize_weight(w, 4)
    grouped = quantize_weight(w, 4, group_size=4)
    assert (per_channel[0, :4] == 0).all()  # small values vanish next to 10.0
    assert (grouped[0, :4] != 0).all()
    with pytest.raises(ValueError, match="group size"):
        quantize_weight(w, 4, group_size=3)


def test_rtn_error_shrinks_with_bits_w8_near_lossless_and_idempotent():
    w = torch.randn(64, 128)
    errors = [(quantize_weight(w, b) - w).pow(2).mean().item() for b in (2, 3, 4, 8)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-4 * w.pow(2).mean().item()
    once = quantize_weight(w, 4)
    assert torch.equal(quantize_weight(once, 4), once)
    x = torch.randn(10, 128)
    assert torch.equal(quantize_activation(quantize_activation(x, 4), 4), quantize_activation(x, 4))


def test_ste_passes_gradients():
    x = torch.tensor([0.3, 1.7], requires_grad=True)
    round_ste(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]
    w = torch.randn(4, 8, requires_grad=True)
    quantize_weight(w, 4).sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("bad", [dict(w_bits=1), dict(a_bits=17), dict(w_bits=4.0), dict(w_bits=True),
                                 dict(w_granularity="group:0"), dict(w_granularity="row"), dict(grid="int"),
                                 dict(a_clip_ratio=0.0)])
def test_quant_spec_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(**bad)


def test_quant_spec_properties():
    spec = QuantSpec(w_bits=4, a_bits=16, w_granularity="group:64")
    assert spec.group_size == 64 and spec.quantizes_weights and not spec.quantizes_activations
    assert QuantSpec().is_fp and spec.tag == "w4a16"


def test_quant_linear_keeps_keys_and_matches_linear_at_16_bits():
    layer = torch.nn.Linear(8, 4)
    q = QuantLinear(layer, QuantSpec())
    x = torch.randn(3, 8)
    assert torch.equal(q(x), layer(x))
    assert set(q.state_dict()) == {"weight", "bias"}


def test_rtn_on_model_swaps_only_block_linears():
    model = fixture_vggt()
    images = fixture_images((1, 2, 3, 28, 28))
    keys = list(model.state_dict())
    with torch.no_grad():
        before = model(images)
    cost = quantize(model, RTNConfig(), QuantSpec(w_bits=8, a_bits=8))
    quantized = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    assert cost["quantized_linears"] == len(quantized) == 4 * 8
    assert all(n.startswith(("aggregator.frame_blocks", "aggregator.global_blocks")) for n in quantized)
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        after = model(images)
    rel = (after["world_points"] - before["world_points"]).norm() / before["world_points"].norm()
    assert 0 < rel < 0.05  # W8A8 is close to lossless
    with pytest.raises(ValueError, match="already quantized"):
        quantize(model, RTNConfig(), QuantSpec(w_bits=8, a_bits=8))


def test_unregistered_config_type():
    with pytest.raises(ValueError, match="no quantizer registered"):
        quantize(fixture_vggt(), object(), QuantSpec())
