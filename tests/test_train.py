"""``python -m fgq.training`` end to end in a subprocess: a few steps with every loss term, CSV logs, a resume from
``last.ckpt`` and an export that loads through the normal checkpoint path."""

import csv
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate


def csv_rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def train(tmp_path, model: str, steps: int) -> subprocess.CompletedProcess:
    args = [f"model={model}", f"train.steps={steps}", "train.batch_size=1", "train.frames=3", "train.val_every=2",
            "train.val_scenes=1", "train.save_every=2", "train.log_every=1", "train.workers=0", "train.threads=1",
            "train.progress_bar=false", "logger=csv", f"train.ckpt_dir={tmp_path}/ckpt",
            f"train.export={tmp_path}/{model}.safetensors", f"hydra.run.dir={tmp_path}/run{steps}"]
    proc = subprocess.run([sys.executable, "-m", "fgq.training", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("model", ["vggt_tiny", "pi3_tiny"])
def test_train_logs_resumes_and_exports(tmp_path, model):
    train(tmp_path, model, 2)
    rows = csv_rows(tmp_path / "run2" / "csv" / "metrics.csv")
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/loss", "train/camera", "train/points", "train/match", "val/auc@30", "val/abs_rel"} <= logged
    assert all(torch.isfinite(torch.tensor(float(r["train/loss"]))) for r in rows if r["train/loss"])
    first = (tmp_path / f"{model}.safetensors").read_bytes()

    proc = train(tmp_path, model, 4)
    assert "training continues with scene 2" in proc.stderr + proc.stdout  # 2 steps × batch 1 already seen
    steps = [int(r["step"]) for r in csv_rows(tmp_path / "run4" / "csv" / "metrics.csv")]
    assert min(steps) >= 2  # continued, not restarted
    assert (tmp_path / f"{model}.safetensors").read_bytes() != first

    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf" / "model"), version_base="1.3"):
        cfg = compose(model, overrides=[f"checkpoint={tmp_path}/{model}.safetensors"])
    net = instantiate(cfg).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 2, 3, 112, 112))
    assert all(torch.isfinite(v).all() for v in out.values() if isinstance(v, torch.Tensor))
