"""Numerics: equality with outputs of the official implementations, and the formulas they rest on."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from helpers import fixture_images, fixture_pi3, fixture_vggt
from safetensors.torch import load_file

from fgq.models.dpt_head import uv_embedding
from fgq.models.layers import Block
from fgq.models.pi3_heads import svd_orthogonalize
from fgq.models.rope import RoPE2D, token_positions

INPUTS = {"square": (1, 3, 3, 56, 56), "wide": (2, 2, 3, 42, 70)}
TOL = 1e-4


@pytest.mark.parametrize("tag", list(INPUTS))
def test_vggt_matches_official_outputs(tag):
    ref = load_file(ROOT / "tests/data/official_vggt_tiny.safetensors")
    with torch.no_grad():
        out = fixture_vggt()(fixture_images(INPUTS[tag], seed=len(tag)))
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        expected = ref[f"{tag}.{key}"]
        assert out[key].shape == expected.shape, key
        assert (out[key] - expected).abs().max() <= TOL, key


@pytest.mark.parametrize("tag", list(INPUTS))
def test_pi3_matches_official_outputs(tag):
    ref = load_file(ROOT / "tests/data/official_pi3_tiny.safetensors")
    with torch.no_grad():
        out = fixture_pi3()(fixture_images(INPUTS[tag], seed=len(tag)))
    for key in ("points", "local_points", "conf", "camera_poses"):
        expected = ref[f"{tag}.{key}"]
        assert out[key].shape == expected.shape, key
        assert (out[key] - expected).abs().max() <= TOL, key


def test_rope_rotates_pairs_by_position_times_frequency():
    d, base = 8, 100.0
    t = torch.randn(1, 1, 3, 2 * d)
    pos = torch.tensor([[[0, 0], [2, 5], [7, 1]]])
    out = RoPE2D(base)(t, pos)
    for half, axis in ((0, 0), (1, 1)):
        x = t[..., half * d : (half + 1) * d]
        y = out[..., half * d : (half + 1) * d]
        for j in range(d // 2):
            theta = pos[0, :, axis].double() * base ** (-2 * j / d)
            a, b = x[0, 0, :, j].double(), x[0, 0, :, j + d // 2].double()
            # rotate_half pairs element j with element j + d/2
            assert torch.allclose(y[0, 0, :, j].double(), a * theta.cos() - b * theta.sin(), atol=1e-6)
            assert torch.allclose(y[0, 0, :, j + d // 2].double(), b * theta.cos() + a * theta.sin(), atol=1e-6)


def test_token_positions_special_tokens_at_origin_patches_shifted():
    pos = token_positions(2, 2, 3, 5, torch.device("cpu"))
    assert pos.shape == (2, 11, 2)
    assert (pos[:, :5] == 0).all()
    assert pos[0, 5:].tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]


def test_block_equals_hand_written_prenorm_attention():
    dim, heads = 16, 2
    block = Block(dim, heads, init_values=0.5, qk_norm=True, rope=None).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 5, dim)
    hd = dim // heads
    h = F.layer_norm(x, (dim,), block.norm1.weight, block.norm1.bias, 1e-5)
    q, k, v = (h @ block.attn.qkv.weight.T + block.attn.qkv.bias).reshape(2, 5, 3, heads, hd).permute(2, 0, 3, 1, 4)
    q = F.layer_norm(q, (hd,), block.attn.q_norm.weight, block.attn.q_norm.bias, 1e-5)
    k = F.layer_norm(k, (hd,), block.attn.k_norm.weight, block.attn.k_norm.bias, 1e-5)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
    att = att.transpose(1, 2).reshape(2, 5, dim) @ block.attn.proj.weight.T + block.attn.proj.bias
    x1 = x + block.ls1.gamma * att
    h2 = F.layer_norm(x1, (dim,), block.norm2.weight, block.norm2.bias, 1e-5)
    mlp = F.gelu(h2 @ block.mlp.fc1.weight.T + block.mlp.fc1.bias) @ block.mlp.fc2.weight.T + block.mlp.fc2.bias
    expected = x1 + block.ls2.gamma * mlp
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_uv_embedding_formula():
    c, h, w, aspect = 8, 3, 4, 1.5
    emb = uv_embedding(c, h, w, aspect, torch.device("cpu"))
    span_x = aspect / math.sqrt(1 + aspect**2) * (w - 1) / w
    span_y = 1 / math.sqrt(1 + aspect**2) * (h - 1) / h
    u, v = -span_x + 2 * span_x * 3 / (w - 1), -span_y + 2 * span_y * 1 / (h - 1)  # column 3, row 1
    omega = [1 / 100 ** (k / 2) for k in range(2)]  # C/4 = 2 frequencies per coordinate
    expected = [math.sin(u * o) for o in omega] + [math.cos(u * o) for o in omega]
    expected += [math.sin(v * o) for o in omega] + [math.cos(v * o) for o in omega]
    assert torch.allclose(emb[:, 1, 3], torch.tensor(expected), atol=1e-6)


def test_svd_orthogonalize_returns_proper_rotation_and_keeps_rotations():
    m = torch.randn(10, 9)
    r = svd_orthogonalize(m)
    eye = torch.eye(3).expand(10, 3, 3)
    assert torch.allclose(r @ r.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.det(r), torch.ones(10), atol=1e-5)
    q, _ = torch.linalg.qr(torch.randn(4, 3, 3))
    q = q * torch.det(q).sign()[:, None, None]
    assert torch.allclose(svd_orthogonalize(q.reshape(4, 9)), q, atol=1e-5)


def test_pi3_is_frame_permutation_equivariant_and_vggt_is_not():
    images = fixture_images((1, 3, 3, 56, 56))
    perm = torch.tensor([2, 0, 1])
    pi3 = fixture_pi3()
    with torch.no_grad():
        a, b = pi3(images), pi3(images[:, perm])
    assert torch.allclose(a["local_points"][:, perm], b["local_points"], atol=1e-4)
    assert torch.allclose(a["camera_poses"][:, perm], b["camera_poses"], atol=1e-4)
    vggt = fixture_vggt()
    with torch.no_grad():
        a, b = vggt(images), vggt(images[:, perm])
    assert not torch.allclose(a["pose_enc"][:, perm], b["pose_enc"], atol=1e-4)  # frame 0 is the reference


def test_batch_items_are_independent():
    images = fixture_images((2, 2, 3, 42, 56))
    model = fixture_vggt()
    with torch.no_grad():
        both = model(images)
        second = model(images[1:])
    assert torch.allclose(both["world_points"][1:], second["world_points"], atol=1e-5)


def test_dpt_frame_chunking_does_not_change_results():
    model = fixture_vggt()
    images = fixture_images((1, 3, 3, 28, 28))
    with torch.no_grad():
        full = model(images)["depth"]
        model.depth_head.frames_chunk_size = 1
        chunked = model(images)["depth"]
    assert torch.allclose(full, chunked, atol=1e-6)
