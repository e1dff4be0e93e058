"""Randomised Hadamard rotations for QuaRot-style and QuantVGGT quantisation (QuaRot, Ashkboos et al.; QuantVGGT).

``R = D·H/√n`` with ``D = diag(±1)`` random and ``H`` the Sylvester–Hadamard matrix is orthogonal, so
``(x·R)(W·R)ᵀ = x·Wᵀ``; multiplying by ``R`` spreads an outlier channel evenly over all channels.

**Fast transform.** ``fwht`` applies ``H_n`` (n = 2^k) without forming it: ``H_n = H_{r₁} ⊗ … ⊗ H_{r_m}`` with
``Σ log₂ rᵢ = k`` (Sylvester matrices are Kronecker powers of ``H_2``), so viewing a row as an
``r₁ × … × r_m`` array and applying a small ``H_r`` along each axis gives ``x·H_n``. That is the radix-r
Walsh–Hadamard butterfly, ``O(n·Σ rᵢ) = O(n log n)`` operations for bounded r. We use r ≤ 32 (1024 = 32·32,
4096 = 16·16·16): each stage is then one small batched matmul, which is several times faster in PyTorch than
radix-2 (``radix_bits=1``: twelve allocation-bound passes at n = 4096, as slow as the dense product on CPU).

**Other sizes** (documented fallback). ``n = p·m`` with ``p`` the largest power of two dividing ``n``: the
rotation is ``R = D·(B ⊗ H_p/√p)`` with ``B`` an orthogonal ``m'×m'`` block, applied as the fast transform on
the ``p`` axis and a dense ``B`` on the other (``O(n log p + n·m')``):
- ``B = H_{m'}/√m'``, a Paley-I Hadamard matrix (order ``q+1``, ``q`` prime ≡ 3 mod 4), when some
  ``m' = m·2^j ≤ n`` (j ≥ 2) has ``m' − 1`` prime: e.g. 768 = 12·64, 1280 = 20·64, 3072 = 12·256 — every entry
  of ``R`` is then ``±1/√n``, as for powers of two (maximal incoherence, like QuaRot's hard-coded H₁₂, H₂₀, …);
- otherwise ``B`` is a seeded Haar-random orthogonal ``m×m`` matrix (e.g. n = 7·2^k when no Paley order fits):
  still exact, slightly less flattening, ``O(n·m)`` online.
``B`` is a buffer, so a saved model reloads it instead of redrawing it.
"""

from __future__ import annotations

import functools
import math
import zlib

import torch
from torch import nn

MAX_RADIX_BITS = 5  # butterflies of size ≤ 32 per stage (see the module docstring)


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                    ) -> torch.Tensor:
    """The dense Sylvester–Hadamard matrix ``H_n`` (entries ±1, symmetric, ``H·H = n·I``); n a power of two."""
    if not is_power_of_two(n):
        raise ValueError(f"Sylvester-Hadamard needs a power-of-two size, got {n}")
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h


@functools.lru_cache(maxsize=64)
def _small_hadamard(r: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return hadamard_matrix(r, dtype, device)


def _radices(n: int, radix_bits: int) -> list[int]:
    """Balanced stage sizes (powers of two ≤ 2^radix_bits) whose product is ``n``."""
    k = n.bit_length() - 1
    stages = max(1, math.ceil(k / radix_bits)) if k else 0
    bits = [k // stages + (1 if i < k % stages else 0) for i in range(stages)]
    return [1 << b for b in bits]


def fwht(x: torch.Tensor, radix_bits: int = MAX_RADIX_BITS) -> torch.Tensor:
    """Un-normalised fast Walsh–Hadamard transform along the last dimension: ``x @ H_n`` (n a power of two)."""
    n = x.shape[-1]
    if not is_power_of_two(n):
        raise ValueError(f"fwht needs a power-of-two last dimension, got {n} (use HadamardRotation)")
    if not 1 <= radix_bits <= 8:
        raise ValueError(f"radix_bits={radix_bits}: use 1..8")
    rows = x.numel() // n if n else 0
    y = x.reshape(rows, n)
    right, rest = 1, n
    for r in _radices(n, radix_bits):
        rest //= r
        h = _small_hadamard(r, y.dtype, y.device)
        # innermost axis: a plain matmul on rows; otherwise H_r (symmetric) along the middle of [rows·rest, r, right]
        y = y.reshape(rows * rest, r) @ h if right == 1 else torch.matmul(h, y.reshape(rows * rest, r, right))
        right *= r
    return y.reshape(x.shape)


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, math.isqrt(q) + 1))


def paley_hadamard(order: int) -> torch.Tensor:
    """Paley construction I: a Hadamard matrix of ``order = q + 1`` for a prime ``q ≡ 3 (mod 4)`` (fp64, ±1).

    ``H = I + S``, ``S = [[0, 1ᵀ], [−1, Q]]`` with the Jacobsthal matrix ``Q_ij = χ(j − i)`` (Legendre symbol
    mod q); ``S`` is skew-symmetric with ``S·Sᵀ = q·I``, hence ``H·Hᵀ = (q+1)·I``."""
    q = order - 1
    if not (_is_prime(q) and q % 4 == 3):
        raise ValueError(f"Paley I needs order q+1 with q prime and q ≡ 3 mod 4, got order {order}")
    squares = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if a in squares else -1.0 for a in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    jacobsthal = chi[(idx[None, :] - idx[:, None]) % q]
    s = torch.zeros(order, order, dtype=torch.float64)
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1.0, -1.0, jacobsthal
    return torch.eye(order, dtype=torch.float64) + s


def factor_size(n: int) -> tuple[int, int, bool]:
    """``(m', p, paley)``: ``n = m'·p`` with ``p`` a power of two for the fast transform and ``m'`` the size of
    the dense orthogonal block (1 for powers of two); ``paley`` says whether that block is a Paley Hadamard."""
    if n < 1:
        raise ValueError(f"cannot rotate width {n}")
    p = n & -n  # the largest power of two dividing n
    m = n // p
    if m == 1:
        return 1, n, False
    j = 2
    while (m << j) <= n and p >> j >= 1:
        if _is_prime((m << j) - 1):
            return m << j, p >> j, True
        j += 1
    return m, p, False


def random_signs(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=generator).to(torch.float32) * 2 - 1


def rotation_generator(tag: str, seed: int, name: str) -> torch.Generator:
    """A generator that depends only on (tag, seed, name): construction order never changes a rotation."""
    return torch.Generator().manual_seed(zlib.crc32(f"{tag}:{seed}:{name}".encode()))


class HadamardRotation(nn.Module):
    """``x ↦ x·R``, ``R = diag(d)·(B ⊗ H_p)/√p`` (``B`` orthogonal, absent for powers of two) on the last dim.

    Buffers (saved with the model): ``signs`` ``d`` (±1), and ``block`` ``B`` when ``n`` is not a power of two.
    ``forward`` and ``rotate`` compute in the input's dtype; ``matrix()`` gives the dense ``R`` (tests, benches).
    """

    def __init__(self, n: int, generator: torch.Generator | None = None, radix_bits: int = MAX_RADIX_BITS) -> None:
        super().__init__()
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.n, self.radix_bits = n, radix_bits
        self.block_size, self.pow2, self.paley = factor_size(n)
        self.register_buffer("signs", random_signs(n, generator))
        if self.block_size > 1:
            if self.paley:
                block = paley_hadamard(self.block_size) / math.sqrt(self.block_size)
            else:  # no Hadamard order fits: a Haar-random orthogonal block (QR with the sign fix)
                q, r = torch.linalg.qr(torch.randn(self.block_size, self.block_size, generator=generator,
                                                   dtype=torch.float64))
                block = q * torch.where(torch.diagonal(r) >= 0, 1.0, -1.0).to(q.dtype)
            # fp64: the block is tiny, and fp32 rounding of 1/√m' would cost orthogonality at the 1e-8 level
            self.register_buffer("block", block.contiguous())
        else:
            self.block = None

    @property
    def fast(self) -> bool:
        """True when the whole rotation is the fast transform (n a power of two)."""
        return self.block is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.signs.to(x.dtype)
        if self.block is None:
            return fwht(y, self.radix_bits) * (1.0 / math.sqrt(self.n))
        lead = y.shape[:-1]
        y = fwht(y.reshape(*lead, self.block_size, self.pow2), self.radix_bits)
        y = torch.matmul(self.block.T.to(y.dtype), y)  # Bᵀ·Y on the block axis: x @ kron(B, H_p)
        return y.reshape(*lead, self.n) * (1.0 / math.sqrt(self.pow2))

    def rotate(self, w: torch.Tensor) -> torch.Tensor:
        """``W·R`` (rotates the input dimension of an ``[out, in]`` weight), computed in fp64, cast back."""
        return self(w.double()).to(w.dtype)

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The dense ``R`` (``n×n``): ``x·R == forward(x)``."""
        h = hadamard_matrix(self.pow2, dtype) / math.sqrt(self.pow2)
        core = h if self.block is None else torch.kron(self.block.to(dtype), h)
        return self.signs.to(dtype)[:, None] * core

    def extra_repr(self) -> str:
        kind = "fast" if self.fast else f"{'paley' if self.paley else 'random'} {self.block_size} x fast {self.pow2}"
        return f"{self.n}, {kind}"


__all__ = ["HadamardRotation", "factor_size", "fwht", "hadamard_matrix", "is_power_of_two", "paley_hadamard",
           "rotation_generator"]
