"""Round trips and hand-checked cases for the shared camera geometry."""

import math

import torch

from fgq.models import geometry as G


def random_rotations(n: int) -> torch.Tensor:
    q = torch.randn(n, 4)
    return G.quat_to_mat(q)


def test_quat_to_mat_known_rotation():
    half = math.pi / 4  # 90° about z
    r = G.quat_to_mat(torch.tensor([0.0, 0.0, math.sin(half), math.cos(half)]))
    assert torch.allclose(r, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)


def test_quat_to_mat_accepts_unnormalised_quaternions():
    q = torch.randn(8, 4)
    assert torch.allclose(G.quat_to_mat(q), G.quat_to_mat(3.7 * q), atol=1e-6)


def test_matrix_quaternion_round_trip_and_sign_convention():
    r = random_rotations(64)
    q = G.mat_to_quat(r)
    assert (q[:, 3] >= 0).all()
    assert torch.allclose(q.norm(dim=-1), torch.ones(64), atol=1e-5)
    assert torch.allclose(G.quat_to_mat(q), r, atol=1e-5)
    # every branch of the stable conversion: rotations by ~180° about each axis
    for axis in torch.eye(3):
        q180 = torch.cat((axis * math.sin(1.5), torch.tensor([math.cos(1.5)])))
        assert torch.allclose(G.quat_to_mat(G.mat_to_quat(G.quat_to_mat(q180))), G.quat_to_mat(q180), atol=1e-5)


def test_pose_encoding_round_trip():
    b, s, hw = 2, 3, (392, 518)
    ext = torch.cat((random_rotations(b * s).reshape(b, s, 3, 3), torch.randn(b, s, 3, 1)), dim=-1)
    k = torch.zeros(b, s, 3, 3)
    k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2], k[..., 2, 2] = 400.0, 390.0, 259.0, 196.0, 1.0
    enc = G.extri_intri_to_pose_encoding(ext, k, hw)
    assert enc.shape == (b, s, 9)
    assert torch.allclose(enc[..., 7], torch.full((b, s), 2 * math.atan(196 / 390)))
    assert torch.allclose(enc[..., 8], torch.full((b, s), 2 * math.atan(259 / 400)))
    ext2, k2 = G.pose_encoding_to_extri_intri(enc, hw)
    assert torch.allclose(ext2, ext, atol=1e-5)
    assert torch.allclose(k2, k, atol=1e-3)
    assert torch.allclose(G.extri_intri_to_pose_encoding(ext2, k2, hw), enc, atol=1e-5)


def test_closed_form_inverse():
    ext = torch.cat((random_rotations(5), torch.randn(5, 3, 1)), dim=-1)
    inv = G.closed_form_inverse_se3(ext)
    assert torch.allclose(inv, torch.linalg.inv(G.to_homogeneous(ext)), atol=1e-5)
    assert torch.allclose(G.closed_form_inverse_se3(inv), G.to_homogeneous(ext), atol=1e-5)


def test_unprojection_reprojects_to_pixel_grid():
    s, h, w = 2, 5, 7
    ext = torch.cat((random_rotations(s), torch.randn(s, 3, 1)), dim=-1)
    k = torch.tensor([[50.0, 0, 3], [0, 60.0, 2], [0, 0, 1]]).expand(s, 3, 3)
    depth = torch.rand(s, h, w) + 0.5
    world = G.unproject_depth(depth, ext, k)
    cam = G.world_to_camera(world, ext)
    assert torch.allclose(cam[..., 2], depth, atol=1e-5)
    uv = G.project(cam.reshape(s, -1, 3), k).reshape(s, h, w, 2)
    v, u = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    assert torch.allclose(uv[..., 0], u.expand(s, h, w), atol=1e-4)  # integer pixel centres, no +0.5
    assert torch.allclose(uv[..., 1], v.expand(s, h, w), atol=1e-4)
    assert torch.allclose(G.unproject_depth(depth[..., None], ext, k), world)


def test_rotation_angle():
    r = G.quat_to_mat(torch.tensor([math.sin(math.radians(15)), 0.0, 0.0, math.cos(math.radians(15))]))
    assert abs(G.rotation_angle_deg(r).item() - 30.0) < 1e-3
