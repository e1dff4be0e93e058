"""RealEstate10K: the camera metadata reader (normalised intrinsics, w2c), the pose loader on prepared folders
(seq-id map, test list, pooled AUC) and an end-to-end run on the tiny fixture."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from fgq.data.files import DataError
from fgq.data.fixtures import re10k as fixture
from fgq.data.re10k import RealEstate10KPose, read_camera_txt
from fgq.models.preprocess import eval_resize

SEQS = list(fixture.SEQUENCES)  # the third has 7 < 10 frames


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fixture.write(tmp_path_factory.mktemp("re10k"))


def test_camera_txt_round_trip(root):
    for name, truth in fixture.render().items():
        timestamps, k_norm, w2c = read_camera_txt(root / fixture.METADATA / f"{name}.txt")
        np.testing.assert_array_equal(timestamps, truth.timestamps)
        expected = truth.intrinsics / np.array([fixture.WIDTH, fixture.HEIGHT, 1.0])[:, None]
        expected[:, 2, 2] = 1.0
        np.testing.assert_allclose(k_norm, expected, rtol=1e-12)
        np.testing.assert_allclose(w2c, truth.extrinsics, rtol=1e-12)
        annotations = json.loads((root / name / "annotations.json").read_text())
        assert [a["filepath"] for a in annotations] == [f"{name}/images/{i:04d}.png" for i in range(len(w2c))]
        np.testing.assert_allclose(np.array([a["intrinsics"] for a in annotations]), truth.intrinsics, rtol=1e-12)


def test_loader_round_trip(root, tmp_path):
    ds = RealEstate10KPose(root=root, seq_id_map=tmp_path / "map.json", width=64)
    assert ds.sequences == SEQS[:2]
    for index, name in enumerate(ds.sequences):
        clip, truth = ds[index], fixture.render()[name]
        ids = clip["meta"]["frames"]
        assert clip["meta"]["files"] == [f"{name}/images/{i:04d}.png" for i in ids]
        # PNG is lossless: the loader's image is eval_resize of the written uint8 frame (64 × 36 → 64 × 42 → 56 × 42).
        for j, i in enumerate(ids):
            written = Image.fromarray(np.round(truth.images[i] * 255).astype(np.uint8))
            torch.testing.assert_close(clip["images"][j], eval_resize(written, width=64))
        torch.testing.assert_close(clip["extrinsics"], torch.from_numpy(truth.extrinsics[ids]).float())
        sx, sy = 56 / 64, 42 / 36
        k = truth.intrinsics[ids].copy()
        k[:, 0, 0] *= sx
        k[:, 1, 1] *= sy
        k[:, 0, 2] = (k[:, 0, 2] + 0.5) * sx - 0.5
        k[:, 1, 2] = (k[:, 1, 2] + 0.5) * sy - 0.5
        torch.testing.assert_close(clip["intrinsics"], torch.from_numpy(k).float())


def test_seq_id_map_and_test_list(root, tmp_path, caplog):
    path = tmp_path / "map.json"
    with caplog.at_level(logging.WARNING):
        ds = RealEstate10KPose(root=root, seq_id_map=path)
    assert "1 sequences have fewer than 10 frames" in caplog.text and SEQS[2] in caplog.text
    state = np.random.RandomState(42)  # one stream over the listed sequences, in order
    expected = {name: [int(i) for i in state.choice(n, 10, replace=False)]
                for name, n in fixture.SEQUENCES.items() if n >= 10}
    assert json.loads(path.read_text()) == expected == ds.map
    custom = {SEQS[1]: list(range(10, 0, -1))}
    path.write_text(json.dumps(custom))
    assert RealEstate10KPose(root=root, seq_id_map=path)[0]["meta"]["frames"] == custom[SEQS[1]]
    listing = tmp_path / "re10k_test.txt"
    listing.write_text(f"{SEQS[1]}\n{SEQS[0]}\nffffffffffffffff\n\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds = RealEstate10KPose(root=root, test_list=listing, seq_id_map=tmp_path / "listed.json")
    assert ds.sequences == [SEQS[1], SEQS[0]]  # list order, which is also the draw order
    assert "1 of 3 listed sequences have no annotations.json" in caplog.text
    state = np.random.RandomState(42)
    first = [int(i) for i in state.choice(fixture.SEQUENCES[SEQS[1]], 10, replace=False)]
    assert ds.map[SEQS[1]] == first


def test_bad_data_errors(root, tmp_path):
    with pytest.raises(DataError, match=r"dataset\.re10k\.root"):
        RealEstate10KPose(root=tmp_path / "missing")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / SEQS[0] / "annotations.json").write_text("{not json")
    with pytest.raises(DataError, match=rf"{SEQS[0]}/annotations\.json: not valid JSON"):
        RealEstate10KPose(root=copy)
    (copy / SEQS[0] / "annotations.json").write_text(json.dumps([{"idx": 0, "filepath": "x.png"}]))
    with pytest.raises(DataError, match=r"lacks \['intrinsics', 'extrinsics'\]"):
        RealEstate10KPose(root=copy)
    txt = copy / fixture.METADATA / f"{SEQS[0]}.txt"
    txt.write_text("https://example\n123 0.5 0.5\n")
    with pytest.raises(DataError, match=rf"{SEQS[0]}\.txt:2: expected 19 numbers"):
        read_camera_txt(txt)
    shutil.rmtree(copy / SEQS[0])
    ds = RealEstate10KPose(root=copy, seq_id_map=tmp_path / "map.json")
    missing = ds[0]["meta"]["files"][0]
    (copy / missing).unlink()
    with pytest.raises(DataError, match=rf"{missing}: file not found"):
        ds[0]


def test_cli_end_to_end(root, tmp_path):
    """Synthetic calibration clips, RealEstate10K joined as an evaluation set (pooled AUC)."""
    args = ["dataset=[synthetic,re10k]", f"dataset.re10k.root={root}", "model=vggt_tiny", "quantizer=rtn",
            "bits=w8a8", "calib.num_clips=2", "dataset.eval.synthetic.data.num_scenes=1", "logger=none",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}", "dataset.eval.re10k.data.width=112",
            f"dataset.eval.re10k.data.seq_id_map={tmp_path / 'map.json'}"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for phase in ("fp", "quant"):
        camera = result[phase]["re10k"]["camera"]
        assert set(result[phase]["re10k"]) == {"camera"} and {"auc@30", "auc@3"} <= set(camera)
        assert all(math.isfinite(v) and 0 <= v <= 100 for v in camera.values())
