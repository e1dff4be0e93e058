"""FGQ: neutral knobs == FlatQuant bit for bit, real Fisher weights change the result, end to end on tiny VGGT
and π3, the Fisher cache through the quantizer, save → reload, and the Hydra config."""

import math

import pytest
import torch
from conftest import ROOT
from helpers import fixture_images, fixture_pi3, fixture_vggt
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fgq.fisher.compute import FisherConfig, compute_fisher
from fgq.quant import FlatQuantConfig, LoadConfig, QuantContext, QuantSpec, quantize, save_quantized
from fgq.quant.fgq import FGQConfig
from fgq.quant.flat_block import FlatQuantBlock
from fgq.schemas import config_object

pytestmark = pytest.mark.usefixtures("one_thread")


W4A4 = QuantSpec(w_bits=4, a_bits=4)
CALIB = [{"images": fixture_images((1, 2, 3, 28, 28), seed=k)} for k in range(2)]
IMAGES = fixture_images((1, 2, 3, 28, 28), seed=50)
KEYS = ("pose_enc", "depth", "world_points")


def _run(config, family="vggt", fisher=None, spec=W4A4, fisher_config=None):
    model = fixture_vggt() if family == "vggt" else fixture_pi3()
    cost = quantize(model, config, spec, calib=CALIB, fisher=fisher, fisher_config=fisher_config)
    with torch.no_grad():
        out = model(IMAGES)
    return model, cost, out


@pytest.fixture(scope="module")
def flatquant():
    return _run(FlatQuantConfig(epochs=1))


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in KEYS)


def test_neutral_knobs_equal_flatquant(flatquant):
    model, _, out = flatquant
    # granularity none: no Fisher at all
    fgq_model, cost, fgq_out = _run(FGQConfig(epochs=1), fisher_config=FisherConfig(granularity="none"))
    assert _same(out, fgq_out) and "blocks" in cost and "source" not in cost["fisher"]
    reference = model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in fgq_model.state_dict().items())
    # channel weighting with a uniform Fisher: every weight is exactly 1 → the same arithmetic
    _, cost, uniform_out = _run(FGQConfig(epochs=1), fisher=torch.ones(3, 8, 64))
    assert _same(out, uniform_out) and cost["fisher"]["source"] == "given"
    assert cost["fisher"]["weights"]["min"] == cost["fisher"]["weights"]["max"] == 1.0


def test_fisher_pass_leaves_the_model_unchanged(flatquant):
    _, _, out = flatquant
    model = fixture_vggt()
    compute_fisher(model, CALIB)
    quantize(model, FlatQuantConfig(epochs=1), W4A4, calib=CALIB)
    with torch.no_grad():
        assert _same(out, model(IMAGES))


def test_fisher_weights_change_the_result(flatquant):
    _, _, out = flatquant
    _, cost, fgq_out = _run(FGQConfig(epochs=1))
    assert not _same(out, fgq_out)
    fig = cost["fisher"]
    assert fig["source"] == "computed" and fig["granularity"] == "channel" and fig["shape"] == [3, 8, 64]
    assert list(fig["block_mean"]) == ["camera", "depth", "points"] and len(fig["block_mean"]["depth"]) == 8
    assert fig["blocks"][:2] == ["aggregator.frame_blocks.0", "aggregator.global_blocks.0"]
    assert fig["weights"]["max"] > 1.0 > fig["weights"]["min"] >= 0.01
    assert cost["quantize_s"] == pytest.approx(cost["fisher_s"] + cost["flatquant_s"])
    # a task subset gives other weights, hence another model
    _, cost, points_out = _run(FGQConfig(epochs=1), fisher_config=FisherConfig(tasks=["points"]))
    assert cost["fisher"]["weight_tasks"] == ["points"] and cost["fisher"]["tasks"] == ["camera", "depth", "points"]
    assert not _same(fgq_out, points_out)
    # block granularity: a per-block constant cancels in L / stopgrad(L) (its gradient is ∇L / L)
    _, _, block_out = _run(FGQConfig(epochs=1), fisher_config=FisherConfig(granularity="block"))
    for k in KEYS:
        torch.testing.assert_close(block_out[k], out[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["vggt", "pi3"])
def test_end_to_end_w4a4(family):
    model, cost, out = _run(FGQConfig(epochs=1), family)
    view = model.quant_view()
    assert all(isinstance(ref.module, FlatQuantBlock) and ref.module.merged for ref in view.blocks)
    assert len(cost["blocks"]) == len(view.blocks) and cost["fisher"]["shape"] == [3, len(view.blocks), 64]
    assert all(math.isfinite(rec["loss_final"]) for rec in cost["blocks"])
    assert all(torch.isfinite(v).all() for v in out.values() if torch.is_tensor(v))


def test_wrong_fisher_shape_and_missing_calib():
    with pytest.raises(ValueError, match="expected"):
        _run(FGQConfig(epochs=1), fisher=torch.ones(3, 4, 64))
    with pytest.raises(ValueError, match="calibration data"):
        quantize(fixture_vggt(), FGQConfig(epochs=1), W4A4)


def test_fisher_cache_through_the_quantizer(tmp_path):
    fisher_config = FisherConfig(cache_dir=str(tmp_path))
    first = _run(FGQConfig(epochs=0), fisher_config=fisher_config)[1]["fisher"]
    second = _run(FGQConfig(epochs=0), fisher_config=fisher_config)[1]["fisher"]
    assert first["source"] == "computed" and second["source"] == "cache"
    assert first["block_mean"] == second["block_mean"]
    assert len(list(tmp_path.glob("fisher-*.safetensors"))) == 1


def test_context_takes_pictures_and_can_bypass_the_cache(tmp_path):
    logged = {}
    context = QuantContext(calib=CALIB, out_dir=tmp_path / "job", log_images=logged.update, use_caches=False,
                           fisher_config=FisherConfig(cache_dir=str(tmp_path / "cache")))
    cost = quantize(fixture_vggt(), FGQConfig(epochs=0), W4A4, context)
    assert cost["fisher"]["source"] == "computed" and "cache_hit" not in cost["fisher"]
    assert not (tmp_path / "cache").exists()  # use_caches=False: the cache is neither read nor written
    assert {p.name for p in (tmp_path / "job").iterdir()} == {"fisher_blocks.png", "fisher_channels.png"}
    assert set(logged) == {"fisher/fisher_blocks", "fisher/fisher_channels"}


def test_save_and_reload(tmp_path):
    spec = QuantSpec(w_bits=4, a_bits=8)
    config = FGQConfig(epochs=1)
    model, _, out = _run(config, spec=spec, fisher_config=FisherConfig(tasks=["points", "depth"]))
    path = save_quantized(model, config, spec, tmp_path)
    fresh = fixture_vggt()
    quantize(fresh, LoadConfig(str(path)), spec)
    with torch.no_grad():
        assert _same(out, fresh(IMAGES))


def test_hydra_config():
    defaults = OmegaConf.load(ROOT / "fgq" / "conf" / "config.yaml").defaults
    has_group = any(isinstance(d, dict) and "fisher" in d for d in OmegaConf.to_container(defaults))
    overrides = ["quantizer=fgq", "fisher.tasks=[points,depth]", "fisher.granularity=block"]
    if not has_group:  # until conf/config.yaml lists the fisher group
        overrides.append("+fisher=default")
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    config = config_object(cfg.quantizer, "quantizer")
    assert isinstance(config, FGQConfig)
    assert FlatQuantConfig(**vars(config)) == FlatQuantConfig()
    assert "fisher" not in cfg.quantizer  # one copy of the Fisher's settings per job: the fisher group
    fisher = config_object(cfg.fisher, "fisher")
    assert fisher.tasks == ("depth", "points") and fisher.granularity == "block"
    assert fisher.cache_dir == str(ROOT / ".cache" / "fisher")
