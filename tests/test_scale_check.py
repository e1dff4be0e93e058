"""``experiments/scale_check.py --tiny``: the code path the one-shot GPU check runs, on tiny models on CPU."""

import importlib.util
import json

import pytest
from conftest import ROOT

STEPS = ["build", "fp_forward_2f", "fp_forward_4f", "fisher", "calibrate_flatquant", "calibrate_fgq",
         "rtn_w4a4_forward", "flatquant_w4a4_forward", "save_reload"]


def load_script():
    spec = importlib.util.spec_from_file_location("scale_check", ROOT / "experiments" / "scale_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_scale_check_runs_every_step(tmp_path, capsys):
    out = tmp_path / "scale_check.json"
    assert load_script().main(["--tiny", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["env"]["precision"] == "bf16-mixed"  # the CUDA default, here under CPU autocast
    for model in ("vggt_tiny", "pi3_tiny"):
        steps = report["models"][model]
        assert list(steps) == STEPS
        assert not [s for s in steps.values() if "error" in s or "skipped" in s]
        assert all(steps[s]["finite"] for s in STEPS if "forward" in s) and steps["fisher"]["finite"]
        assert steps["save_reload"]["identical_outputs"]
        assert steps["calibrate_fgq"]["blocks"] == steps["calibrate_flatquant"]["blocks"]
        assert len(steps["calibrate_fgq"]["blocks"]) == 2
        # bf16 autocast changes the outputs, by about bf16's resolution, not more
        assert 0 < max(steps["fp_forward_2f"]["rel_error_vs_fp32"].values()) < 0.05
    assert "calibrate_flatquant" in capsys.readouterr().out  # the printed table


def test_budget_skips_the_remaining_steps(tmp_path):
    out = tmp_path / "scale_check.json"
    assert load_script().main(["--tiny", "--models", "vggt_tiny", "--budget-s", "0", "--out", str(out)]) == 0
    steps = json.loads(out.read_text())["models"]["vggt_tiny"]
    assert list(steps) == ["build"] and "skipped" in steps["build"]
