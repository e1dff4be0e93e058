"""Save a quantized model, reload it without recalibrating: identical outputs; mismatches are clear errors."""

import json

import pytest
import torch
from conftest import ROOT
from helpers import assert_metrics_close, fixture_images, fixture_pi3, fixture_vggt
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fgq.config import ConfigError
from fgq.models import CheckpointError
from fgq.pipeline import run
from fgq.quant import (
    FlatQuantConfig,
    GPTQConfig,
    LoadConfig,
    QuantContext,
    QuantSpec,
    RTNConfig,
    quantize,
    save_quantized,
)
from fgq.quant.registry import resolved_spec, saveable

SPEC = QuantSpec(w_bits=4, a_bits=8)
CALIB = [{"images": fixture_images((1, 2, 3, 28, 28), seed=k)} for k in range(2)]


def _node(target: str):
    return OmegaConf.create({"_target_": target})


@pytest.mark.parametrize(("config", "target"), [
    (RTNConfig(), "fgq.quant.rtn.RTNConfig"), (GPTQConfig(), "fgq.quant.gptq.GPTQConfig"),
    (FlatQuantConfig(epochs=1), "fgq.quant.flatquant_config.FlatQuantConfig")])
def test_reload_gives_identical_outputs(tmp_path, config, target):
    model = fixture_vggt()
    quantize(model, config, SPEC, calib=CALIB)
    node = OmegaConf.merge(_node(target), OmegaConf.structured(config))
    path = save_quantized(model, node, SPEC, tmp_path)
    assert path.exists() and path.with_suffix(".yaml").exists()
    fresh = fixture_vggt()
    with torch.no_grad():
        fresh.aggregator.frame_blocks[0].mlp.fc1.weight.add_(1.0)  # prove the weights come from the file
    quantize(fresh, LoadConfig(str(path)), SPEC)
    images = fixture_images((1, 2, 3, 28, 28), seed=9)
    with torch.no_grad():
        a, b = model(images), fresh(images)
    assert all(torch.equal(a[k], b[k]) for k in ("pose_enc", "depth", "world_points"))


def test_other_architecture_is_refused(tmp_path):
    model = fixture_vggt()
    quantize(model, RTNConfig(), SPEC)
    path = save_quantized(model, _node("fgq.quant.rtn.RTNConfig"), SPEC, tmp_path)
    with pytest.raises(CheckpointError, match="different model architecture"):
        quantize(fixture_pi3(), LoadConfig(str(path)), SPEC)


def test_other_bits_are_refused(tmp_path):
    model = fixture_vggt()
    quantize(model, RTNConfig(), SPEC)
    path = save_quantized(model, _node("fgq.quant.rtn.RTNConfig"), SPEC, tmp_path)
    with pytest.raises(CheckpointError, match="bits=w4a8"):
        quantize(fixture_vggt(), LoadConfig(str(path)), QuantSpec(w_bits=4, a_bits=4))


def test_registry_says_a_loaded_model_keeps_its_bits_and_is_not_saved_again(tmp_path):
    model = fixture_vggt()
    quantize(model, RTNConfig(), SPEC)
    path = save_quantized(model, _node("fgq.quant.rtn.RTNConfig"), SPEC, tmp_path)
    load = LoadConfig(str(path))
    assert resolved_spec(load, QuantSpec(w_bits=4, a_bits=4)) == SPEC and not saveable(load)
    assert resolved_spec(RTNConfig(), QuantSpec(w_bits=4, a_bits=4)) == QuantSpec(w_bits=4, a_bits=4)
    assert saveable(RTNConfig())


def test_quantize_takes_a_context_or_its_fields_not_both():
    with pytest.raises(TypeError, match="not both"):
        quantize(fixture_vggt(), RTNConfig(), SPEC, QuantContext(), device="cpu")


def test_missing_or_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="needs"):
        quantize(fixture_vggt(), LoadConfig(str(tmp_path / "absent.safetensors")), SPEC)
    model = fixture_vggt()
    quantize(model, RTNConfig(), SPEC)
    path = save_quantized(model, _node("fgq.quant.rtn.RTNConfig"), SPEC, tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        quantize(fixture_vggt(), LoadConfig(str(path)), SPEC)


def test_pipeline_save_then_load(tmp_path):
    small = ["quantizer=rtn", "logger=none", "trainer.enable_progress_bar=false",
             "dataset.eval.synthetic.data.num_scenes=2",
             "dataset.eval.synthetic.protocol.tasks=[camera,depth]"]

    def cfg(out, *overrides):
        with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
            return compose("config", overrides=[*small, f"paths.output_dir={out}", *overrides])

    first = run(cfg(tmp_path / "a", "bits=w4a8", "save_quantized=true"), tmp_path / "a", {})
    saved = tmp_path / "a" / "quantized.safetensors"
    assert first["quantization"]["saved"] == str(saved)
    second = run(cfg(tmp_path / "b", "quantizer=load", f"quantizer.path={saved}"), tmp_path / "b", {})
    assert second["spec"]["a_bits"] == 8  # taken from the saved file, not the default bits
    assert_metrics_close(second["quant"], first["quant"])
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["quantization"]["loaded_from"] == str(saved)
    with pytest.raises(ConfigError, match=r"quantizer\.path is not set"):
        run(cfg(tmp_path / "c", "quantizer=load"), tmp_path / "c", {})
