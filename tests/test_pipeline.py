"""The pipeline in-process (compose API): several eval sets, FP bits, calibration leakage."""

import json

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir

from fgq.config import ConfigError
from fgq.pipeline import run

SMALL = ["quantizer=rtn", "logger=none", "trainer.enable_progress_bar=false",
         "dataset.eval.synthetic.data.num_scenes=2",
         "dataset.eval.synthetic.protocol.icp=false"]


def compose_cfg(tmp_path, overrides=()):
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
        return compose("config", overrides=[*SMALL, f"paths.output_dir={tmp_path}", *overrides])


CHOICES = {"model": "vggt_tiny", "quantizer": "rtn", "bits": "w4a4", "dataset": "synthetic"}


def test_two_eval_sets_in_one_run(tmp_path):
    second = "+dataset.eval.other={data: ${dataset.eval.synthetic.data}, batch_size: 2, protocol: {tasks: [camera]}}"
    result = run(compose_cfg(tmp_path, [second]), tmp_path, CHOICES)
    assert set(result["fp"]) == {"synthetic", "other"}
    assert set(result["fp"]["synthetic"]) == {"camera", "depth", "points"}
    assert set(result["fp"]["other"]) == {"camera"}
    # same scenes, batched differently: same camera metrics
    assert result["fp"]["synthetic"]["camera"] == result["fp"]["other"]["camera"]
    assert json.loads((tmp_path / "metrics.json").read_text())["fp"] == result["fp"]


def test_fp_bits_skip_quantization(tmp_path):
    result = run(compose_cfg(tmp_path, ["bits=w16a16"]), tmp_path, {**CHOICES, "bits": "w16a16"})
    assert result["quant"] == result["fp"]
    assert result["quantization"]["quantize_s"] == 0.0
    assert "quant_eval_s" not in result["timings"]


def test_calibration_overlapping_eval_is_refused(tmp_path):
    cfg = compose_cfg(tmp_path, ["quantizer=gptq", "calib.sources.synthetic.split=eval"])
    with pytest.raises(ConfigError, match="calibration data overlaps eval set 'synthetic'"):
        run(cfg, tmp_path, {**CHOICES, "quantizer": "gptq"})
    assert not (tmp_path / "metrics.json").exists()
