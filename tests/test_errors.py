"""Bad input ends in one line: non-finite values named where they arise, one ``error: …`` line with exit 2 for every
user-facing failure of a single run, strict JSON and readable files, results labelled with the bits they ran."""

import json
import math
import os
import stat
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from helpers import fixture_images, fixture_vggt
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file

from fgq.config import ConfigError
from fgq.errors import NonFiniteError
from fgq.evaluation import evaluate
from fgq.fisher.compute import compute_fisher
from fgq.io import write_json_atomic
from fgq.jobs import run_job, user_error
from fgq.models.checkpoint import CheckpointError
from fgq.precheck import check_names, check_sweep
from fgq.quant import flatquant as flatquant_module
from fgq.summary import improvement
from fgq.sweeps.reading import load_sweep

SMALL = ["logger=none", "trainer.enable_progress_bar=false", "dataset.eval.synthetic.data.num_scenes=2",
         "dataset.eval.synthetic.protocol.icp=false", "calib.num_clips=2"]
TINY = ROOT / "fgq" / "weights" / "vggt_tiny.safetensors"


def compose_cfg(tmp_path, overrides=()):
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
        return compose("config", overrides=[*SMALL, f"paths.output_dir={tmp_path}",
                                            f"paths.cache_dir={tmp_path / 'cache'}", *overrides])


def nan_checkpoint(tmp_path, key="aggregator.frame_blocks.1.mlp.fc1.weight"):
    state = load_file(str(TINY))
    state[key] = torch.full_like(state[key], math.nan)
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    return path, key


def test_nan_checkpoint_tensor_is_named_at_load(tmp_path):
    path, key = nan_checkpoint(tmp_path)
    with pytest.raises(InstantiationException) as caught:  # as the job builds it: through Hydra's instantiate
        instantiate(compose_cfg(tmp_path, [f"model.checkpoint={path}"]).model)
    error = user_error(caught.value)
    assert isinstance(error, CheckpointError)
    assert str(error).endswith(f"1 tensor(s) hold NaN or infinity ({key}); the file is corrupt or comes from a "
                               "diverged run")


def test_nan_in_calibration_names_block_and_step_and_writes_nothing(tmp_path, monkeypatch):
    real = flatquant_module.block_loss
    calls = {"n": 0}

    def diverging(output, target, weight=None):
        calls["n"] += 1
        loss, value = real(output, target, weight)
        return (loss * math.nan, value * math.nan) if calls["n"] == 2 else (loss, value)

    monkeypatch.setattr(flatquant_module, "block_loss", diverging)
    cfg = compose_cfg(tmp_path, ["quantizer=flatquant", "quantizer.epochs=1", "save_quantized=true",
                                      "quantizer.batch_size=1"])
    with pytest.raises(NonFiniteError, match=r"FlatQuant calibration: block aggregator\.frame_blocks\.0, epoch 1, "
                                             r"step 2: the loss is nan"):
        run_job(cfg, tmp_path, {"quantizer": "flatquant"})
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["status"] == "failed" and "step 2" in result["error"]
    assert not (tmp_path / "quantized.safetensors").exists()


def test_nan_model_output_names_output_and_sequence(tmp_path):
    model = fixture_vggt()
    model.depth_head.register_forward_hook(lambda _m, _i, out: tuple(o * math.nan for o in out))
    cfg = compose_cfg(tmp_path)
    from fgq.pipeline import build_data

    loaders, _ = build_data(cfg, with_calib=False)
    protocols = {"synthetic": dict(cfg.dataset.eval.synthetic.protocol)}
    with pytest.raises(NonFiniteError, match=r"FP evaluation, eval set 'synthetic', sequence \S+: the model's output "
                                             r"'depth' holds NaN"):
        evaluate(model, loaders, protocols, torch.device("cpu"))


def test_nan_fisher_names_task_and_block():
    model = fixture_vggt()
    block = model.aggregator.global_blocks[1]
    block.register_forward_hook(lambda _m, _i, out: out * math.inf)
    with pytest.raises(NonFiniteError, match=r"Fisher: task camera, block aggregator\.\w+_blocks\.\d: not finite"):
        compute_fisher(model, [{"images": fixture_images((1, 2, 3, 56, 56))}])


def test_reloaded_model_is_labelled_with_its_bits_and_explicit_other_bits_are_refused(tmp_path):
    first = run_job(compose_cfg(tmp_path / "a", ["quantizer=rtn", "bits=w8a8", "save_quantized=true"]),
                    tmp_path / "a", {"quantizer": "rtn", "bits": "w8a8"})
    saved = first["quantization"]["saved"]
    load = ["quantizer=load", f"quantizer.path={saved}"]
    again = run_job(compose_cfg(tmp_path / "b", load), tmp_path / "b", {"quantizer": "load", "bits": "w4a4"})
    assert again["choices"]["bits"] == "w8a8" and again["spec"]["w_bits"] == 8  # the label is what ran
    with pytest.raises(ConfigError, match=r"the saved model holds w8a8 .* asks for w4a4: drop bits="):
        run_job(compose_cfg(tmp_path / "c", [*load, "bits=w4a4"]), tmp_path / "c",
                {"quantizer": "load", "bits": "w4a4"}, explicit=frozenset({"bits", "quantizer"}))


def test_metrics_json_is_strict_json_and_readable_by_others(tmp_path):
    path = write_json_atomic(tmp_path / "metrics.json", {"status": "ok", "fp": {"s": {"camera": {"auc@3": math.nan}}},
                                                         "quant": {"s": {"camera": {"auc@3": 0.0}}}})
    text = path.read_text()
    assert "NaN" not in text and json.loads(text)["fp"]["s"]["camera"]["auc@3"] is None
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    job = load_sweep(tmp_path).jobs[0]  # the tables read numbers again
    assert math.isnan(job.result["fp"]["s"]["camera"]["auc@3"])


def test_environment_is_recorded(tmp_path):
    result = run_job(compose_cfg(tmp_path, ["quantizer=rtn"]), tmp_path, {"quantizer": "rtn"})
    env = result["environment"]
    assert env["threads"] == torch.get_num_threads() and env["precision"] == "32-true" and env["torch"]


def _run_cli(*args):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "WANDB_MODE": "offline"})


def test_single_run_failures_are_one_line_with_exit_2(tmp_path):
    """Config, checkpoint and non-finite failures alike: ``error: …``, exit 2, nothing else on stderr."""
    nan_path, key = nan_checkpoint(tmp_path)
    cases = [
        (["seed=abc"], "error: seed=abc: must be an integer"),
        ([f"model.checkpoint={nan_path}"], f"error: checkpoint {nan_path}: 1 tensor(s) hold NaN or infinity ({key})"),
        ([f"model.checkpoint={tmp_path / 'absent.pt'}"], f"error: checkpoint {tmp_path / 'absent.pt'}: no such file"),
        (["quantizer=load"], "error: quantizer.path is not set (quantizer.path=…)"),
        ([f"hydra.run.dir={nan_path}/run"], f"error: hydra.run.dir={nan_path}/run: {nan_path} is not a folder"),
        (["bit=w4a4"], "error: unknown override bit=w4a4; did you mean bits=…?"),
        (["fisher.floor=low"], "error: Error merging override fisher.floor=low: Value 'low' of type 'str'"),
    ]
    for i, (args, message) in enumerate(cases):
        proc = _run_cli(*SMALL, "quantizer=rtn", f"hydra.run.dir={tmp_path}/run{i}", *args)  # args' dir wins
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert lines == [lines[-1]] and lines[-1].startswith(message), (args, proc.stderr[-2000:])


def test_unwritable_output_dir_is_one_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"output directory .*file/run: not writable \(.*\); choose another"):
        run_job(compose_cfg(tmp_path, ["quantizer=rtn"]), blocker / "run", {})


def test_wrong_override_name_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown override bit=w4a4; did you mean bits=…\?"):
        check_names(["bit=w4a4"])
    with pytest.raises(ConfigError, match=r"did you mean quantizer\.epochs=…\?"):
        check_names(["quantiser.epochs=3"])
    check_names(["bits=w4a4", "quantizer.epochs=1", "+dataset.eval.x={}", "report.title=t", "hydra/launcher=slurm"])


def test_every_sweep_value_is_checked_before_any_job():
    with pytest.raises(ConfigError, match=r"sweep value bits\.w_bits=1: bits\.w_bits=1: must be an integer"):
        check_sweep(["quantizer=rtn", "bits.w_bits=8,1"])
    with pytest.raises(ConfigError, match=r"sweep value seed=x: seed=x: must be an integer"):
        check_sweep(["experiment=embedded_benchmark", "seed=0,x"])
    assert check_sweep(["experiment=embedded_benchmark"]) == 6 + 2 + 3  # the experiment's own axes


def test_console_change_is_signed_so_that_plus_is_better():
    assert improvement("abs_rel", 0.2, 0.21) == "-5.0%"  # an error that grew is worse
    assert improvement("auc@30", 0.5, 0.55) == "+10.0%"
    assert improvement("auc@3", 0.002, 0.008) == "+0.0060 abs"  # no ratio of a near-zero FP value


def test_failed_aggregation_makes_the_sweep_exit_nonzero(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    import fgq.sweeps.aggregate
    from fgq.sweeps.callback import AggregateSweep, last_problem_count

    def broken(_sweep_dir):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fgq.sweeps.aggregate, "aggregate", broken)
    AggregateSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert last_problem_count() == 1


def test_tables_warn_when_jobs_ran_in_different_environments():
    from fgq.sweeps.aggregate import environment_note
    from fgq.sweeps.reading import Job

    def job(threads):
        return Job("0", None, {}, "ok", {"environment": {"torch": "2.13", "threads": threads}})

    assert environment_note([[job(2), job(2)]]) is None
    assert environment_note([[job(1)], [job(2)]]) == ("warning: the jobs of this table ran in different environments "
                                                      "(threads: 1, 2); their numbers may differ beyond rounding")
