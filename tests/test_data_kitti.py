"""KITTI depth loader (fgq/data/kitti.py) on its fixture: round trip, mono vs video clips, bad data, CLI."""

import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from fgq.data.batch import collate
from fgq.data.files import DataError, write_png_uint16
from fgq.data.fixtures import kitti as fixture
from fgq.data.kitti import DEPTH_DIR, DRIVES, GATHERED, IMAGE_DIR, KITTIDepth
from fgq.models.preprocess import eval_resize

FIRST, SECOND = fixture.DRIVES


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fixture.write(tmp_path_factory.mktemp("kitti"))


def frame_file(root, kind, drive, name):
    return root / GATHERED / kind / f"{drive}_02" / f"{name}.png"


def test_mono_round_trip(root):
    truth = fixture.render()
    ds = KITTIDepth(root=root, mode="mono")
    assert len(ds) == sum(fixture.DRIVES.values()) and ds.sequences == [FIRST, SECOND]  # the protocol's order
    expected = [(drive, f) for drive, frames in truth.items() for f in frames]
    for i, (drive, frame) in enumerate(expected):
        clip = ds[i]
        assert clip["meta"] == {"dataset": "kitti", "sequence": drive, "category": "kitti", "frames": [frame.name]}
        assert set(clip) == {"images", "meta", "depth", "valid"}  # no cameras, no world points
        assert clip["images"].shape == (1, 3, 154, 504)  # KITTI's 504 × 154 at width 512
        assert clip["depth"].shape == (1, fixture.HEIGHT, fixture.WIDTH)  # full ground-truth resolution
        # The PNG holds round(depth·256): the loaded metres equal the written ones exactly.
        assert torch.equal(clip["depth"][0], torch.from_numpy(frame.depth))
        assert torch.equal(clip["valid"][0], torch.from_numpy(frame.depth > 0))
        assert 0.1 < clip["valid"].float().mean() < 0.5  # sparse, LiDAR-like
        uint8 = Image.fromarray(np.round(frame.image * 255).astype(np.uint8))
        assert torch.allclose(clip["images"][0], eval_resize(uint8, width=512), atol=1e-6)


def test_video_clips_hold_whole_drives(root):
    truth = fixture.render()
    mono, video = KITTIDepth(root=root, mode="mono"), KITTIDepth(root=root, mode="video")
    assert len(video) == 2 and video.sequences == mono.sequences
    for clip, (drive, frames) in zip((video[0], video[1]), truth.items(), strict=True):
        assert clip["meta"]["sequence"] == drive and clip["meta"]["frames"] == [f.name for f in frames]
        assert clip["images"].shape == (len(frames), 3, 154, 504)
        assert torch.equal(clip["depth"], torch.from_numpy(np.stack([f.depth for f in frames])))
    assert torch.equal(video[0]["images"][1], mono[1]["images"][0])
    assert collate([video[1]])["depth"].shape == (1, 3, fixture.HEIGHT, fixture.WIDTH)


def test_max_frames_and_missing_drives(root, caplog):
    with caplog.at_level(logging.WARNING):
        ds = KITTIDepth(root=root, mode="video", max_frames=2)
    assert "11 of 13 drives" in caplog.text  # the fixture has 2 of the 13 protocol drives
    assert [ds[i]["meta"]["frames"] for i in range(2)] == [["0000000005", "0000000006"]] * 2  # first, sorted
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds = KITTIDepth(root=root, drives=[SECOND, "2011_09_26_drive_0005_sync"])
    assert "1 of 2 drives" in caplog.text and ds.sequences == [SECOND]
    assert len(DRIVES) == 13


def test_missing_root_or_drives(tmp_path):
    for bad in (None, "???", tmp_path / "nowhere"):
        with pytest.raises(DataError, match=r"dataset\.kitti\.root"):
            KITTIDepth(root=bad)
    with pytest.raises(DataError, match="none of the 13 KITTI drives"):
        KITTIDepth(root=tmp_path)
    with pytest.raises(ValueError, match="mode="):
        KITTIDepth(root=tmp_path, mode="stereo")


def test_bad_files_name_the_file(tmp_path):
    root = fixture.write(tmp_path)
    name = fixture.render()[FIRST][1].name
    depth_png, image_png = frame_file(root, DEPTH_DIR, FIRST, name), frame_file(root, IMAGE_DIR, FIRST, name)
    depth_png.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{name}.png: cannot read the depth PNG"):
        KITTIDepth(root=root, mode="mono")[1]
    write_png_uint16(depth_png, np.full((fixture.HEIGHT, fixture.WIDTH), 200, np.uint16))  # an 8-bit-range map
    with pytest.raises(DataError, match=f"{name}.png: maximum value 200 ≤ 255"):
        KITTIDepth(root=root, mode="video")[0]
    image_png.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=f"{name}.png: cannot read the image"):
        KITTIDepth(root=root, mode="mono")[1]
    image_png.unlink()
    with pytest.raises(DataError, match=f"{name}.png: file not found"):  # at construction, not mid-evaluation
        KITTIDepth(root=root, mode="mono")


def test_cli_end_to_end(tmp_path, root):
    """Synthetic supplies calibration; both KITTI sets (sharing dataset.kitti.root) are evaluated before and after
    quantization."""
    args = ["model=vggt_tiny", "quantizer=rtn", "bits=w8a8", "logger=none", "trainer.enable_progress_bar=false",
            "dataset=[synthetic,kitti_mono,kitti_video]", f"dataset.kitti.root={root}",
            "dataset.eval.synthetic.data.num_scenes=2", f"paths.cache_dir={tmp_path}/cache",
            f"hydra.run.dir={tmp_path}/run"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    valid = sum(int((f.depth > 0).sum()) for frames in fixture.render().values() for f in frames)
    for phase in ("fp", "quant"):
        for name in ("kitti_mono", "kitti_video"):
            assert set(result[phase][name]) == {"depth"}
            depth = result[phase][name]["depth"]
            for key in ("abs_rel", "sq_rel", "rmse", "delta_1.25"):
                assert math.isfinite(depth[key]), (phase, name, key)
            assert depth["valid_pixels"] == valid  # every frame scored at the full ground-truth resolution


def test_cli_corrupt_file_is_one_line_error(tmp_path, root):
    """A corrupt ground-truth file met mid-evaluation: one ``error:`` line naming it, exit 2, no metrics.json."""
    import shutil

    bad = tmp_path / "kitti"
    shutil.copytree(root, bad)
    name = sorted((bad / GATHERED / DEPTH_DIR / f"{SECOND}_02").glob("*.png"))[-1]
    name.write_bytes(b"not a png")
    args = ["model=vggt_tiny", "quantizer=rtn", "logger=none", "trainer.enable_progress_bar=false",
            "dataset=kitti_mono", f"dataset.root={bad}", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(name) in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
