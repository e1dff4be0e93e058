"""QuantVGGT: smoothing identity with the quantizers off, smoothing init, reparameterisation, calibration,
the released code's options (frame-shaped global tokens, unrotated weight statistic, unapplied outlier
filter), the diverse sampler (seeded, every cluster, outlier filter), save and reload (also through the
pipeline, for QuaRot too), the YAML."""

import numpy as np
import pytest
import torch
from conftest import ROOT
from helpers import (
    assert_metrics_close,
    assert_reload_identical,
    composed,
    fixture_images,
    fixture_pi3,
    fixture_vggt,
    model_outputs,
)
from hydra import compose, initialize_config_dir

from fgq.pipeline import run
from fgq.quant import QuantContext, QuantSpec, QuantVGGTConfig, quantize
from fgq.quant.diverse_sampling import (
    SamplerConfig,
    diverse_sample,
    kmeans,
    select_per_cluster,
    split_clips,
    tukey_abnormal,
)
from fgq.quant.hadamard import HadamardRotation
from fgq.quant.quantvggt import SmoothRotLinear, block_runner, quantvggt

pytestmark = pytest.mark.usefixtures("one_thread")

W4A4 = QuantSpec(w_bits=4, a_bits=4)
CALIB = [{"images": fixture_images((1, 2, 3, 28, 28), seed=k)} for k in range(3)]
IMAGES = fixture_images((1, 2, 3, 28, 28), seed=9)
FAST = dict(epochs=2, sampling=SamplerConfig(enabled=False))


def _outputs(model):
    return model_outputs(model, IMAGES)


def _layer(spec, seed=0, n=64, out=32):
    g = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(n, out)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(out, n, generator=g) / n**0.5)
    reference = torch.nn.Linear(n, out)
    reference.load_state_dict(linear.state_dict())
    layer = SmoothRotLinear(linear, spec, HadamardRotation(n, torch.Generator().manual_seed(seed + 1)),
                            lwc=True, lac=True)
    with torch.no_grad():
        layer.smooth.copy_(torch.exp(0.5 * torch.randn(n, generator=g)))
    return layer, reference


def test_smoothing_identity_with_quantizers_off_before_and_after_merge():
    layer, reference = _layer(QuantSpec())
    assert not layer.clip_parameters()  # LWC/LAC belong to active quantizers only
    x = torch.randn(5, 7, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(x)
        assert torch.allclose(layer(x), expected, atol=1e-5)  # (xR/s)·((WR)⊙s)ᵀ = xWᵀ
        layer.reparameterize()
        assert torch.allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize(("family", "global_tokens"), [("vggt", "sequence"), ("vggt", "frame"), ("pi3", "sequence")])
def test_quantvggt_model_equals_fp_with_quantizers_off(family, global_tokens):
    build = fixture_vggt if family == "vggt" else fixture_pi3
    fp, model = build(), build()
    quantize(model, QuantVGGTConfig(global_tokens=global_tokens, **FAST), QuantSpec(), calib=CALIB)
    layers = [m for m in model.modules() if isinstance(m, SmoothRotLinear)]
    assert len(layers) == 4 * len(model.quant_view().blocks)
    assert all(layer.merged and not torch.allclose(layer.smooth, torch.ones_like(layer.smooth)) for layer in layers)
    expected, got = _outputs(fp), _outputs(model)
    for key, value in expected.items():
        assert (got[key] - value).abs().max() <= 1e-5 * value.abs().max(), key


def test_reparameterised_linear_matches_calibration_mode_w4a4():
    layer, reference = _layer(W4A4, seed=5)
    x = torch.randn(4, 9, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        fp = reference(x)
        calibrated = layer(x)
        layer.reparameterize()
        merged = layer(x)
    assert layer.clip_factor_w_max is None and layer.clip_factor_a_max is not None and layer.weight_is_quantized
    assert (merged - calibrated).norm() / (calibrated - fp).norm() < 1e-3


@pytest.mark.parametrize("weight_stat", ["rotated", "unrotated"])
def test_smoothing_init_follows_the_formula(weight_stat):
    """s = act^α / max_col|W'|^(1−α), act = EMA(0.95) of mean-over-frames max-over-tokens |x·R| (1 clip here)."""
    model = fixture_vggt()
    view = model.quant_view()
    ref = view.blocks[0]
    qkv = ref.linears["qkv"]
    w = qkv.weight.detach().clone()
    seen = []
    handle = qkv.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        x, pos = view.embed(CALIB[0]["images"])
        view.run_block(ref, x, pos)
    handle.remove()
    view.blocks = view.blocks[:1]
    config = QuantVGGTConfig(smooth_weight_stat=weight_stat, epochs=0, sampling=SamplerConfig(enabled=False))
    quantvggt(view, config, W4A4, QuantContext(calib=CALIB[:1]))  # the registered function, on a one-block view
    layer = ref.module.attn.qkv
    rotation = layer.rotation
    act = rotation(seen[0]).abs().amax(dim=1).mean(dim=0)
    w_stat = rotation.rotate(w) if weight_stat == "rotated" else w
    expected = (act.pow(config.alpha) / w_stat.abs().amax(dim=0).pow(1 - config.alpha)).clamp(min=1e-5)
    assert torch.allclose(layer.smooth, expected, rtol=1e-5)


def test_calibration_lowers_the_block_loss_and_is_deterministic():
    model = fixture_vggt()
    config = QuantVGGTConfig(**{**FAST, "epochs": 6})
    cost = quantize(model, config, W4A4, calib=CALIB)
    assert cost["calibration_clips"] == 3 and len(cost["blocks"]) == 8
    assert all(rec["steps"] == 18 and len(rec["epoch_losses"]) == 6 for rec in cost["blocks"])
    # per-token A4 rounding makes single blocks noisy at this lr; over all blocks the loss must go down
    first, last = (sum(rec["epoch_losses"][i] for rec in cost["blocks"]) for i in (0, -1))
    assert last < 0.98 * first, (first, last)
    out = _outputs(model)
    again = fixture_vggt()
    quantize(again, config, W4A4, calib=CALIB)
    assert all(torch.equal(v, _outputs(again)[k]) for k, v in out.items())


def test_frame_runner_feeds_global_blocks_frame_shaped_tokens():
    model = fixture_vggt()
    view = model.quant_view()
    glob = next(ref for ref in view.blocks if ref.kind == "global")
    x, pos = view.embed(fixture_images((1, 3, 3, 28, 28), seed=2))
    with torch.no_grad():
        framed = block_runner(view, "frame")(glob, x, pos)
        per_frame = torch.stack([view.run_block(glob, x[:, i:i + 1], pos[:, i:i + 1])[:, 0] for i in range(3)], 1)
        assert torch.allclose(framed, per_frame, atol=1e-6)  # attention stays inside each frame
        assert not torch.allclose(framed, view.run_block(glob, x, pos), atol=1e-4)
        assert block_runner(view, "sequence") == view.run_block


def test_released_code_options_change_the_result():
    base = _outputs(_quantized(QuantVGGTConfig(**FAST)))
    for option in ({"global_tokens": "frame"}, {"smooth_weight_stat": "unrotated"}):
        assert not torch.equal(base["depth"], _outputs(_quantized(QuantVGGTConfig(**FAST, **option)))["depth"])


def _quantized(config):
    model = fixture_vggt()
    quantize(model, config, W4A4, calib=CALIB)
    return model


# ---------------------------------------------------------------------------------------------------------------
# the diverse sampler


def _pool(n=12):
    pool = [{"images": fixture_images((1, 3, 3, 28, 28), seed=k), "meta": [{"category": "c"}]} for k in range(n)]
    pool[min(5, n - 1)] = {"images": torch.full((1, 3, 3, 28, 28), 1.0), "meta": [{"category": "c"}]}  # a blank clip
    return pool


def test_sampler_is_seeded_covers_every_cluster_and_filters_outliers():
    view = fixture_vggt().quant_view()
    config = SamplerConfig(clusters=3, per_cluster=2)
    picked, report = diverse_sample(view, _pool(), config, torch.device("cpu"))
    again, _ = diverse_sample(view, _pool(), config, torch.device("cpu"))
    assert picked == again and len(picked) == 6 == len(set(picked))
    assert set(report["selected_clusters"]) == {0, 1, 2}  # every cluster contributes
    assert 5 in report["abnormal"] and not set(picked) & set(report["abnormal"])
    assert report["candidates"] == 12 - len(report["abnormal"])
    assert report["noise_blocks"] == ["aggregator.frame_blocks.3", "aggregator.global_blocks.3"]
    _, kept_report = diverse_sample(view, _pool(), SamplerConfig(clusters=3, per_cluster=2,
                                                                    outlier_filter="compute_only"),
                                       torch.device("cpu"))
    assert kept_report["abnormal"] == report["abnormal"] and kept_report["candidates"] == 12
    small, _ = diverse_sample(view, _pool(4), SamplerConfig(), torch.device("cpu"))
    assert len(small) <= 4  # a pool smaller than clusters·per_cluster: every (normal) clip


def test_kmeans_and_selection():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    x = np.concatenate([c + 0.1 * rng.standard_normal((10, 2)) for c in centres])
    labels, _, inertia = kmeans(x, 3, 10, np.random.default_rng(1))
    assert len(set(labels[:10])) == len(set(labels[10:20])) == len(set(labels[20:])) == 1
    assert len(set(labels)) == 3 and inertia < 30 * 2 * 0.05
    again = kmeans(x, 3, 10, np.random.default_rng(1))
    assert np.array_equal(labels, again[0])
    chosen = select_per_cluster(np.array([0] * 8 + [1] * 1 + [2] * 3), 2, 6, np.random.default_rng(2))
    assert len(chosen) == 6 and 8 in chosen and len({c for c in chosen if c < 8}) >= 2  # topped up


def test_tukey_fences_per_category():
    stats = np.ones((10, 1, 2)) + 0.01 * np.arange(10)[:, None, None]
    stats[3, 0, 1] = 50.0
    groups = ["a"] * 5 + ["b"] * 5
    assert tukey_abnormal(stats, groups).tolist() == [i == 3 for i in range(10)]


def test_split_clips_and_pool_size():
    batches = [{"images": torch.zeros(2, 2, 3, 14, 14), "meta": [{"k": 0}, {"k": 1}]},
               {"images": torch.zeros(2, 2, 3, 14, 14), "meta": [{"k": 2}, {"k": 3}]}]
    clips = split_clips(batches, limit=3)
    assert [c["meta"][0]["k"] for c in clips] == [0, 1, 2] and clips[0]["images"].shape[0] == 1


def test_sampling_inside_quantize_reports_the_choice():
    model = fixture_vggt()
    calib = [{"images": fixture_images((1, 2, 3, 28, 28), seed=k)} for k in range(6)]
    config = QuantVGGTConfig(epochs=1, sampling=SamplerConfig(clusters=2, per_cluster=1, n_init=5, pool_size=5))
    cost = quantize(model, config, W4A4, calib=calib)
    assert cost["sampling"]["pool"] == 5 and cost["calibration_clips"] == len(cost["sampling"]["selected"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# save / reload, YAML


def test_save_and_reload_gives_identical_outputs(tmp_path):
    config = QuantVGGTConfig(**FAST)
    model = _quantized(config)
    assert_reload_identical(model, config, W4A4, tmp_path, IMAGES)


def test_config_yaml_and_validation():
    config = composed("quantizer", "quantvggt")
    assert isinstance(config.sampling, SamplerConfig)
    assert config == QuantVGGTConfig(sampling=SamplerConfig(noise_block_fraction=0.1667))
    for bad in ({"global_tokens": "frames"}, {"smooth_weight_stat": "both"}, {"alpha": 2.0}):
        with pytest.raises(ValueError):
            QuantVGGTConfig(**bad)
    for bad in ({"outlier_filter": "drop"}, {"clusters": 0}):
        with pytest.raises(ValueError):
            SamplerConfig(**bad)
    with pytest.raises(ValueError, match=r"quantizer\.sampling\.outlier_filter='drop'"):
        composed("quantizer", "quantvggt", ("quantizer.sampling.outlier_filter=drop",))


@pytest.mark.parametrize("quantizer", ["quantvggt", "quarot", "quarot_gptq"])
def test_pipeline_save_then_load(tmp_path, quantizer):
    """``python run.py quantizer=<q> save_quantized=true`` then ``quantizer=load`` (QuaRot too): same metrics."""
    small = ["logger=none", "trainer.enable_progress_bar=false", "calib.num_clips=2",
             "dataset.eval.synthetic.data.num_scenes=2", "dataset.eval.synthetic.protocol.tasks=[camera,depth]"]
    make = {"quantvggt": ["quantizer=quantvggt", "quantizer.epochs=1"], "quarot": ["quantizer=quarot"],
            "quarot_gptq": ["quantizer=quarot", "quantizer.weight_quantizer=gptq"]}[quantizer]

    def cfg(out, *overrides):
        with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
            return compose("config", overrides=[*small, f"paths.output_dir={out}", *overrides])

    first = run(cfg(tmp_path / "a", *make, "bits=w4a8", "save_quantized=true"), tmp_path / "a", {})
    saved = tmp_path / "a" / "quantized.safetensors"
    second = run(cfg(tmp_path / "b", "quantizer=load", f"quantizer.path={saved}"), tmp_path / "b", {})
    assert second["spec"]["a_bits"] == 8
    assert_metrics_close(second["quant"], first["quant"])
