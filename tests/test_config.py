"""Every config group option composes; bad configs fail with one clear line before any work."""

import subprocess
import sys

import pytest
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from fgq.config import ConfigError, check_choices, group_options, validate
from fgq.schemas import config_object

GROUPS = ("model", "dataset", "quantizer", "bits", "calib", "fisher", "logger", "trainer", "paths")


def compose_cfg(overrides=()):
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(group):
    options = group_options(group)
    assert options, group
    for option in options:
        cfg = compose_cfg([f"{group}={option}"])
        assert cfg.get(group) is not None or group == "logger"


def test_default_config_validates_and_instantiates():
    cfg = compose_cfg()
    spec = validate(cfg)
    assert spec.tag == "w4a4"
    assert type(config_object(cfg.quantizer, "quantizer")).__name__ == "FGQConfig"


@pytest.mark.parametrize("bits", group_options("bits"))
def test_bits_options_are_valid_specs(bits):
    spec = validate(compose_cfg([f"bits={bits}"]))
    assert spec.tag == bits


def test_unknown_choice_is_one_line():
    with pytest.raises(ConfigError, match=r"unknown quantizer 'foo': choose one of .*rtn"):
        check_choices(["quantizer=foo"])
    with pytest.raises(ConfigError, match="unknown bits 'w5a5'"):
        check_choices(["bits=w8a8,w5a5"])
    check_choices(["bits=w8a8,w4a4", "seed=1", "model.checkpoint=null"])


def test_bit_width_out_of_range():
    with pytest.raises(ConfigError, match=r"bits.w_bits=1: must be an integer from 2 to 16"):
        validate(compose_cfg(["bits.w_bits=1"]))


def test_missing_dataset_root(tmp_path):
    cfg = compose_cfg(["+dataset.eval.synthetic.data.root=" + str(tmp_path / "absent")])
    with pytest.raises(ConfigError, match=r"dataset.eval.synthetic.data.root=.*absent: no such file"):
        validate(cfg)


def _run_cli(*args):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (["quantizer=nope"], "error: unknown quantizer 'nope'"),
    (["bits.a_bits=17"], "error: bits.a_bits=17: must be an integer from 2 to 16"),
    (["+dataset.eval.synthetic.data.root=/no/such/dir"], "error: dataset.eval.synthetic.data.root=/no/such/dir"),
])
def test_cli_bad_config_exits_nonzero_with_one_line(args, message, tmp_path):
    proc = _run_cli(*args, f"hydra.run.dir={tmp_path}/run", "logger=none")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(message), proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_dataset_root_short_form_is_an_interpolation(tmp_path):
    cfg = compose_cfg(["dataset=seven_scenes", f"dataset.root={tmp_path}"])
    assert cfg.dataset.seven_scenes.root == str(tmp_path) and cfg.dataset.eval.seven_scenes.data.root == str(tmp_path)
    validate(cfg)
    assert compose_cfg(["dataset=seven_scenes"]).dataset.seven_scenes.root.endswith("/data/seven_scenes")
    shared = compose_cfg(["dataset=[kitti_mono,kitti_video]", f"dataset.root={tmp_path}"])  # one namespace: fine
    validate(shared)
    with pytest.raises(ConfigError, match="exactly one dataset"):
        validate(compose_cfg(["dataset=[seven_scenes,dtu]", f"dataset.root={tmp_path}"]))
    with pytest.raises(ConfigError, match="exactly one dataset"):
        validate(compose_cfg(["dataset=synthetic", f"dataset.root={tmp_path}"]))


def test_schemas_check_keys_and_types_while_composing():
    for bad in (["quantizer.epochs=abc"], ["quantizer.no_such_knob=1"], ["fisher.floor=low"],
                ["quantizer=quarot", "quantizer.gptq.blocksize=big"]):
        with pytest.raises(ConfigCompositionException):
            compose_cfg(bad)
    with pytest.raises(ValueError, match=r"quantizer\.diag_init='x'"):  # values: the dataclass's own checks
        config_object(compose_cfg(["quantizer.diag_init=x"]).quantizer, "quantizer")
