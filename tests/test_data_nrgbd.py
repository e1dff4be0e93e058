"""Neural RGB-D loader (fgq/data/nrgbd.py) on its fixture: GL → CV round trip, seq-id map, invalid poses, bad data."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pointmap_checks import assert_points, expected_intrinsics, resized

from fgq.data.files import DataError, read_json, write_png_uint16
from fgq.data.fixtures import nrgbd as fixture
from fgq.data.nrgbd import FOCAL, INTRINSICS, NRGBD, gl_c2w_to_w2c
from fgq.data.resize import nearest_resize, resize_image_depth_intrinsics

SCENES = list(fixture.SCENES)  # breakfast_room (4 frames), kitchen (3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fixture.write(tmp_path_factory.mktemp("nrgbd"))


@pytest.fixture
def copy(tmp_path):
    """A fresh fixture to damage (the rendering is cached, so this only writes files)."""
    return fixture.write(tmp_path / "data")


def test_gl_to_cv_convention():
    # An OpenGL camera at (1, 2, 3) with identity c2w looks down −z with y up; in OpenCV axes it looks down −z
    # with y down, so its w2c rotation is diag(1, −1, −1).
    c2w = np.eye(4)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    w2c = gl_c2w_to_w2c(c2w)
    assert np.allclose(w2c[:, :3], np.diag([1.0, -1.0, -1.0]))
    assert np.allclose(w2c[:, :3] @ [1.0, 2.0, 3.0] + w2c[:, 3], 0.0)  # the camera centre maps to the origin
    assert np.allclose(w2c[:, :3] @ [1.0, 2.0, 2.0] + w2c[:, 3], [0.0, 0.0, 1.0])  # a point ahead: z > 0


def test_round_trip(root):
    truth = fixture.render()
    ds = NRGBD(root=root, kf_every=2, scenes=SCENES)
    assert len(ds) == 2 and ds.sequences == SCENES
    ids = [0, 2]
    for index, scene in enumerate(SCENES):
        clip, t = ds[index], truth[scene]
        assert clip["meta"] == {"dataset": "nrgbd", "sequence": scene, "category": scene, "frames": ids}
        assert clip["images"].shape == (2, 3, 392, 518) and clip["depth"].shape == (2, 392, 518)
        # poses.txt holds OpenGL c2w: recovering the rendered OpenCV w2c checks the conversion.
        w2c = torch.from_numpy(t.extrinsics[ids])
        torch.testing.assert_close(clip["extrinsics"].double(), w2c, rtol=0, atol=1e-5)
        k = expected_intrinsics(INTRINSICS, (480, 640), (392, 518))
        torch.testing.assert_close(clip["intrinsics"], torch.from_numpy(k).float().expand(2, 3, 3))
        for j, i in enumerate(ids):
            uint8 = Image.fromarray(np.round(t.images[i] * 255).astype(np.uint8))
            image, _, _ = resize_image_depth_intrinsics(uint8, t.depth[i], INTRINSICS)
            assert torch.equal(clip["images"][j], image)
        assert clip["valid"].all()  # a closed room under 10 m: every pixel has depth
        # Millimetre depth as written, and world points on the rendered surface.
        k_full = torch.from_numpy(INTRINSICS).expand(2, 3, 3)
        assert_points(clip, t.depth[ids], w2c, k_full, resized(t.depth[ids], (392, 518)))


def test_seq_id_map_written_once_and_reused(root, tmp_path, caplog):
    path = tmp_path / "seq_ids" / "nrgbd.json"
    NRGBD(root=root, seq_id_map=path, kf_every=2, scenes=SCENES)
    assert read_json(path) == {"breakfast_room": [0, 2], "kitchen": [0, 2]}
    ds = NRGBD(root=root, seq_id_map=path, kf_every=1, scenes=SCENES)  # the stored map wins
    assert ds[1]["meta"]["frames"] == [0, 2]
    path.write_text(json.dumps({"breakfast_room": [0, 3], "whiteroom": [0]}))
    with caplog.at_level(logging.WARNING):
        ds = NRGBD(root=root, seq_id_map=path, scenes=SCENES)
    assert "1 sequences on disk are not in the seq-id map" in caplog.text and ds.sequences == ["breakfast_room"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds = NRGBD(root=root, seq_id_map=path, scenes=[*SCENES, "whiteroom"])
    assert "1 of 3 scenes are not under" in caplog.text and ds.sequences == ["breakfast_room"]
    path.write_text(json.dumps({"kitchen": [0, 3]}))  # kitchen has 3 frames
    with pytest.raises(DataError, match="asks for frame 3"):
        NRGBD(root=root, seq_id_map=path, scenes=SCENES)


def test_missing_scenes_are_logged(root, caplog):
    with caplog.at_level(logging.WARNING):
        ds = NRGBD(root=root, kf_every=2)  # the 9 real scenes by default; the fixture has 2
    assert "7 of 9 scenes" in caplog.text and ds.sequences == SCENES


def test_non_finite_poses_drop_frames(copy, caplog):
    poses = copy / "kitchen" / "poses.txt"
    lines = poses.read_text().splitlines()
    lines[8:12] = ["nan nan nan nan"] * 4  # frame 2, as in the released data's invalid poses
    poses.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        ds = NRGBD(root=copy, kf_every=2, scenes=SCENES)
    assert "1 of 2 selected frames have a non-finite pose" in caplog.text
    assert ds[1]["meta"]["frames"] == [0] and torch.isfinite(ds[1]["world_points"]).all()
    lines[0:4] = ["nan nan nan nan"] * 4
    poses.write_text("\n".join(lines) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds = NRGBD(root=copy, kf_every=2, scenes=SCENES)
    assert "1 scenes have fewer than min_frames=1 frames with a valid pose" in caplog.text
    assert ds.sequences == ["breakfast_room"]


def test_depth_range_and_size(copy):
    depth = np.full((480, 640), 2000, np.uint16)
    depth[:240] = 10001  # beyond 10 m
    depth[:, :320] = 0  # no depth
    write_png_uint16(copy / "kitchen" / "depth" / "depth0.png", depth)
    clip = NRGBD(root=copy, kf_every=2, scenes=["kitchen"])[0]
    valid = nearest_resize((depth == 2000), 518, 392)
    assert torch.equal(clip["valid"][0], torch.from_numpy(valid))
    assert torch.allclose(clip["depth"][0][clip["valid"][0]], torch.tensor(2.0))
    write_png_uint16(copy / "kitchen" / "depth" / "depth2.png", np.full((240, 320), 2000, np.uint16))
    with pytest.raises(DataError, match=r"depth2\.png: depth is 240×320, expected 480×640"):
        NRGBD(root=copy, kf_every=2, scenes=["kitchen"])[0]
    clip = NRGBD(root=copy, kf_every=2, scenes=["kitchen"], depth_size=None)[0]  # the check is configurable
    assert clip["depth"].shape == (2, 392, 518)
    # K is given for 640×480: a frame stored at 320×240 gets it scaled (pixel-centre convention), not reused
    k = NRGBD(root=copy, kf_every=2, scenes=["kitchen"], depth_size=None)._load_frame("kitchen", 2).intrinsics
    assert k[0, 0] == pytest.approx(FOCAL / 2) and k[0, 2] == pytest.approx(320 * 0.5 + 0.25 - 0.5)


def test_bad_data_names_the_file(copy, tmp_path):
    for bad in (None, tmp_path / "nowhere"):
        with pytest.raises(DataError, match=r"dataset\.nrgbd\.root"):
            NRGBD(root=bad)
    with pytest.raises(DataError, match="no nrgbd sequences with frames"):
        NRGBD(root=tmp_path)
    (copy / "kitchen" / "depth" / "depth2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"depth2\.png: cannot read the depth PNG"):
        NRGBD(root=copy, kf_every=2, scenes=SCENES)[1]
    (copy / "kitchen" / "images" / "img2.png").rename(copy / "kitchen" / "images" / "img7.png")
    with pytest.raises(DataError, match=r"img<i>\.png files must be numbered 0\.\.N-1"):
        NRGBD(root=copy, kf_every=2, scenes=SCENES)
    poses = copy / "breakfast_room" / "poses.txt"
    poses.write_text("\n".join(poses.read_text().splitlines()[:12]) + "\n")  # 3 poses for 4 frames
    with pytest.raises(DataError, match="4 images, 4 depth maps and 3 poses"):
        NRGBD(root=copy, kf_every=2, scenes=["breakfast_room"])
    poses.write_text("1 2 three\n")
    with pytest.raises(DataError, match=r"poses\.txt: not a list of 4×4 matrices"):
        NRGBD(root=copy, kf_every=2, scenes=["breakfast_room"])
