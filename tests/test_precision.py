"""Mixed precision on CPU: the default job under ``trainer.precision=bf16-mixed`` (the switch CUDA runs default to)
runs end to end — FP evaluation, the Fisher pass, FGQ's bf16-autocast calibration, GPTQ — and agrees with fp32.

Tolerances, from the arithmetic: bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2 % per operation), the
tiny models are ~10 layers deep and their heads run in fp32, so FP metrics move by a fraction of a percent (measured
0.05 % on AbsRel): 2 % is the bound. A quantized model amplifies it: a bf16 rounding that crosses an activation
quantizer's step flips a 3/4-bit code, and FGQ's transforms are trained on bf16 forwards, so its quantized metrics
are a different draw of the same quality: bounded by 10 % relative (depth, points) and 0.1 absolute pose AUC on
4 scenes (a single pair of the 24 moves AUC@30 by up to 1/24 ≈ 0.04)."""

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir

from fgq.pipeline import run

SMALL = ["logger=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
         "dataset.eval.synthetic.data.num_scenes=4", "dataset.eval.synthetic.protocol.icp=false",
         "calib.num_clips=2", "fisher.num_clips=2"]
EPOCHS = {"fgq": ["quantizer.epochs=1"], "gptq": []}


def job(tmp_path, model: str, quantizer: str, precision: str) -> dict:
    out = tmp_path / f"{model}-{quantizer}-{precision}"
    overrides = [*SMALL, f"model={model}", f"quantizer={quantizer}", *EPOCHS[quantizer],
                 f"trainer.precision={precision}", f"paths.output_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run(cfg, out, {"model": model, "quantizer": quantizer, "bits": "w4a4", "dataset": "synthetic"})


def assert_close(a: dict, b: dict, rel: float, auc: float) -> None:
    for task, metric in (("depth", "abs_rel"), ("points", "acc_mean")):
        assert a["synthetic"][task][metric] == pytest.approx(b["synthetic"][task][metric], rel=rel), (task, metric)
    assert a["synthetic"]["camera"]["auc@30"] == pytest.approx(b["synthetic"]["camera"]["auc@30"], abs=auc)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vggt_tiny", "pi3_tiny"])
def test_bf16_job_end_to_end_matches_fp32(tmp_path, model, one_thread):
    for quantizer in ("fgq", "gptq"):
        fp32 = job(tmp_path, model, quantizer, "32-true")
        bf16 = job(tmp_path, model, quantizer, "bf16-mixed")
        assert bf16["status"] == fp32["status"] == "ok"
        assert bf16["fp"] != fp32["fp"]  # autocast really ran (a silent fp32 run would be bit-identical)
        assert_close(bf16["fp"], fp32["fp"], rel=0.02, auc=0.05)
        assert_close(bf16["quant"], fp32["quant"], rel=0.10, auc=0.10)
        if quantizer == "fgq":
            assert bf16["quantization"]["fisher"]["source"] == "computed"
            # the Fisher and the training forwards ran under autocast: a different calibration than fp32's
            assert bf16["quantization"]["blocks"][0]["loss_init"] != fp32["quantization"]["blocks"][0]["loss_init"]
