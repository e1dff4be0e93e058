"""ETH3D loader (``fgq.data.eth3d``) on the fixture in recons_eval's prepared layout: geometry round trip through
raw float32 depth (inf and 0 invalid) and w2c ``.npz`` cameras, frame ids as indices into the sorted names, seq-id
maps and bad data."""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pointmap_checks import assert_points, expected_intrinsics, resized

from fgq.data.eth3d import ETH3D
from fgq.data.files import DataError
from fgq.data.fixtures import eth3d as fixture


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return fixture.write(tmp_path_factory.mktemp("eth3d"))


def test_round_trip_and_sorted_name_indices(root, tmp_path):
    ds = ETH3D(root, seq_id_map=tmp_path / "map.json", scenes=["courtyard", "pipes"])
    assert ds.frame_ids == {"courtyard": [0, 5], "pipes": [0, 5]}
    clip = ds[1]
    assert clip["meta"] == {"dataset": "eth3d", "sequence": "pipes", "category": "pipes", "frames": [0, 5]}
    assert clip["images"].shape == (2, 3, 350, 518)  # 168 × 112 → 518 × round(345.3/14)·14
    # frame 5 is the 6th name in sorted order (DSC_0022.JPG), which the fixture rendered with camera 5
    assert sorted(p.name for p in (root / "pipes" / "images" / "custom_undistorted").iterdir())[5] == "DSC_0022.JPG"
    room, w2c, k = fixture.plan()["pipes"]
    ids = [0, 5]
    rendering = room.render(w2c[ids], k[ids], fixture.HEIGHT, fixture.WIDTH)
    torch.testing.assert_close(clip["extrinsics"], w2c[ids], rtol=0, atol=1e-6)
    for i, j in enumerate(ids):
        torch.testing.assert_close(clip["intrinsics"][i].double(), torch.from_numpy(
            expected_intrinsics(k[j].double().numpy(), (112, 168), (350, 518))), rtol=1e-6, atol=1e-4)
    written = np.stack([fixture.invalid_codes(d) for d in rendering.depth.numpy()])
    metres = np.where(np.isfinite(written) & (written > 0), written, 0).astype(np.float32)
    expected = resized(metres, (350, 518))
    assert 0.7 < (expected > 0).mean() < 0.95
    assert_points(clip, rendering.depth.numpy(), w2c[ids], k[ids], expected)


def test_seq_id_map_reuse_and_skips(root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = ETH3D(root, seq_id_map=tmp_path / "map.json")  # the 13 scenes: 11 are not in the fixture
    assert "11 of 13 scenes are not under" in caplog.text
    assert json.loads((tmp_path / "map.json").read_text()) == ds.frame_ids == {"courtyard": [0, 5], "pipes": [0, 5]}
    (tmp_path / "map.json").write_text(json.dumps({"courtyard": [7], "pipes": [1, 2, 3]}))
    ds = ETH3D(root, seq_id_map=tmp_path / "map.json", kf_every=2)
    assert ds.frame_ids == {"courtyard": [7], "pipes": [1, 2, 3]} and ds[0]["images"].shape[0] == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert ETH3D(root, seq_id_map=tmp_path / "map.json", min_frames=2).sequences == ["pipes"]
    assert "1 sequences have fewer than min_frames=2" in caplog.text


def test_bad_data(root, tmp_path, caplog):
    with pytest.raises(DataError, match=r"dataset\.eth3d\.root=.*no such folder"):
        ETH3D(tmp_path / "nowhere")
    copy = tmp_path / "copy"
    shutil.copytree(root / "pipes", copy / "pipes")
    (copy / "kicker" / "images" / "custom_undistorted").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        ds = ETH3D(copy, scenes=["kicker", "pipes"], seq_id_map=None)
    assert ds.sequences == ["pipes"] and "1 sequences have no frames on disk" in caplog.text
    depth = copy / "pipes" / "ground_truth_depth" / "custom_undistorted" / "DSC_0022.JPG"
    depth.write_bytes(depth.read_bytes()[:-4])
    with pytest.raises(DataError, match=re.escape(f"{depth}: 75260 bytes, expected 75264")):
        ds[0]
    cam = copy / "pipes" / "custom_undistorted_cam" / "DSC_0007.npz"
    np.savez(cam, intrinsics=np.eye(3))
    with pytest.raises(DataError, match=re.escape(f"{cam}: has ['intrinsics'], needs intrinsics and extrinsics")):
        ds[0]
    np.savez(cam, intrinsics=np.eye(3), extrinsics=np.eye(3))
    with pytest.raises(DataError, match="extrinsics 4×4"):
        ds[0]
    cam.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match=re.escape(f"{cam}: cannot read the camera .npz")):
        ds[0]
    np.save(copy / "pipes" / "custom_undistorted_cam" / "DSC_0007.npy", np.eye(4))
    (copy / "pipes" / "custom_undistorted_cam" / "DSC_0007.npy").rename(cam)
    with pytest.raises(DataError, match="a single array"):
        ds[0]
