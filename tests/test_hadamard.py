"""Fast Walsh–Hadamard transform and randomised Hadamard rotations: equal to the dense matrices, orthogonal,
seeded, outlier-flattening; the non-power-of-two fallback (Paley block or random orthogonal block)."""

import math

import pytest
import torch

from fgq.quant.hadamard import (
    HadamardRotation,
    factor_size,
    fwht,
    hadamard_matrix,
    is_power_of_two,
    paley_hadamard,
    rotation_generator,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 64, 128, 1024, 4096])
@pytest.mark.parametrize("radix_bits", [1, 3, 5])
def test_fwht_equals_dense_hadamard_matmul(n, radix_bits):
    x = torch.randn(3, 2, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    dense = x @ hadamard_matrix(n, torch.float64)
    assert torch.allclose(fwht(x, radix_bits), dense, rtol=1e-12, atol=1e-9 * math.sqrt(n))


def test_fwht_float32_and_empty_and_errors():
    x = torch.randn(17, 1024, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(fwht(x), x @ hadamard_matrix(1024), atol=1e-3)
    assert fwht(torch.zeros(0, 8)).shape == (0, 8)
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.zeros(2, 12))
    with pytest.raises(ValueError, match="power-of-two"):
        hadamard_matrix(6)


def test_sylvester_matrix_properties():
    h = hadamard_matrix(64, torch.float64)
    assert torch.equal(h, h.T) and torch.equal(h @ h, 64 * torch.eye(64, dtype=torch.float64))
    assert set(h.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("order", [4, 8, 12, 20, 24, 32, 44, 48, 60])
def test_paley_matrices_are_hadamard(order):
    h = paley_hadamard(order)
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.T, order * torch.eye(order, dtype=torch.float64))
    with pytest.raises(ValueError, match="Paley"):
        paley_hadamard(16)  # 15 is not prime


def test_factor_sizes():
    assert factor_size(1024) == (1, 1024, False) and factor_size(4096) == (1, 4096, False)
    assert factor_size(768) == (12, 64, True)  # 12·64: Paley 12 (q = 11) ⊗ fast 64
    assert factor_size(3072) == (12, 256, True)
    assert factor_size(1280) == (20, 64, True)
    assert factor_size(28) == (7, 4, False)  # 27 is not prime and 56 > 28: random orthogonal 7 ⊗ fast 4
    assert factor_size(6) == (3, 2, False) and factor_size(7) == (7, 1, False)
    for n in range(1, 200):
        block, p, _ = factor_size(n)
        assert block * p == n and is_power_of_two(p)


@pytest.mark.parametrize("n", [64, 1024, 12, 96, 768, 7, 28, 100])
def test_rotation_is_orthogonal_and_matches_its_dense_matrix(n):
    rot = HadamardRotation(n, torch.Generator().manual_seed(3))
    r = rot.matrix()
    assert torch.allclose(r @ r.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    x = torch.randn(4, 5, n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.allclose(rot(x), x @ r, atol=1e-12)
    w = torch.randn(9, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(rot(x) @ rot.rotate(w).T, x @ w.T, atol=1e-10)  # (xR)(WR)ᵀ = xWᵀ
    assert rot.fast == is_power_of_two(n)
    if rot.fast or rot.paley:  # every entry ±1/√n: maximally incoherent
        assert torch.allclose(r.abs(), torch.full_like(r, 1 / math.sqrt(n)), atol=1e-12)


def test_rotation_spreads_an_outlier_channel():
    n = 256
    x = torch.zeros(1, n)
    x[0, 17] = 100.0
    y = HadamardRotation(n, torch.Generator().manual_seed(0))(x)
    assert torch.allclose(y.abs(), torch.full_like(y, 100.0 / math.sqrt(n)), atol=1e-4)


def test_rotations_are_seeded_by_name_and_saved():
    a = HadamardRotation(128, rotation_generator("t", 0, "blocks.0.qkv"))
    same = HadamardRotation(128, rotation_generator("t", 0, "blocks.0.qkv"))
    other = HadamardRotation(128, rotation_generator("t", 0, "blocks.0.proj"))
    assert torch.equal(a.signs, same.signs) and not torch.equal(a.signs, other.signs)
    assert set(a.state_dict()) == {"signs"}
    fallback = HadamardRotation(28, rotation_generator("t", 1, "x"))
    assert set(fallback.state_dict()) == {"signs", "block"}
    fresh = HadamardRotation(28, rotation_generator("t", 2, "y"))
    fresh.load_state_dict(fallback.state_dict())
    x = torch.randn(3, 28, dtype=torch.float64)
    assert torch.equal(fresh(x), fallback(x))
