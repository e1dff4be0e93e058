"""FlatQuant: transforms, FP invariance of the transformed block (before and after reparameterisation),
calibration beats RTN, the block loss, end-to-end quantization of tiny VGGT / π3, determinism."""

import copy
import math

import pytest
import torch
from conftest import ROOT
from helpers import composed, fixture_images, fixture_pi3, fixture_vggt
from omegaconf import OmegaConf

from fgq.quant import QuantSpec, quantize
from fgq.quant.flat_block import FlatQuantBlock, fake_quant_clipped
from fgq.quant.flatquant import (
    FlatQuantConfig,
    _replace_block,
    block_loss,
    flatquant_calibrate,
    rebuild_flatquant,
)
from fgq.quant.linear import swap_linears
from fgq.quant.primitives import quantize_activation
from fgq.quant.transforms import (
    KroneckerTransform,
    SingleTransform,
    TransformMatrix,
    get_decompose_dim,
    kron_apply,
)

W4A4 = QuantSpec(w_bits=4, a_bits=4)


def _randomize(module: torch.nn.Module, seed: int, noise: float = 0.3) -> None:
    """Move every trainable tensor away from its init: transform factors get noise (non-orthogonal,
    non-identity), σ and diagonals random positive values, clip logits random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            if "clip_factor" in name:
                p.copy_(1.5 + 3.0 * torch.rand(p.shape, generator=g))
            elif "diag" in name:
                p.copy_(torch.exp(0.5 * torch.randn(p.shape, generator=g)))
            else:
                p.add_(noise * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------------------------------------------------------
# transforms


def test_decompose_dims():
    assert get_decompose_dim(1024) == (32, 32)
    assert get_decompose_dim(4096) == (64, 64)
    assert get_decompose_dim(3072) == (48, 64)
    assert get_decompose_dim(2048) == (32, 64)
    for n, expected in {64: (8, 8), 128: (8, 16), 256: (16, 16), 512: (16, 32), 16: (4, 4), 4: (2, 2)}.items():
        assert get_decompose_dim(n) == expected
    # no FlatQuant solution for n ≡ 2 (mod 4): most balanced divisor pair; primes: one dense factor
    assert get_decompose_dim(6) == (2, 3) and get_decompose_dim(1030) == (10, 103)
    assert get_decompose_dim(7) == (1, 7) and get_decompose_dim(1) == (1, 1)
    for n in range(1, 300):
        a, b = get_decompose_dim(n)
        assert a * b == n and a <= b


def test_kron_apply_equals_dense_kronecker():
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(8, 8, generator=g,
                                                                                  dtype=torch.float64)
    x = torch.randn(3, 5, 32, generator=g, dtype=torch.float64)
    assert torch.allclose(kron_apply(x, left, right), x @ torch.kron(left, right))
    assert torch.allclose(kron_apply(x, left, None), x @ torch.kron(left, torch.eye(8, dtype=torch.float64)))


@pytest.mark.parametrize("kind", ["svd", "direct"])
def test_inverse_transpose_and_weight_identity(kind):
    t = KroneckerTransform(48, kind, torch.Generator().manual_seed(1), diag=True)
    _randomize(t, 2)
    f = t.factors()
    for p, p_inv_t in ((f.left, f.left_inv_t), (f.right, f.right_inv_t)):
        assert torch.allclose(p_inv_t.T @ p, torch.eye(p.shape[0]), atol=1e-5)
    assert f.diag is not None and not torch.allclose(f.left, torch.eye(f.left.shape[0]), atol=0.1)
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(7, 48, generator=g), torch.randn(20, 48, generator=g)
    assert torch.allclose(f.activation(x) @ f.weight(w).T, x @ w.T, rtol=1e-4, atol=1e-4)
    dense = torch.diag(f.diag) @ torch.kron(f.left, f.right)
    assert torch.allclose(f.activation(x), x @ dense, atol=1e-5)
    assert torch.allclose(f.weight(w), w @ torch.linalg.inv(dense).T, atol=1e-4)


def test_cayley_init_stores_qr_draw_and_is_seeded():
    m = TransformMatrix(8, "svd", torch.Generator().manual_seed(5))
    stored = m.linear_u.parametrizations.weight.original
    effective = m.linear_u.weight
    eye = torch.eye(8)
    assert torch.allclose(stored @ stored.T, eye, atol=1e-5)  # the QR draw, kept as the free parameter
    assert torch.allclose(effective @ effective.T, eye, atol=1e-5)
    a = stored.tril() - stored.tril().T
    assert torch.allclose(effective, torch.linalg.solve(eye - a / 2, eye + a / 2), atol=1e-6)
    assert (effective - stored).abs().max() > 0.1  # Cayley(X) is not X
    same = TransformMatrix(8, "svd", torch.Generator().manual_seed(5))
    other = TransformMatrix(8, "svd", torch.Generator().manual_seed(6))
    assert torch.equal(same.factors()[0], m.factors()[0])
    assert not torch.allclose(other.factors()[0], m.factors()[0])
    assert isinstance(SingleTransform(4, "svd", torch.Generator()), TransformMatrix)


def test_fake_quant_clipped_matches_primitive_and_clips():
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fake_quant_clipped(x, 4, True, 1.0, 1.0), quantize_activation(x, 4))
    assert torch.equal(fake_quant_clipped(x, 4, True, 0.5, 0.5), quantize_activation(x, 4, clip=0.5))
    clipped = fake_quant_clipped(x, 4, True, 1.0, 0.5)  # only the max side shrinks
    scale = torch.maximum(x.amin(-1, keepdim=True).abs(), 0.5 * x.amax(-1, keepdim=True)) / 7
    assert torch.allclose(clipped, torch.clamp(torch.round(x / scale), -8, 7) * scale, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# the invariant: transformed block == FP block with quantizers off


def _model(family: str):
    return fixture_vggt() if family == "vggt" else fixture_pi3()


@pytest.mark.parametrize("family,kind", [("vggt", "svd"), ("vggt", "direct"), ("pi3", "svd")])
def test_fp_invariance_before_and_after_reparameterisation(family, kind):
    model = _model(family)
    view = model.quant_view()
    with torch.no_grad():
        x, pos = view.embed(fixture_images((1, 2, 3, 28, 28), seed=3))
        for ref in view.blocks[:2]:  # a frame block and a global block
            y_fp = view.run_block(ref, x, pos)
            gamma = ref.module.norm1.weight.clone()
            block = FlatQuantBlock(ref.module, QuantSpec(), FlatQuantConfig(transform=kind),
                                   torch.Generator().manual_seed(ref.index))
            assert not block.trainable_parameters()["clips"]  # LWC/LAC belong to active quantizers only
            _randomize(block, 10 + ref.index)
            _replace_block(view, ref, block)
            scale = (y_fp - x).norm()  # the block's own contribution (the residual would hide errors)
            y_cal = view.run_block(ref, x, pos)
            assert (y_cal - y_fp).norm() / scale < 1e-4, ref.kind
            block.reparameterize()
            assert not torch.allclose(block.norm1.weight, gamma)  # c₁ folded into norm1
            assert block.ln_trans.diag_scale is None and block.fc2_trans.diag_scale is not None
            y_eval = view.run_block(ref, x, pos)
            assert (y_eval - y_fp).norm() / scale < 1e-4, ref.kind
            x = y_fp


@pytest.mark.parametrize("split_qkv", [True, False])
def test_reparameterised_block_matches_calibration_mode_w4a4(split_qkv):
    model = fixture_vggt()
    view = model.quant_view()
    ref = view.blocks[1]
    with torch.no_grad():
        x, pos = view.embed(fixture_images((1, 2, 3, 28, 28), seed=4))
        y_fp = view.run_block(ref, x, pos)
        block = FlatQuantBlock(ref.module, W4A4, FlatQuantConfig(split_qkv=split_qkv), torch.Generator())
        assert block.attn.qkv.clip_factor_a_max.shape == (3 if split_qkv else 1,)
        _randomize(block, 7, noise=0.05)
        _replace_block(view, ref, block)
        y_cal = view.run_block(ref, x, pos)
        block.reparameterize()
        y_eval = view.run_block(ref, x, pos)
    assert block.attn.qkv.weight_is_quantized and block.attn.qkv.clip_factor_w_max is None
    assert block.attn.qkv.clip_factor_a_max is not None  # LAC stays online
    assert (y_eval - y_cal).norm() / (y_cal - y_fp).norm() < 1e-3


# ---------------------------------------------------------------------------------------------------------------
# loss


def test_block_loss_weighted_normalised_and_zero_safe():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    target = torch.randn(2, 5, 8, generator=g)
    loss, value = block_loss(out, target)
    assert torch.isclose(value, ((out - target) ** 2).mean()) and torch.isclose(loss, torch.tensor(1.0))
    (grad,) = torch.autograd.grad(loss, out)
    assert torch.allclose(grad, 2 * (out - target) / out.numel() / value)  # ∇ log L
    w = torch.rand(8, generator=g) + 0.1
    _, weighted = block_loss(out, target, w)
    assert torch.isclose(weighted, (w * (out - target) ** 2).mean())
    g1 = torch.autograd.grad(block_loss(out, target, w)[0], out)[0]
    g2 = torch.autograd.grad(block_loss(out, target, 5 * w)[0], out)[0]
    assert torch.allclose(g1, g2, atol=1e-6)  # constant factors of the weight cancel
    zero, zero_value = block_loss(target.clone().requires_grad_(), target)
    assert zero_value == 0 and not torch.isnan(zero)


# ---------------------------------------------------------------------------------------------------------------
# calibration


def _block_mse(view, refs, data):
    with torch.no_grad():
        return [((view.run_block(ref, x, pos) - y) ** 2).mean().item()
                for ref, (x, pos, y) in zip(refs, data, strict=True)]


def test_calibration_lowers_block_mse_below_rtn_w4a4():
    model = fixture_vggt()
    rtn_model = copy.deepcopy(model)
    view, rtn_view = model.quant_view(), rtn_model.quant_view()
    view.blocks, rtn_view.blocks = view.blocks[:2], rtn_view.blocks[:2]
    calib = [{"images": fixture_images((1, 2, 3, 28, 28), seed=k)} for k in range(2)]
    data = []  # FP inputs and FP outputs of each block on the first calibration clip
    with torch.no_grad():
        x, pos = view.embed(calib[0]["images"])
        for ref in view.blocks:
            y = view.run_block(ref, x, pos)
            data.append((x, pos, y))
            x = y
    for layer in swap_linears(rtn_model, list(rtn_view.linear_names()), W4A4).values():
        with torch.no_grad():
            layer.weight.copy_(layer.quantized_weight())
        layer.weight_is_quantized = True
    rtn = _block_mse(rtn_view, rtn_view.blocks, data)
    config = FlatQuantConfig(epochs=6, batch_size=1, cache_dtype="float32")
    result = flatquant_calibrate(view, config, W4A4, calib, torch.device("cpu"))
    flat = _block_mse(view, view.blocks, data)
    for rec, r, f in zip(result["blocks"], rtn, flat, strict=True):
        assert rec["steps"] == 12 and len(rec["epoch_losses"]) == 6
        assert rec["loss_final"] < rec["loss_init"]
        assert f < 0.85 * r, (rec["block"], r, f)


# ---------------------------------------------------------------------------------------------------------------
# end to end


def _quantize(family: str, seed: int = 0, **overrides):
    model = _model(family)
    calib = [{"images": fixture_images((1, 2, 3, 28, 28), seed=k)} for k in range(2)]
    config = FlatQuantConfig(epochs=2, seed=seed, **overrides)
    cost = quantize(model, config, W4A4, calib=calib)
    return model, cost


@pytest.mark.parametrize("family", ["vggt", "pi3"])
def test_quantize_end_to_end_and_deterministic(family):
    model, cost = _quantize(family)
    view = model.quant_view()  # the quantized model still has a quantization view
    assert all(isinstance(ref.module, FlatQuantBlock) and ref.module.merged for ref in view.blocks)
    assert len(cost["blocks"]) == len(view.blocks) and cost["quantized_linears"] == 4 * len(view.blocks)
    for rec in cost["blocks"]:
        assert rec["steps"] == 2 and rec["calib_s"] > 0
        assert math.isfinite(rec["loss_init"]) and math.isfinite(rec["loss_final"])
    images = fixture_images((1, 2, 3, 28, 28), seed=50)
    with torch.no_grad():
        out = model(images)
    assert all(torch.isfinite(v).all() for v in out.values() if torch.is_tensor(v))
    if family == "vggt":  # determinism: same seed → identical model; another seed → different transforms
        again, _ = _quantize(family)
        other, _ = _quantize(family, seed=1, split_qkv=False)
        with torch.no_grad():
            out_again, out_other = again(images), other(images)
        for key, value in out.items():
            if torch.is_tensor(value):
                assert torch.equal(value, out_again[key]), key
        assert not torch.equal(out["depth"], out_other["depth"])


def test_state_dict_reloads_strictly_into_rebuilt_model():
    model, _ = _quantize("pi3")
    fresh = fixture_pi3()
    rebuild_flatquant(fresh.quant_view(), FlatQuantConfig(epochs=2), W4A4)
    fresh.load_state_dict(model.state_dict(), strict=True)
    images = fixture_images((1, 2, 3, 28, 28), seed=51)
    with torch.no_grad():
        assert torch.equal(model(images)["points"], fresh(images)["points"])


def test_config_yaml_matches_dataclass_and_validates():
    node = OmegaConf.to_container(OmegaConf.load(ROOT / "fgq" / "conf" / "quantizer" / "flatquant.yaml"))
    assert node.pop("defaults") == ["flatquant_schema", "_self_"]
    assert node.pop("seed") == "${fgq_seed:}"  # the job's seed (0 by default, the dataclass default)
    assert FlatQuantConfig(**node) == FlatQuantConfig()  # the YAML lists the defaults
    assert composed("quantizer", "flatquant") == FlatQuantConfig()
    assert FlatQuantConfig(**vars(composed("quantizer", "fgq"))) == FlatQuantConfig()
    for bad in ({"diag_init": "x"}, {"transform": "x"}, {"cache_dtype": "float16"}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            FlatQuantConfig(**bad)
