"""``run.py`` end to end in a subprocess: a single job and a two-job sweep with W&B offline runs."""

import json
import os
import subprocess
import sys

from conftest import ROOT
from helpers import assert_metrics_close
from wandb_reader import run_info

FAST = ["quantizer=rtn", "dataset.eval.synthetic.data.num_scenes=2", "trainer.enable_progress_bar=false"]


def run_cli(*args, timeout=300):
    env = {**os.environ, "WANDB_MODE": "offline"}  # never reach a server from tests
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_single_run_writes_metrics_json(tmp_path):
    proc = run_cli(*FAST, "logger=csv", f"hydra.run.dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}")
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["status"] == "ok"
    assert result["choices"]["quantizer"] == "rtn" and result["spec"]["w_bits"] == 4
    for phase in ("fp", "quant"):
        tasks = result[phase]["synthetic"]
        assert {"camera", "depth", "points"} == set(tasks)
        assert 0 <= tasks["camera"]["auc@30"] <= 1
        assert tasks["depth"]["abs_rel"] >= 0 and tasks["points"]["acc_mean"] >= 0
    assert "degradation(auc@30)" in result["degradation"]["synthetic"]["camera"]
    assert result["timings"]["total_s"] > 0 and result["peak_memory"]["cpu_max_rss_mb"] > 0
    assert len(result["config_digest"]) == 64
    assert (tmp_path / "csv" / "metrics.csv").exists()
    assert not list(tmp_path.glob(".*.tmp"))
    assert "auc@30" in proc.stdout and str(tmp_path) in proc.stdout.replace("\n", "")


def test_same_seed_same_metrics(tmp_path):
    for name in ("a", "b"):  # separate caches: both runs compute their FP evaluation
        run_cli(*FAST, "logger=none", f"hydra.run.dir={tmp_path / name}", f"paths.cache_dir={tmp_path / name / 'c'}")
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    assert a["config_digest"] == b["config_digest"]
    assert_metrics_close(a["fp"], b["fp"])
    assert_metrics_close(a["quant"], b["quant"])


def test_sweep_two_jobs_with_wandb_offline_runs(tmp_path):
    run_cli("-m", *FAST, "bits=w8a8,w4a4", f"hydra.sweep.dir={tmp_path}/2026-01-01/sweep")
    runs = []
    for job, bits in ((0, "w8a8"), (1, "w4a4")):
        job_dir = tmp_path / "2026-01-01" / "sweep" / str(job)
        assert json.loads((job_dir / "metrics.json").read_text())["choices"]["bits"] == bits
        files = list(job_dir.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(files) == 1
        info = run_info(files[0])
        assert info["name"] == f"vggt_tiny-rtn-{bits}" and info["job_type"] == "ptq"
        assert {f"bits:{bits}", "quantizer:rtn", "model:vggt_tiny", "dataset:synthetic"} <= set(info["tags"])
        assert {"model", "bits", "quantizer"} <= info["config"]
        assert "quant/synthetic/camera/auc@30" in info["history"]
        runs.append(info)
    assert runs[0]["group"] == runs[1]["group"] == "2026-01-01/sweep"


def test_default_quantizer_is_fgq_with_fisher_outputs(tmp_path):
    small = ["dataset.eval.synthetic.data.num_scenes=2", "trainer.enable_progress_bar=false", "calib.num_clips=2",
             "quantizer.epochs=1", f"paths.cache_dir={tmp_path}/cache"]
    run_cli(*small, "logger=csv", f"hydra.run.dir={tmp_path}/a")
    result = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert result["choices"]["quantizer"] == "fgq"
    assert result["quantization"]["fisher"]["cache_hit"] is False
    assert (tmp_path / "a" / "fisher_blocks.png").exists() and (tmp_path / "a" / "fisher_channels.png").exists()
    run_cli(*small, "logger=none", f"hydra.run.dir={tmp_path}/b")
    again = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert again["quantization"]["fisher"]["cache_hit"] is True  # the second job reuses the Fisher
    assert_metrics_close(again["quant"], result["quant"])
