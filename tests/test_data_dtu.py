"""DTU loader (``fgq.data.dtu``) on the fixture in Spann3R's layout: millimetre geometry round trip through
NaN depth and the eroded object mask, cv2.erode semantics on hand-made masks, MVSNet cameras, seq-id maps and bad
data."""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pointmap_checks import assert_points, expected_intrinsics, resized

from fgq.data.dtu import DTU, erode, read_mvsnet_cam
from fgq.data.files import DataError
from fgq.data.fixtures import dtu as fixture
from fgq.data.resize import nearest_resize


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return fixture.write(tmp_path_factory.mktemp("dtu"))


def load(root: Path, tmp_path: Path, **kwargs) -> DTU:
    return DTU(root, **{"seq_id_map": tmp_path / "map.json", "scans": [1, 4], **kwargs})


def test_round_trip_in_millimetres(root, tmp_path):
    clip = load(root, tmp_path)[0]
    assert clip["meta"] == {"dataset": "dtu", "sequence": "scan1", "category": "scan1", "frames": [0, 5, 10]}
    assert clip["images"].shape == (3, 3, 392, 518)  # 160 × 120 → 518 × round(388.5/14)·14
    room, w2c, k = fixture.plan()["scan1"]
    ids = clip["meta"]["frames"]
    rendering = room.render(w2c[ids], k[ids], fixture.HEIGHT, fixture.WIDTH)
    torch.testing.assert_close(clip["extrinsics"][:, :, :3], w2c[ids, :, :3], rtol=0, atol=1e-6)
    torch.testing.assert_close(clip["extrinsics"][:, :, 3], w2c[ids, :, 3] * 1000, rtol=0, atol=1e-3)  # mm
    for i, j in enumerate(ids):
        torch.testing.assert_close(clip["intrinsics"][i].double(), torch.from_numpy(
            expected_intrinsics(k[j].double().numpy(), (120, 160), (392, 518))), rtol=1e-6, atol=1e-4)
    # depth: mm, NaN → invalid, times the object mask eroded by 10 × 10, nearest resize
    keep = erode(fixture.object_mask(), 10) & ~fixture.nan_mask()
    mm = np.where(keep, rendering.depth.numpy() * np.float32(1000), 0).astype(np.float32)
    expected = resized(mm, (392, 518))
    assert 0.2 < (expected > 0).mean() < 0.6
    assert_points(clip, rendering.depth.numpy(), w2c[ids], k[ids], expected, scale=1000.0, atol=1e-3)
    rgb = np.round(rendering.images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    bicubic = np.stack([np.asarray(Image.fromarray(a).resize((518, 392), Image.Resampling.BICUBIC)) for a in rgb])
    jpeg_error = np.abs(clip["images"].permute(0, 2, 3, 1).numpy() - bicubic / 255.0).mean()
    assert jpeg_error < 0.03


def brute_force_cv2_erode(mask: np.ndarray, size: int) -> np.ndarray:
    """cv2.erode(mask, ones((size, size))) spelled out: anchor size // 2, samples outside the image ignored."""
    h, w = mask.shape
    a = size // 2
    out = np.zeros_like(mask, dtype=bool)
    for y in range(h):
        for x in range(w):
            window = mask[max(0, y - a): max(0, y - a + size), max(0, x - a): max(0, x - a + size)]
            out[y, x] = window.all()
    return out


def test_erosion_matches_opencv_anchor_and_border():
    mask = np.ones((30, 30), bool)
    mask[10, 20] = False
    out = erode(mask, 10)
    rows, cols = np.nonzero(~out)
    # the even kernel reaches 5 up/left and 4 down/right of its anchor, so one hole spreads 4 up/left, 5 down/right
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 15, 16, 25) and (~out).sum() == 100
    assert erode(np.ones((12, 7), bool), 10).all()  # the border never erodes
    corner = np.ones((20, 20), bool)
    corner[0, 0] = False
    assert np.array_equal(np.argwhere(~erode(corner, 10)).max(0), [5, 5])
    assert np.array_equal(erode(mask, 1), mask) and np.array_equal(erode(mask, 0), mask)
    random = np.random.default_rng(0).random((25, 33)) > 0.03
    for size in (2, 3, 10):
        assert np.array_equal(erode(random, size), brute_force_cv2_erode(random, size)), size


def test_mask_threshold_resize_and_erosion_in_the_loader(root, tmp_path):
    """A mask at twice the depth size with values just either side of 127.5 is thresholded, then resized nearest
    (every 2nd pixel), then eroded."""
    scan = tmp_path / "copy" / "scan4"
    shutil.copytree(root / "scan4", scan)
    mask = np.full((240, 320), 128, np.uint8)
    mask[:, 100:] = 127  # / 255 < 0.5
    Image.fromarray(mask).save(scan / "binary_masks" / "00000000.png")
    clip = DTU(tmp_path / "copy", scans=[4], seq_id_map=None, width=112)[0]
    depth = np.load(scan / "depths" / "00000000.npy")
    eroded = erode(nearest_resize(mask > 127, 160, 120), 10)
    assert eroded[:, :46].all() and not eroded[:, 46:].any()  # column 50 (source 100) is the first one out
    keep = eroded & np.isfinite(depth)
    assert torch.equal(clip["valid"][0], torch.from_numpy(nearest_resize(keep, 112, 84)))


def test_mvsnet_cam_parsing(tmp_path):
    path = tmp_path / "00000000_cam.txt"
    w2c = np.arange(16.0).reshape(4, 4)
    k = np.array([[2892.3, 0, 823.2], [0, 2883.2, 619.1], [0, 0, 1]])
    for tail in ("425 2.5", "425 2.5 192", "425 2.5 192 905", ""):
        path.write_text(fixture.cam_text(w2c, k).replace("425 2.5 192 905", tail))
        got_k, got_w2c = read_mvsnet_cam(path)
        assert np.array_equal(got_k, k) and np.array_equal(got_w2c, w2c)
    path.write_text(fixture.cam_text(w2c, k).replace("intrinsic", "intrinsics"))
    with pytest.raises(DataError, match=re.escape(f"{path}: not an MVSNet camera file")):
        read_mvsnet_cam(path)
    path.write_text(fixture.cam_text(w2c, k).replace("2892.3", "f"))
    with pytest.raises(DataError, match="could not convert"):
        read_mvsnet_cam(path)


def test_seq_id_map_stride_5_and_missing_scans(root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = DTU(root, seq_id_map=tmp_path / "map.json")  # the 22 test scans: 20 are not in the fixture
    assert ds.frame_ids == {"scan1": [0, 5, 10], "scan4": [0, 5]} and ds.sequences == ["scan1", "scan4"]
    assert "20 of 22 scans are not under" in caplog.text
    assert json.loads((tmp_path / "map.json").read_text()) == ds.frame_ids
    (tmp_path / "map.json").write_text(json.dumps({"scan4": [1, 2], "scan9": [0]}))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load(root, tmp_path, kf_every=1).frame_ids == {"scan4": [1, 2]}  # reused, not rebuilt
    assert "1 sequences on disk are not in the seq-id map" in caplog.text
    with caplog.at_level(logging.WARNING):
        assert load(root, tmp_path / "b", min_frames=3).sequences == ["scan1"]
    assert "1 sequences have fewer than min_frames=3" in caplog.text


def test_bad_data(root, tmp_path):
    with pytest.raises(DataError, match=r"dataset\.dtu\.root=.*no such folder"):
        DTU(tmp_path / "nowhere")
    scan = tmp_path / "copy" / "scan4"
    shutil.copytree(root / "scan4", scan)
    ds = DTU(tmp_path / "copy", scans=[4], seq_id_map=None)
    depth = scan / "depths" / "00000005.npy"
    np.save(depth, np.zeros((2, 120, 160), np.float32))
    with pytest.raises(DataError, match=re.escape(f"{depth}: expected a 2-D numeric depth map")):
        ds[0]
    depth.write_bytes(b"garbage")
    with pytest.raises(DataError, match=re.escape(f"{depth}: cannot read the .npy")):
        ds[0]
    (scan / "cams" / "00000000_cam.txt").unlink()
    with pytest.raises(DataError, match=re.escape(f"{scan / 'cams' / '00000000_cam.txt'}: file not found")):
        ds[0]
    mask = scan / "binary_masks" / "00000000.png"
    Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(mask)
    with pytest.raises(DataError, match=re.escape(f"{mask}: expected a single-channel mask")):
        ds[0]
    (scan / "images" / "00000003.jpg").unlink()
    with pytest.raises(DataError, match=r"scan4/images: the images must be numbered 0\.\.N-1"):
        DTU(tmp_path / "copy", scans=[4], seq_id_map=None)
