"""The training losses' camera terms: the official frame-0 pose-encoding L1 and the optional frame-pair term."""

import torch

from fgq.models import geometry
from fgq.training.losses import _all_pairs, _pair_camera_loss, vggt_loss


def random_w2c(batch: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    q = torch.randn(batch, frames, 4, generator=generator)
    return torch.cat((geometry.quat_to_mat(q / q.norm(dim=-1, keepdim=True)),
                      torch.randn(batch, frames, 3, 1, generator=generator)), dim=-1)


def cameras(generator: torch.Generator) -> dict:
    intrinsics = torch.tensor([[60.0, 0, 56], [0, 50.0, 56], [0, 0, 1]]).expand(2, 4, 3, 3)
    return {"extrinsics": random_w2c(2, 4, generator), "intrinsics": intrinsics}


def test_pair_camera_loss_is_zero_at_the_truth_in_any_world_frame():
    g = torch.Generator().manual_seed(0)
    gt = cameras(g)
    shift = geometry.to_homogeneous(random_w2c(1, 1, g))[0, 0]  # a rigid change of the world frame
    moved = (geometry.to_homogeneous(gt["extrinsics"]) @ shift)[..., :3, :]
    rel_gt = _all_pairs(gt["extrinsics"])
    target = geometry.extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], (112, 112))
    for w2c in (gt["extrinsics"], moved):
        enc = geometry.extri_intri_to_pose_encoding(w2c, gt["intrinsics"], (112, 112))
        assert _pair_camera_loss(enc, rel_gt, target) < 1e-5
        # Only the quaternion's direction matters; a wrong translation, rotation or FoV costs.
        assert _pair_camera_loss(torch.cat((enc[..., :3], 3 * enc[..., 3:7], enc[..., 7:]), -1), rel_gt, target) < 1e-5
        for part in (slice(0, 3), slice(3, 7), slice(7, 9)):
            wrong = enc.clone()
            wrong[:, 1, part] += 0.3
            assert _pair_camera_loss(wrong, rel_gt, target) > 1e-3


def test_vggt_loss_adds_the_pair_term_only_when_weighted():
    g = torch.Generator().manual_seed(1)
    gt = cameras(g)
    gt["depth"] = torch.rand(2, 4, 112, 112, generator=g) + 1
    gt["world_points"] = torch.randn(2, 4, 112, 112, 3, generator=g)
    gt["valid"] = torch.ones(2, 4, 112, 112, dtype=torch.bool)
    enc = geometry.extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], (112, 112))
    pred = {"pose_enc_list": [enc + 0.1, enc + 0.05], "depth": gt["depth"][..., None],
            "depth_conf": torch.ones(2, 4, 112, 112), "world_points": gt["world_points"],
            "world_points_conf": torch.ones(2, 4, 112, 112)}
    weights = {"camera": 5.0, "depth": 1.0, "points": 1.0}
    official = vggt_loss(pred, gt, weights)
    assert official["camera_pairs"] == 0
    both = vggt_loss(pred, gt, {**weights, "camera_pairs": 2.0})
    rel_gt = _all_pairs(gt["extrinsics"])
    expected = 0.6 * _pair_camera_loss(enc + 0.1, rel_gt, enc) + _pair_camera_loss(enc + 0.05, rel_gt, enc)
    torch.testing.assert_close(both["camera_pairs"], expected)
    torch.testing.assert_close(both["loss"], official["loss"] + 2.0 * expected)
