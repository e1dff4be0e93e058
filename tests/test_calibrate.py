"""The calibration engine: block order, what it caches, FP vs quantized propagation."""

import pytest
import torch
from helpers import fixture_images, fixture_pi3, fixture_vggt

from fgq.quant.calibrate import calibrate_blocks

CALIB = [{"images": fixture_images((1, 2, 3, 28, 28), seed=k)} for k in range(3)]


def _perturb(ref):
    with torch.no_grad():
        ref.module.mlp.fc2.bias.add_(0.5)  # stands in for "quantizing" the block


@pytest.mark.parametrize("factory", [fixture_vggt, fixture_pi3])
def test_engine_visits_blocks_in_order_and_caches_one_block(factory):
    model = factory()
    view = model.quant_view()
    seen = []

    def block_fn(ref, data):
        seen.append(ref.name)
        assert len(data.inputs) == len(data.targets) == len(CALIB)
        for sample, target in zip(data.inputs, data.targets, strict=True):
            assert sample.x.device.type == "cpu" and sample.x.dtype == torch.bfloat16
            assert sample.x.shape == target.shape and sample.x.dim() == 4  # one block's [B,S,P,C], nothing more
        return {"custom": 1.0}

    result = calibrate_blocks(view, CALIB, block_fn, propagate="fp", device=torch.device("cpu"),
                              cache_dtype=torch.bfloat16)
    assert seen == [ref.name for ref in view.blocks]
    x, _ = view.embed(CALIB[0]["images"])
    one_block = 2 * len(CALIB) * x.numel() * 2 / 2**20  # inputs + targets, bf16
    for record in result["blocks"]:
        assert record["custom"] == 1.0 and record["time_s"] >= 0
        assert record["cached_mb"] == pytest.approx(one_block)


def _final_inputs(propagate):
    model = fixture_vggt()
    view = model.quant_view()
    captured = {}

    def block_fn(ref, data):
        if ref.index == len(view.blocks) - 1:
            captured["x"] = [s.x for s in data.inputs]
        _perturb(ref)
        return {}

    calibrate_blocks(view, CALIB, block_fn, propagate=propagate, device=torch.device("cpu"))
    return captured["x"], fixture_vggt()


def test_fp_propagation_feeds_fp_outputs():
    inputs, fp_model = _final_inputs("fp")
    view = fp_model.quant_view()
    with torch.no_grad():
        x, pos = view.embed(CALIB[0]["images"])
        for ref in view.blocks[:-1]:
            x = view.run_block(ref, x, pos)
    assert torch.allclose(inputs[0], x, atol=1e-5)


def test_quant_propagation_feeds_quantized_outputs():
    inputs, fp_model = _final_inputs("quant")
    view = fp_model.quant_view()
    with torch.no_grad():
        x, pos = view.embed(CALIB[0]["images"])
        for ref in view.blocks[:-1]:
            _perturb(ref)
            x = view.run_block(ref, x, pos)
    assert torch.allclose(inputs[0], x, atol=1e-5)


def test_empty_calibration_data_is_an_error():
    with pytest.raises(ValueError, match="calibration data is empty"):
        calibrate_blocks(fixture_vggt().quant_view(), [], lambda r, d: {}, propagate="fp",
                         device=torch.device("cpu"))
