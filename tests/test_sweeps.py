"""Sweeps: resume, failure handling, the caches shared by the jobs of a sweep, a job killed mid-calibration, the
experiment files, and a sweep through submitit's local executor."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from helpers import assert_metrics_close
from hydra import compose, initialize_config_dir

import fgq.jobs
import fgq.pipeline
from fgq.config import validate
from fgq.jobs import run_job
from fgq.pipeline import run
from fgq.sweeps.reading import expected_jobs

TINY = ["logger=none", "trainer.enable_progress_bar=false", "dataset.eval.synthetic.data.num_scenes=2",
        "dataset.eval.synthetic.protocol.icp=false", "calib.num_clips=2"]
CHOICES = {"model": "vggt_tiny", "quantizer": "rtn", "bits": "w4a4", "dataset": "synthetic"}


def compose_cfg(tmp_path, overrides=()):
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"paths.cache_dir={tmp_path / 'cache'}",
                                            f"paths.output_dir={tmp_path}", *overrides])


def run_cli(*args, timeout=300, expect=0):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == expect, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_resume_skips_done_jobs_and_reruns_changed_or_failed_ones(tmp_path, one_thread, monkeypatch):
    out = tmp_path / "job"
    first = run_job(compose_cfg(tmp_path, ["quantizer=rtn"]), out, CHOICES)
    assert first["status"] == "ok" and "skipped" not in first

    def must_not_run(*args, **kwargs):
        raise AssertionError("the job ran again")

    monkeypatch.setattr(fgq.jobs, "dispatch", must_not_run)
    # same config (loggers, progress bar and cache location do not count): skipped, same result
    again = run_job(compose_cfg(tmp_path, ["quantizer=rtn", "logger=csv", "trainer.enable_progress_bar=true"]),
                    out, CHOICES)
    assert again["skipped"] and again["quant"] == first["quant"]
    calls = []
    monkeypatch.setattr(fgq.jobs, "dispatch", lambda *a: calls.append(a) or {"status": "ok"})
    run_job(compose_cfg(tmp_path, ["quantizer=rtn", "bits=w8a8"]), out, CHOICES)  # another config: runs
    run_job(compose_cfg(tmp_path, ["quantizer=rtn"]), out, CHOICES, sweep=True)
    assert len(calls) == 1  # the fake job wrote nothing: the first metrics.json still stands and matches
    failed = {**first, "status": "failed"}
    (out / "metrics.json").write_text(json.dumps(failed))
    run_job(compose_cfg(tmp_path, ["quantizer=rtn"]), out, CHOICES)
    assert len(calls) == 2  # a failed job is retried
    run_job(compose_cfg(tmp_path, ["quantizer=rtn", "resume=false"]), out, CHOICES)
    assert len(calls) == 3


def test_failure_in_a_sweep_is_recorded_not_raised(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("calibration diverged")

    monkeypatch.setattr(fgq.jobs, "dispatch", boom)
    cfg = compose_cfg(tmp_path, ["quantizer=rtn"])
    result = run_job(cfg, tmp_path / "job", CHOICES, sweep=True)
    saved = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert result == saved and saved["status"] == "failed"
    assert saved["error"] == "RuntimeError: calibration diverged" and "Traceback" in saved["traceback"]
    with pytest.raises(RuntimeError):  # a single run stops with the error, after recording it
        run_job(cfg, tmp_path / "single", CHOICES)
    assert json.loads((tmp_path / "single" / "metrics.json").read_text())["status"] == "failed"


def test_second_job_of_a_sweep_loads_fp_eval_targets_and_fisher(tmp_path, one_thread, monkeypatch):
    fgq_small = ["quantizer=fgq", "quantizer.epochs=1"]
    a = run(compose_cfg(tmp_path, [*fgq_small, "bits=w4a4"]), tmp_path / "a", {**CHOICES, "quantizer": "fgq"})
    assert a["cache_hits"] == {"fp_eval": False, "fp_targets": False, "fisher": False}
    evaluations = []
    real_evaluate = fgq.pipeline.evaluate
    monkeypatch.setattr(fgq.pipeline, "evaluate", lambda *a, **k: evaluations.append(1) or real_evaluate(*a, **k))

    def recomputed(*args, **kwargs):
        raise AssertionError("recomputed what the cache holds")

    monkeypatch.setattr("fgq.fisher.cache.compute_fisher", recomputed)
    monkeypatch.setattr("fgq.quant.calibrate.capture_inputs", recomputed)
    monkeypatch.setattr("fgq.quant.calibrate.run_block", recomputed)  # FP propagation: only for targets
    b = run(compose_cfg(tmp_path, [*fgq_small, "bits=w4a8"]), tmp_path / "b", {**CHOICES, "quantizer": "fgq"})
    assert b["cache_hits"] == {"fp_eval": True, "fp_targets": True, "fisher": True}
    assert len(evaluations) == 1  # the quantized evaluation only
    assert b["fp"] == a["fp"]
    monkeypatch.undo()
    fresh = run(compose_cfg(tmp_path, [*fgq_small, "bits=w4a8", "cache=none"]), tmp_path / "c",
                {**CHOICES, "quantizer": "fgq"})
    assert fresh["cache_hits"] == {"fp_eval": None, "fp_targets": None, "fisher": None}
    assert_metrics_close(fresh["quant"], b["quant"])  # cached inputs give the same calibration


@pytest.mark.slow
def test_failed_job_does_not_stop_the_sweep_and_a_rerun_resumes(tmp_path):
    sweep = tmp_path / "2026-01-01" / "sweep"
    args = ["-m", "quantizer=rtn", *TINY, "logger=csv", "dataset.eval.synthetic.data.height=100,112",
            f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(*args, expect=1)  # the sweep finished; its exit status reports the failed job
    failed, ok = (json.loads((sweep / str(i) / "metrics.json").read_text()) for i in (0, 1))
    assert failed["status"] == "failed" and "multiples of 14" in failed["error"]
    assert ok["status"] == "ok"
    table = (sweep / "table.md").read_text()
    assert "2 jobs, 1 ok, 1 failed" in table and "failed: " in table and "| W4A4 | RTN [" in table
    assert (sweep / "report.html").exists() and "table.md" not in proc.stderr
    stamp = (sweep / "1" / "metrics.json").stat().st_mtime_ns
    run_cli(*args, expect=1)
    assert (sweep / "1" / "metrics.json").stat().st_mtime_ns == stamp  # done: not rerun
    assert "skipped" in (sweep / "1" / "fgq.log").read_text()
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "failed"  # retried, fails again


def _wait_for(folder, pattern, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(folder.glob(pattern)):
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    raise AssertionError(f"{pattern} never appeared in {folder}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_job_killed_mid_calibration_leaves_no_half_written_outputs(tmp_path, sig):
    out, cache = tmp_path / "run", tmp_path / "cache"
    # 4 clips and 4 epochs: FlatQuant spends seconds on each block, so the kill lands inside the calibration
    args = ["quantizer=flatquant", "quantizer.epochs=4", "calib.num_clips=4",
            *[o for o in TINY if not o.startswith("calib.")], "logger=csv", f"paths.cache_dir={cache}",
            f"hydra.run.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(cache, "fp_targets/*/block-000.safetensors", proc)  # the first block's targets: calibrating now
    proc.send_signal(sig)
    # SIGTERM becomes SystemExit(128 + 15) in the job (fgq.jobs), so cleanup runs before the exit
    assert proc.wait(timeout=60) == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM)
    assert not (out / "metrics.json").exists()
    assert not [p for p in (*out.rglob("*.tmp"), *cache.rglob("*.tmp"))]
    targets = [p for p in (cache / "fp_targets").iterdir()]
    assert len(targets) == 1 and not (targets[0] / "complete.json").exists()  # killed before the entry completed
    for entry in (cache / "fp_eval").glob("*.json"):  # written before calibration, complete
        assert json.loads(entry.read_text())["value"]
    if sig == signal.SIGKILL:
        run_cli(*args)  # the rerun does the job; the half target entry is redone, the FP evaluation reused
        result = json.loads((out / "metrics.json").read_text())
        assert result["status"] == "ok"
        assert result["cache_hits"] == {"fp_eval": True, "fp_targets": False, "fisher": None}
        assert (targets[0] / "complete.json").exists()


def test_every_experiment_composes_into_a_runnable_grid_on_the_embedded_default():
    experiments = sorted(p.stem for p in (ROOT / "fgq" / "conf" / "experiment").glob("*.yaml"))
    assert {"table1_pose", "table2_pointmap", "table3_dtu", "table4_depth", "table5_fisher_tasks",
            "table6_overhead", "table7_pi3", "fisher_validation"} <= set(experiments)
    quantizers = {p.stem for p in (ROOT / "fgq" / "conf" / "quantizer").glob("*.yaml")}
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
        for name in experiments:
            master = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
            jobs = expected_jobs(master)
            assert jobs and len(jobs) >= 2, name
            assert master.hydra.runtime.choices.dataset == "synthetic", name
            assert master.hydra.runtime.choices.model in ("vggt_tiny", "pi3_tiny"), name
            if name.startswith(("table1", "table2", "table3", "table4")):  # the paper's rows, where configs exist
                swept = {job["quantizer"] for job in jobs}
                assert swept == {"rtn", "gptq", "quarot", "flatquant", "quantvggt", "fgq"} & quantizers, name
            for job in (jobs[0], jobs[-1]):  # composing every job costs a minute on a loaded machine
                validate(compose("config", overrides=[f"{k}={v}" for k, v in job.items()]))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="hydra-submitit-launcher not installed (pip install -e '.[dev]')")
def test_two_job_sweep_through_submitit_local_executor(tmp_path):
    sweep = tmp_path / "2026-01-01" / "submitit"
    run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "quantizer=rtn", "bits=w8a8,w4a4",
            *TINY, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}", timeout=400)
    results = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert [r["choices"]["bits"] for r in results] == ["w8a8", "w4a4"]
    assert list((sweep / ".submitit").iterdir())  # the jobs ran in submitit's worker processes
    table = (sweep / "table.md").read_text()
    assert "2 jobs, 2 ok" in table and "| W8A8 | RTN |" in table and "| W4A4 | RTN |" in table
