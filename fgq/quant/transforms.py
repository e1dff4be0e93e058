"""FlatQuant's learnable invertible transforms (Sun et al., FlatQuant; code ``ruikangliu/FlatQuant``).

A transform ``P`` is applied to a linear's input on the activation side (``x ↦ x·P``) and its inverse-transpose
to the weight (``W ↦ W·P⁻ᵀ``), so ``(x·P)·(W·P⁻ᵀ)ᵀ = x·Wᵀ`` exactly in floating point arithmetic up to rounding.

- ``TransformMatrix``: one invertible ``n×n`` factor, either
  - ``"svd"`` (FlatQuant's default): ``P = U·diag(σ)·Vᵀ`` with ``U``, ``V`` orthogonal through
    ``torch.nn.utils.parametrizations.orthogonal(orthogonal_map="cayley", use_trivialization=False)`` and
    ``P⁻ᵀ = U·diag(1/σ)·Vᵀ`` exactly (no matrix inverse). As in FlatQuant, the random-orthogonal QR draw is
    stored as the *unconstrained* parameter ``X`` (PyTorch cannot invert the Cayley map), so the effective
    initial factor is ``Cayley(tril(X) − tril(X)ᵀ)``: orthogonal, but not the QR matrix;
  - ``"direct"``: a plain matrix initialised random-orthogonal, ``P⁻ᵀ`` from an fp64 inverse.
- ``KroneckerTransform``: ``x ↦ (x ⊙ c)·(P_L ⊗ P_R)`` with factor sizes from ``get_decompose_dim`` and an
  optional per-channel diagonal ``c`` (``add_diag``) applied first.
- ``SingleTransform``: one factor (FlatQuant's per-head V transform and head mixing).

Every random draw comes from an explicit ``torch.Generator`` (never a global RNG).

Two modes. *Calibration*: factors are recomputed from their parameters on every call (differentiable).
*Eval* (after ``materialize``): each factor keeps only the fp32 (module-dtype) matrix ``P`` needed online;
``P⁻ᵀ`` has been merged into the weights by the caller, so it is dropped.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

TRANSFORM_KINDS = ("svd", "direct")


def get_decompose_dim(n: int) -> tuple[int, int]:
    """Kronecker factor sizes ``(n_L, n_R)`` with ``n_L·n_R = n`` and ``n_L ≤ n_R``.

    FlatQuant's rule: the smallest integer ``a ≥ √n`` with ``a² − n = b²`` a perfect square gives
    ``(a − b, a + b)`` (1024 → 32×32, 4096 → 64×64, 3072 → 48×64, 2048 → 32×64, 64 → 8×8, 128 → 8×16).
    The rule has a solution exactly when ``n`` is odd or divisible by 4; for ``n ≡ 2 (mod 4)`` (e.g. 6, 1030)
    it never terminates in FlatQuant, so we fall back to the most balanced divisor pair ``(d, n/d)``, ``d`` the
    largest divisor ``≤ √n``. Primes give ``(1, n)``: a dense ``n×n`` transform (correct, just not cheap).
    """
    if n < 1:
        raise ValueError(f"cannot decompose width {n}")
    if n % 4 == 2:
        d = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
        return d, n // d
    a = math.isqrt(n)
    if a * a < n:
        a += 1
    while True:  # terminates at a = (n+1)/2 (odd n) or a = n/4 + 1 (n divisible by 4) at the latest
        b = math.isqrt(a * a - n)
        if b * b == a * a - n:
            return a - b, a + b
        a += 1


def kron_apply(x: torch.Tensor, left: torch.Tensor | None, right: torch.Tensor | None) -> torch.Tensor:
    """``x @ kron(left, right)`` on the last dimension without forming the Kronecker product: reshape each row
    to ``[n_L, n_R]`` and compute ``leftᵀ · X · right``. ``None`` stands for an identity factor."""
    n_left = left.shape[0] if left is not None else x.shape[-1] // right.shape[0]
    n_right = x.shape[-1] // n_left
    y = x.reshape(*x.shape[:-1], n_left, n_right)
    if left is not None:
        y = torch.matmul(left.transpose(0, 1).to(y.dtype), y)
    if right is not None:
        y = torch.matmul(y, right.to(y.dtype))
    return y.reshape(x.shape)


def random_orthogonal(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Haar-random orthogonal matrix: QR of a Gaussian matrix (drawn in fp64) with the sign fix
    ``Q·diag(sign(diag R))``."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return (q * signs).to(dtype)


def _cayley_orthogonal(n: int, generator: torch.Generator) -> nn.Linear:
    """An ``n×n`` orthogonal factor under the Cayley parametrisation, its unconstrained parameter set to a
    random-orthogonal draw (as in FlatQuant's code, the effective matrix is the Cayley map of that draw)."""
    linear = nn.Linear(n, n, bias=False)
    with torch.no_grad():
        linear.weight.copy_(random_orthogonal(n, generator))
    # right_inverse raises NotImplementedError for Cayley without trivialisation; PyTorch then stores the
    # assigned tensor as ``parametrizations.weight.original`` unchanged.
    return orthogonal(linear, orthogonal_map="cayley", use_trivialization=False)


def _orthogonal_value(linear: nn.Linear, dtype: torch.dtype | None) -> torch.Tensor:
    """The parametrised orthogonal matrix, computed in ``dtype`` (fp64 for reparameterisation) if given."""
    plist = linear.parametrizations.weight
    if dtype is None or dtype == plist.original.dtype:
        return linear.weight
    return plist[0](plist.original.to(dtype))


class TransformMatrix(nn.Module):
    """One invertible factor ``P`` (``n×n``); ``factors()`` returns ``(P, P⁻ᵀ)``."""

    def __init__(self, n: int, kind: str, generator: torch.Generator) -> None:
        super().__init__()
        if kind not in TRANSFORM_KINDS:
            raise ValueError(f"transform={kind!r}: use one of {', '.join(TRANSFORM_KINDS)}")
        self.n, self.kind = n, kind
        self.materialized = False
        if kind == "svd":
            self.linear_u = _cayley_orthogonal(n, generator)
            self.linear_v = _cayley_orthogonal(n, generator)
            self.linear_diag = nn.Parameter(torch.ones(n))
        else:
            self.linear = nn.Parameter(random_orthogonal(n, generator))

    def factors(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(P, P⁻ᵀ)``; in eval mode ``(P, None)`` (the inverse lives in the merged weights)."""
        if self.materialized:
            return self.matrix if dtype is None else self.matrix.to(dtype), None
        if self.kind == "svd":
            u, v = _orthogonal_value(self.linear_u, dtype), _orthogonal_value(self.linear_v, dtype)
            sigma = self.linear_diag if dtype is None else self.linear_diag.to(dtype)
            return (u * sigma) @ v.T, (u / sigma) @ v.T
        p = self.linear if dtype is None else self.linear.to(dtype)
        return p, torch.linalg.inv(p.double()).T.to(p.dtype)

    @torch.no_grad()
    def materialize(self, matrix: torch.Tensor) -> None:
        """Eval mode: keep only ``matrix`` (``P``, cast to the parameter dtype) as a buffer."""
        dtype = self.linear_diag.dtype if self.kind == "svd" else self.linear.dtype
        for name in ("linear_u", "linear_v", "linear_diag", "linear"):
            if hasattr(self, name):
                delattr(self, name)
        self.register_buffer("matrix", matrix.detach().to(dtype).clone())
        self.materialized = True

    def extra_repr(self) -> str:
        return f"{self.n}, kind={self.kind}, materialized={self.materialized}"


class KronFactors(NamedTuple):
    """The current values of a ``KroneckerTransform``: ``diag`` may be ``None`` (no diagonal, or folded),
    the ``*_inv_t`` are ``None`` in eval mode."""

    diag: torch.Tensor | None
    left: torch.Tensor
    right: torch.Tensor
    left_inv_t: torch.Tensor | None
    right_inv_t: torch.Tensor | None

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """``(x ⊙ c)·(P_L ⊗ P_R)``."""
        if self.diag is not None:
            x = x * self.diag.to(x.dtype)
        return kron_apply(x, self.left, self.right)

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """``W·diag(1/c)·(P_L ⊗ P_R)⁻ᵀ`` on the input (last) dimension of ``w``."""
        if self.diag is not None:
            w = w / self.diag.to(w.dtype)
        return kron_apply(w, self.left_inv_t, self.right_inv_t)


class KroneckerTransform(nn.Module):
    """``x ↦ (x ⊙ c)·(P_L ⊗ P_R)`` on a width-``n`` input (FlatQuant's ``SVDDecomposeTransMatrix``)."""

    def __init__(self, n: int, kind: str, generator: torch.Generator, diag: bool = True) -> None:
        super().__init__()
        self.n = n
        self.sizes = get_decompose_dim(n)
        self.left = TransformMatrix(self.sizes[0], kind, generator)
        self.right = TransformMatrix(self.sizes[1], kind, generator)
        self.diag_scale = nn.Parameter(torch.ones(n)) if diag else None

    @property
    def materialized(self) -> bool:
        return self.left.materialized

    def factors(self, dtype: torch.dtype | None = None) -> KronFactors:
        left, left_inv_t = self.left.factors(dtype)
        right, right_inv_t = self.right.factors(dtype)
        diag = self.diag_scale
        if diag is not None and dtype is not None:
            diag = diag.to(dtype)
        return KronFactors(diag, left, right, left_inv_t, right_inv_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factors().activation(x)

    @torch.no_grad()
    def materialize(self, factors: KronFactors, keep_diag: bool) -> None:
        """Eval mode with the given (fp64) factors; the diagonal stays online only if ``keep_diag`` (fc2),
        otherwise the caller has folded it into the preceding LayerNorm and it is removed."""
        self.left.materialize(factors.left)
        self.right.materialize(factors.right)
        if self.diag_scale is not None and not keep_diag:
            self.diag_scale = None
        elif self.diag_scale is not None:
            self.diag_scale.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{self.n} = {self.sizes[0]}x{self.sizes[1]}, diag={self.diag_scale is not None}"


class SingleTransform(TransformMatrix):
    """One factor ``P`` (FlatQuant's ``SVDSingleTransMatrix``), no diagonal: the per-head V transform
    (size ``head_dim``) and the head mixing before ``proj`` (size ``num_heads``)."""
