"""The clip contract with optional ground truth, predictions resized to the ground truth's resolution, and the
dataset-path aliases of the command line."""

import pytest
import torch

from fgq.data.batch import check_clip, collate, make_clip
from fgq.evaluation import DatasetEvaluator
from fgq.models.geometry import resize_maps, unproject_depth


def _cameras(s=2):
    ext = torch.eye(4)[:3].repeat(s, 1, 1)
    ext[1, 0, 3] = 0.3
    k = torch.tensor([[30.0, 0, 14], [0, 30.0, 14], [0, 0, 1]]).repeat(s, 1, 1)
    return ext, k


def test_optional_groups_and_gt_resolution():
    images = torch.rand(2, 3, 28, 42)
    calib = make_clip(images, {"dataset": "x", "sequence": "a"})
    assert set(calib) == {"images", "meta"}
    ext, k = _cameras()
    depth = torch.rand(2, 10, 20) + 1.0
    depth[0, 0, 0] = 0.0
    full = make_clip(images, {"sequence": "b"}, extrinsics=ext, intrinsics=k, depth=depth)
    assert full["world_points"].shape == (2, 10, 20, 3) and not full["valid"][0, 0, 0]
    torch.testing.assert_close(full["world_points"], unproject_depth(full["depth"], ext, k))
    depth_only = make_clip(images, {"sequence": "c"}, depth=depth)
    assert "world_points" not in depth_only and "extrinsics" not in depth_only
    with pytest.raises(ValueError, match="extrinsics given without intrinsics"):
        check_clip({"images": images, "meta": {}, "extrinsics": ext})
    with pytest.raises(ValueError, match="depth has shape"):
        check_clip({**full, "depth": torch.rand(3, 10, 20)})
    with pytest.raises(ValueError, match="different ground truth"):
        collate([calib, full])
    assert collate([full, full])["depth"].shape == (2, 2, 10, 20)


def test_evaluator_names_missing_ground_truth():
    images = torch.rand(2, 3, 28, 28)
    batch = collate([make_clip(images, {"sequence": "a"}, depth=torch.rand(2, 28, 28) + 1)])
    pred = {"extrinsics": torch.eye(4)[:3].expand(1, 2, 3, 4), "depth": torch.ones(1, 2, 28, 28),
            "points": torch.zeros(1, 2, 28, 28, 3)}
    evaluator = DatasetEvaluator(tasks=("camera", "depth"), name="kitti")
    with pytest.raises(ValueError, match=r"'kitti': task 'camera' needs ground-truth extrinsics"):
        evaluator.update(pred, batch)
    evaluator = DatasetEvaluator(tasks=("depth",), name="kitti")
    evaluator.update(pred, batch)
    assert evaluator.compute()["depth"]["abs_rel"] >= 0
    with pytest.raises(ValueError, match="does not match the ground truth"):
        evaluator.update({**pred, "depth": torch.ones(1, 2, 14, 14)}, batch)


def test_resize_maps_modes():
    depth = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    assert resize_maps(depth, None) is depth and resize_maps(depth, (4, 6)) is depth
    up = resize_maps(depth, (8, 12), "bicubic")
    assert up.shape == (1, 1, 8, 12)
    ref = torch.nn.functional.interpolate(depth.reshape(1, 1, 4, 6), size=(8, 12), mode="bicubic",
                                          align_corners=False)
    torch.testing.assert_close(up, ref.reshape(1, 1, 8, 12))
    points = torch.rand(1, 2, 4, 6, 3)
    down = resize_maps(points, (2, 3), "bilinear", channels_last=True)
    assert down.shape == (1, 2, 2, 3, 3)
    # Each channel is resized on its own: the x channel of the result is the resized x channel.
    torch.testing.assert_close(down[..., 0], resize_maps(points[..., 0], (2, 3), "bilinear"))
    with pytest.raises(ValueError, match="pred_resize"):
        resize_maps(depth, (2, 3), "nearest")


def test_vggt_geometry_at_ground_truth_size():
    from helpers import fixture_vggt

    model = fixture_vggt().eval()
    with torch.no_grad():
        pred = model(torch.rand(1, 2, 3, 28, 28))
    geo = model.geometry(pred, size=(20, 30))
    assert geo["depth"].shape == (1, 2, 20, 30) and geo["points"].shape == (1, 2, 20, 30, 3)
    # The cameras are decoded for the ground truth's size: principal point at its centre.
    from fgq.models.geometry import pose_encoding_to_extri_intri

    _, k = pose_encoding_to_extri_intri(pred["pose_enc"], (20, 30))
    torch.testing.assert_close(geo["points"], unproject_depth(geo["depth"], geo["extrinsics"], k))
    assert float(k[0, 0, 0, 2]) == 15.0
