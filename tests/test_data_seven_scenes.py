"""7-Scenes loader (``fgq.data.seven_scenes``) on the fixture written in the real layout: geometry round trip, the
hand-computed 518 × 392 intrinsics, stride seq-id maps, bad data, and one run of ``run.py`` on it."""

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image
from pointmap_checks import assert_points, expected_intrinsics, resized

from fgq.data.files import DataError
from fgq.data.fixtures import seven_scenes as fixture
from fgq.data.seven_scenes import SevenScenes
from fgq.models.preprocess import to_tensor

MAP = {"chess/seq-03": [0, 2, 4], "chess/seq-05": [0, 2], "fire/seq-02": [0, 2]}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return fixture.write(tmp_path_factory.mktemp("seven_scenes"))


def load(root: Path, tmp_path: Path, **kwargs) -> SevenScenes:
    return SevenScenes(root, **{"seq_id_map": tmp_path / "map.json", "kf_every": 2, **kwargs})


def test_round_trip_equals_rendered_geometry(root, tmp_path):
    ds = load(root, tmp_path)
    clip = ds[0]
    assert clip["meta"] == {"dataset": "seven_scenes", "sequence": "chess/seq-03", "category": "chess",
                            "frames": [0, 2, 4]}
    assert clip["images"].shape == (3, 3, 392, 518)
    room, w2c, k = fixture.plan()["chess/seq-03"]
    ids = clip["meta"]["frames"]
    rendering = room.render(w2c[ids], k[ids], fixture.HEIGHT, fixture.WIDTH)
    torch.testing.assert_close(clip["extrinsics"], w2c[ids], rtol=0, atol=1e-6)  # c2w text → inverted back
    # 525 · 392/480 = 428.75; (320 + 0.5) · 392/480 − 0.5 = 261.2417; (240 + 0.5) · 392/480 − 0.5 = 195.9083
    hand = torch.tensor([[428.75, 0.0, 261.241667], [0.0, 428.75, 195.908333], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(clip["intrinsics"], hand.expand(3, 3, 3), rtol=0, atol=1e-4)
    torch.testing.assert_close(clip["intrinsics"][0].double(), torch.from_numpy(
        expected_intrinsics(fixture.K, (480, 640), (392, 518))), rtol=0, atol=1e-4)
    # depth: mm quantisation, the invalid codes (65535, 0, > 10 m) dropped, nearest resize
    coded = np.stack([fixture.corrupt(fixture.to_mm(d)) for d in rendering.depth.numpy()])
    metres = np.where((coded != 65535) & (coded <= 10000), coded / 1000.0, 0.0).astype(np.float32)
    expected = resized(metres, (392, 518))
    assert 0.8 < (expected > 0).mean() < 0.99  # the codes removed something, not everything
    assert_points(clip, rendering.depth.numpy(), w2c[ids], k[ids], expected, atol=1e-3)
    # images: the PNG is lossless, so the loaded image is exactly the LANCZOS-resized render
    rgb = np.round(rendering.images[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    torch.testing.assert_close(clip["images"][0], to_tensor(Image.fromarray(rgb).resize((518, 392),
                                                                                        Image.Resampling.LANCZOS)))


def test_raw_depth_variant_and_configurable_width(root, tmp_path):
    proj = load(root, tmp_path, width=112)[2]
    raw = load(root, tmp_path, width=112, depth_suffix="depth.png")[2]
    assert proj["images"].shape == raw["images"].shape == (2, 3, 84, 112)
    corner = (slice(None), slice(0, 3), slice(0, 5))  # the 0-coded block of depth.proj.png
    assert not proj["valid"][corner].any() and raw["valid"][corner].any()
    torch.testing.assert_close(proj["intrinsics"][0, 0, 0], torch.tensor(525 * 0.175))
    with pytest.raises(ValueError, match="depth_suffix"):
        load(root, tmp_path, depth_suffix="depth.npy")


def test_seq_id_map_built_once_then_reused(root, tmp_path, caplog):
    path = tmp_path / "map.json"
    assert load(root, tmp_path).frame_ids == MAP
    assert json.loads(path.read_text()) == MAP
    path.write_text(json.dumps({"chess/seq-03": [1, 3], "fire/seq-02": [2], "heads/seq-01": [0]}))
    with caplog.at_level(logging.WARNING):
        ds = load(root, tmp_path, kf_every=200)  # the stored map wins over kf_every
    assert ds.frame_ids == {"chess/seq-03": [1, 3], "fire/seq-02": [2]}
    assert ds.sequences == ["chess/seq-03", "fire/seq-02"] and len(ds) == 2
    assert "1 sequences on disk are not in the seq-id map" in caplog.text  # chess/seq-05
    assert "5 of 7 scenes are not under" in caplog.text
    assert load(root, tmp_path / "other", scenes=["fire"]).frame_ids == {"fire/seq-02": [0, 2]}
    path.write_text(json.dumps({"fire/seq-02": [0, 3]}))
    with pytest.raises(DataError, match="asks for frame 3"):
        load(root, tmp_path, scenes=["fire"])


def test_split_file_and_missing_sequences(root, tmp_path, caplog):
    other = tmp_path / "root"
    (other / "fire").mkdir(parents=True)
    (other / "chess").symlink_to(root / "chess")
    (other / "fire" / "seq-02").symlink_to(root / "fire" / "seq-02")
    (other / "fire" / "TestSplit.txt").write_text("sequence2\n\nsequence9\n")
    with caplog.at_level(logging.WARNING):
        ds = load(other, tmp_path, scenes=["chess", "fire"])
    assert ds.sequences == list(MAP)
    assert "1 sequences have no frames on disk" in caplog.text  # fire/seq-09
    with pytest.raises(DataError, match="no seven_scenes sequences with frames"):  # chess/seq-01 is not written
        load(other, tmp_path / "train", scenes=["chess"], split="train")
    assert "(e.g. chess/seq-01)" in caplog.text
    with pytest.raises(DataError, match=r"fire/TrainSplit\.txt: file not found"):
        load(other, tmp_path / "train", split="train")
    (other / "fire" / "TestSplit.txt").write_text("seq2\n")
    with pytest.raises(DataError, match=r"fire/TestSplit\.txt: line 'seq2'"):
        load(other, tmp_path / "again")


def test_too_short_sequences_are_skipped_and_logged(root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = load(root, tmp_path, min_frames=3)
    assert ds.sequences == ["chess/seq-03"]
    assert "2 sequences have fewer than min_frames=3" in caplog.text


def test_missing_root_names_the_config_key(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.seven_scenes\.root=.*no such folder"):
        SevenScenes(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"dataset\.seven_scenes\.root is not set"):
        SevenScenes(None)
    with pytest.raises(DataError, match="no seven_scenes sequences"):
        SevenScenes(tmp_path)


@pytest.fixture
def one_sequence(root, tmp_path) -> Path:
    """A writable copy of fire (one sequence of three frames)."""
    shutil.copytree(root / "fire", tmp_path / "copy" / "fire")
    return tmp_path / "copy"


def test_bad_frames(one_sequence, tmp_path):
    seq = one_sequence / "fire" / "seq-02"
    depth = seq / "frame-000002.depth.proj.png"
    depth.write_bytes(b"not a png")
    ds = load(one_sequence, tmp_path, scenes=["fire"])
    with pytest.raises(DataError, match=re.escape(f"{depth}: cannot read")):
        ds[0]
    Image.fromarray(np.full((240, 320), 2000, np.uint16)).save(depth)
    with pytest.raises(DataError, match=re.escape(f"{depth}: depth is 240×320") + ".*check_size=false"):
        ds[0]
    small = load(one_sequence, tmp_path, scenes=["fire"], check_size=False)[0]  # colour fitted to the depth size
    assert small["images"].shape == (2, 3, 392, 518) and small["valid"][1].all()
    pose = seq / "frame-000000.pose.txt"
    pose.write_text(pose.read_text().replace(pose.read_text().split()[0], "nan", 1))
    with pytest.raises(DataError, match=re.escape(f"{pose}: the pose has non-finite")):
        ds[0]


def test_bad_numbering(one_sequence, tmp_path):
    seq = one_sequence / "fire" / "seq-02"
    (seq / "frame-000001.pose.txt").unlink()
    with pytest.raises(DataError, match=r"seq-02: unequal numbers of frame files \(3 color.png, 3 depth.proj.png, 2"):
        load(one_sequence, tmp_path, scenes=["fire"])
    for kind in ("color.png", "depth.proj.png", "depth.png"):
        (seq / f"frame-000001.{kind}").unlink()
    (seq / "frame-000002.pose.txt").rename(seq / "frame-000001.pose.txt")
    with pytest.raises(DataError, match=r"the color\.png frames must be numbered 0\.\.N-1"):
        load(one_sequence, tmp_path, scenes=["fire"])


@pytest.mark.slow
def test_cli_evaluates_seven_scenes(root, tmp_path):
    """``run.py`` with the synthetic calibration set and the 7-Scenes fixture at 112 wide: finite point metrics."""
    args = ["model=vggt_tiny", "quantizer=rtn", "bits=w8a8", "logger=none", "trainer.enable_progress_bar=false",
            "dataset=[synthetic,seven_scenes]", "dataset.eval.synthetic.data.num_scenes=1",
            f"dataset.seven_scenes.root={root}", "dataset.eval.seven_scenes.data.kf_every=2",
            "dataset.eval.seven_scenes.data.width=112", f"paths.data_dir={tmp_path / 'data'}",
            f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert json.loads((tmp_path / "data" / "seq_ids" / "seven_scenes_mv-recon_kf2.json").read_text()) == MAP
    for phase in ("fp", "quant"):
        points = result[phase]["seven_scenes"]["points"]
        assert set(result[phase]["seven_scenes"]) == {"points"}
        assert all(math.isfinite(v) for v in points.values()) and points["acc_mean"] > 0
