"""A non-editable install (``pip install .``) carries its configs, experiments, shipped weights and the paper's
numbers, and the ``fgq`` command line composes from them in a directory with no checkout."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_non_editable_install_runs_from_any_directory(tmp_path):
    source, target = tmp_path / "source", tmp_path / "site"  # a copy: the build writes build/ next to its source
    shutil.copytree(ROOT / "fgq", source / "fgq", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
           str(target), str(source)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = ("import json, fgq, fgq.sweeps.paper as p; from fgq.config import group_options; "
             "print(json.dumps({'file': fgq.__file__, 'root': str(fgq.ROOT), 'paper': p.REFERENCE.is_file(), "
             "'experiments': group_options('experiment'), 'weights': sorted(x.name for x in "
             "(fgq.PACKAGE / 'weights').iterdir())}))")
    info = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, check=True,
                                     capture_output=True, text=True, timeout=120).stdout)
    assert info["file"].startswith(str(target)) and info["root"] == str(work)  # caches go where the user is
    assert info["paper"] and "table1_pose" in info["experiments"]
    assert info["weights"] == ["pi3_tiny.safetensors", "vggt_tiny.safetensors"]
    proc = subprocess.run([sys.executable, "-m", "fgq", "experiment=table5_fisher_tasks", "--cfg", "job",
                           "--resolve"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{target}/fgq/weights/vggt_tiny.safetensors" in proc.stdout
    assert f"cache_dir: {work}/.cache" in proc.stdout
