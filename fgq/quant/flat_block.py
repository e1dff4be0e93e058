"""The modules of a FlatQuant-quantized block: ``FlatLinear`` (LWC/LAC fake quantization), the attention and
MLP wrappers and ``FlatQuantBlock`` (transforms, calibration and eval modes). The placement and the algebra
are described in :mod:`fgq.quant.flatquant`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fgq.models.adapter import attention_core, pre_norm_residual
from fgq.quant.flatquant_config import FlatQuantConfig
from fgq.quant.primitives import fake_quant_with, qparams, quantize_weight
from fgq.quant.spec import QuantSpec
from fgq.quant.transforms import KroneckerTransform, SingleTransform, kron_apply

CLIP_LOGIT_INIT = 4.0  # sigmoid(4) ≈ 0.982, FlatQuant's LWC/LAC init
TRANSFORMS = ("ln_trans", "v_trans", "o_trans", "fc1_trans", "fc2_trans")


def fake_quant_clipped(
    x: torch.Tensor, bits: int, sym: bool, lo: torch.Tensor | float, hi: torch.Tensor | float,
    *, weight: bool = False, grid: str = "flatquant",
) -> torch.Tensor:
    """Per-row fake quantisation with separate clip ratios for the row min and max (LAC):
    ``xmin ← lo·min(rowmin, 0)``, ``xmax ← hi·max(rowmax, 0)``; the scale follows ``qparams`` (same grids)."""
    xmin = x.amin(dim=-1, keepdim=True).clamp(max=0) * lo
    xmax = x.amax(dim=-1, keepdim=True).clamp(min=0) * hi
    # qparams on the 2-element rows [xmin, xmax] sees exactly this (clipped) range
    scale, zero, qmin, qmax = qparams(torch.cat((xmin, xmax), dim=-1), bits, sym, weight=weight, grid=grid)
    return fake_quant_with(x, scale, zero, qmin, qmax)


class FlatLinear(nn.Module):
    """A linear with per-token activation fake-quant (LAC) and per-channel weight fake-quant (LWC).

    Keeps the original ``weight``/``bias`` parameters (frozen). In calibration mode the caller passes
    ``in_map`` (``W ↦ W·diag(1/c)·P⁻ᵀ``) and ``out_map`` (``(W, b) ↦`` output-side transform, applied after
    LWC); after ``merge`` the stored weight is final (merged, clipped, quantised) and the maps are ignored.
    ``act_splits`` > 1: the output rows form that many equal blocks (q/k/v), each with its own activation
    quantiser and LAC pair on the shared input.
    """

    def __init__(self, linear: nn.Linear, spec: QuantSpec, *, lwc: bool, lac: bool, act_splits: int = 1) -> None:
        super().__init__()
        if linear.out_features % act_splits:
            raise ValueError(f"{linear.out_features} output rows do not split into {act_splits} blocks")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.spec = spec
        self.act_splits = act_splits
        self.merged = False
        self.weight_is_quantized = False
        device = linear.weight.device  # the clips live with the weight they clip (a model already on the GPU)
        if lwc and spec.quantizes_weights:
            self.clip_factor_w_max = nn.Parameter(torch.full((self.out_features, 1), CLIP_LOGIT_INIT, device=device))
            self.clip_factor_w_min = nn.Parameter(torch.full((self.out_features, 1), CLIP_LOGIT_INIT, device=device))
        else:
            self.clip_factor_w_max = self.clip_factor_w_min = None
        if lac and spec.quantizes_activations:
            self.clip_factor_a_max = nn.Parameter(torch.full((act_splits,), CLIP_LOGIT_INIT, device=device))
            self.clip_factor_a_min = nn.Parameter(torch.full((act_splits,), CLIP_LOGIT_INIT, device=device))
        else:
            self.clip_factor_a_max = self.clip_factor_a_min = None

    def clip_parameters(self) -> list[nn.Parameter]:
        names = ("clip_factor_w_max", "clip_factor_w_min", "clip_factor_a_max", "clip_factor_a_min")
        return [p for p in (getattr(self, n) for n in names) if p is not None]

    def clip_weight(self, w: torch.Tensor) -> torch.Tensor:
        """LWC: clamp each row to its learned fractions of the row max and min (raw, not forced through 0)."""
        if self.clip_factor_w_max is None:
            return w
        hi = w.amax(dim=-1, keepdim=True) * torch.sigmoid(self.clip_factor_w_max).to(w.dtype)
        lo = w.amin(dim=-1, keepdim=True) * torch.sigmoid(self.clip_factor_w_min).to(w.dtype)
        return torch.clamp(w, lo, hi)

    def quantize_weight(self, w: torch.Tensor) -> torch.Tensor:
        s = self.spec
        return quantize_weight(w, s.w_bits, s.w_sym, s.group_size, s.w_clip_ratio, s.grid)

    def quantize_input(self, x: torch.Tensor, split: int = 0) -> torch.Tensor:
        s = self.spec
        if not s.quantizes_activations:
            return x
        lo = hi = s.a_clip_ratio
        if self.clip_factor_a_max is not None:
            hi = torch.sigmoid(self.clip_factor_a_max[split]) * s.a_clip_ratio
            lo = torch.sigmoid(self.clip_factor_a_min[split]) * s.a_clip_ratio
        return fake_quant_clipped(x, s.a_bits, s.a_sym, lo, hi, grid=s.grid)

    def _transformed(self, w, b, in_map, out_map):
        if in_map is not None:
            w = in_map(w)
        w = self.clip_weight(w)
        if out_map is not None:
            w, b = out_map(w, b)
        return w, b

    def forward(self, x: torch.Tensor, in_map: Callable | None = None, out_map: Callable | None = None):
        if self.merged:
            w, b = self.weight, self.bias
        else:
            w, b = self._transformed(self.weight, self.bias, in_map, out_map)
            w = self.quantize_weight(w)
        if self.act_splits == 1 or not self.spec.quantizes_activations:
            return F.linear(self.quantize_input(x), w, b)
        ws = w.chunk(self.act_splits, dim=0)
        bs = b.chunk(self.act_splits, dim=0) if b is not None else (None,) * self.act_splits
        outs = [F.linear(self.quantize_input(x, i), wi, bi) for i, (wi, bi) in enumerate(zip(ws, bs, strict=True))]
        return torch.cat(outs, dim=-1)

    @torch.no_grad()
    def merge(self, in_map: Callable | None, out_map: Callable | None, quantize: bool = True) -> None:
        """Fold the maps and LWC into the stored weight (fp64 math, cast back), then quantise it once (RTN,
        per channel) unless ``quantize=False`` (e.g. for a later GPTQ pass). LWC parameters are removed."""
        dtype = self.weight.dtype
        b = self.bias.double() if self.bias is not None else None
        w, b = self._transformed(self.weight.double(), b, in_map, out_map)
        if quantize:
            w = self.quantize_weight(w)
        self.weight.copy_(w.to(dtype))
        if b is not None:
            self.bias.copy_(b.to(dtype))
        self.clip_factor_w_max = self.clip_factor_w_min = None
        self.merged = True
        self.weight_is_quantized = quantize and self.spec.quantizes_weights

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, {self.spec.tag}, act_splits={self.act_splits}, "
                f"merged={self.merged}")


# ---------------------------------------------------------------------------------------------------------------
# The quantised block


class FlatAttention(nn.Module):
    """The attention parts of a ``FlatQuantBlock`` under ``Attention``'s names (``qkv``, ``q_norm``, ``k_norm``,
    ``rope``, ``proj``), so ``BlockRef.of`` still finds ``attn.qkv``/``attn.proj``. No forward of its own."""

    def __init__(self, attn: nn.Module, spec: QuantSpec, config: FlatQuantConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        splits = 3 if config.split_qkv else 1
        self.qkv = FlatLinear(attn.qkv, spec, lwc=config.lwc, lac=config.lac, act_splits=splits)
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.rope = attn.rope
        self.proj = FlatLinear(attn.proj, spec, lwc=config.lwc, lac=config.lac)


class FlatMlp(nn.Module):
    """``fc1`` → ``act`` → ``fc2`` of a ``FlatQuantBlock`` (the transforms live on the block)."""

    def __init__(self, mlp: nn.Module, spec: QuantSpec, config: FlatQuantConfig) -> None:
        super().__init__()
        self.fc1 = FlatLinear(mlp.fc1, spec, lwc=config.lwc, lac=config.lac)
        self.act = mlp.act
        self.fc2 = FlatLinear(mlp.fc2, spec, lwc=config.lwc, lac=config.lac)


class FlatQuantBlock(nn.Module):
    """Drop-in replacement of a ``fgq.models.layers.Block`` (same ``forward(x, pos)``) with FlatQuant's
    transforms, LWC, LAC and fake quantisation. It takes over the block's modules and parameters (no copies).
    """

    def __init__(self, block: nn.Module, spec: QuantSpec, config: FlatQuantConfig,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.spec = spec
        self.norm1, self.ls1, self.norm2, self.ls2 = block.norm1, block.ls1, block.norm2, block.ls2
        self.attn = FlatAttention(block.attn, spec, config)
        self.mlp = FlatMlp(block.mlp, spec, config)
        width, hidden = block.attn.qkv.in_features, block.mlp.fc1.out_features
        kind, diag = config.transform, config.add_diag
        self.ln_trans = KroneckerTransform(width, kind, generator, diag)
        self.v_trans = SingleTransform(block.attn.head_dim, kind, generator)
        self.o_trans = SingleTransform(block.attn.num_heads, kind, generator)
        self.fc1_trans = KroneckerTransform(width, kind, generator, diag)
        self.fc2_trans = KroneckerTransform(hidden, kind, generator, diag)
        self.merged = False
        self.requires_grad_(False)
        for p in self.trainable_parameters()["transforms"] + self.trainable_parameters()["clips"]:
            p.requires_grad_(True)

    # -- parameters -------------------------------------------------------------------------------------------

    def linears(self) -> dict[str, FlatLinear]:
        return {"qkv": self.attn.qkv, "proj": self.attn.proj, "fc1": self.mlp.fc1, "fc2": self.mlp.fc2}

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """``transforms`` (factors, σ, diagonals: ``lr``) and ``clips`` (LWC/LAC logits: ``clip_lr_mult·lr``)."""
        transforms = [p for name in TRANSFORMS for p in getattr(self, name).parameters()]
        clips = [p for lin in self.linears().values() for p in lin.clip_parameters()]
        return {"transforms": transforms, "clips": clips}

    @torch.no_grad()
    def init_diagonals(self, act_absmax: dict[str, torch.Tensor] | None, alpha: float, style: str) -> None:
        """``sq_style``: ``c = clamp(colmax|W|^(1−α) / max|X|^α, min=1e-5)`` with ``max|X|`` the per-channel
        running max of the linear group's input (``act_absmax`` keys qkv, fc1, fc2); ``one_style``: ``c = 1``."""
        for name, key in (("ln_trans", "qkv"), ("fc1_trans", "fc1"), ("fc2_trans", "fc2")):
            diag = getattr(self, name).diag_scale
            if diag is None:
                continue
            if style == "one_style":
                diag.fill_(1.0)
                continue
            w_max = self.linears()[key].weight.abs().amax(dim=0).float()
            x_max = act_absmax[key].to(w_max.device, torch.float32)
            diag.copy_((w_max.pow(1 - alpha) / x_max.pow(alpha)).clamp(min=1e-5))

    # -- forward ----------------------------------------------------------------------------------------------

    def _factors(self, dtype: torch.dtype | None = None) -> dict[str, Any]:
        return {name: getattr(self, name).factors(dtype) for name in TRANSFORMS}

    def _weight_maps(self, f: dict[str, Any]) -> dict[str, tuple[Callable | None, Callable | None]]:
        """``(in_map, out_map)`` per linear from the transforms' current factors (calibration or fp64 merge)."""
        heads, head_dim = self.attn.num_heads, self.attn.head_dim
        width = heads * head_dim
        v_matrix, v_inv_t = f["v_trans"]
        o_inv_t = f["o_trans"][1]

        def qkv_out(w: torch.Tensor, b: torch.Tensor | None):
            # v rows of head h: W_vh ← P_vᵀ·W_vh (so v_h ← v_h·P_v), b_vh ← b_vh·P_v; q, k untouched
            wq, wk, wv = w.split(width, dim=0)
            wv = torch.matmul(v_matrix.T.to(wv.dtype), wv.reshape(heads, head_dim, -1)).reshape(width, -1)
            w = torch.cat((wq, wk, wv), dim=0)
            if b is not None:
                bq, bk, bv = b.split(width, dim=0)
                b = torch.cat((bq, bk, (bv.reshape(heads, head_dim) @ v_matrix.to(bv.dtype)).reshape(width)))
            return w, b

        return {
            "qkv": (f["ln_trans"].weight, qkv_out),
            "proj": (lambda w: kron_apply(w, o_inv_t, v_inv_t), None),
            "fc1": (f["fc1_trans"].weight, None),
            "fc2": (f["fc2_trans"].weight, None),
        }

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """The model's block (``pre_norm_residual``, ``attention_core``) with the transforms and quantizers
        inserted where FlatQuant puts them."""
        f = self._factors()
        maps = {} if self.merged else self._weight_maps(f)
        attn, mlp = self.attn, self.mlp

        def attention(h: torch.Tensor) -> torch.Tensor:
            qkv = attn.qkv(f["ln_trans"].activation(h), *maps.get("qkv", (None, None)))
            o = kron_apply(attention_core(attn, qkv, pos), f["o_trans"][0], None)  # head mixing: P_oᵀ·X per token
            return attn.proj(o, *maps.get("proj", (None, None)))

        def feed_forward(h: torch.Tensor) -> torch.Tensor:
            h = mlp.act(mlp.fc1(f["fc1_trans"].activation(h), *maps.get("fc1", (None, None))))
            return mlp.fc2(f["fc2_trans"].activation(h), *maps.get("fc2", (None, None)))

        return pre_norm_residual(self, x, attention, feed_forward)

    # -- reparameterisation -----------------------------------------------------------------------------------

    @torch.no_grad()
    def reparameterize(self, quantize_weights: bool = True) -> None:
        """Calibration → eval mode (as FlatQuant's and FGQ's code do it): materialise every ``P`` (fp64, stored in the
        parameter dtype), fold ``c₁``/``c₂`` into norm1/norm2 (γ and β; kept online if a norm has no affine),
        merge ``diag(1/c)·P⁻ᵀ``, LWC and the V transform into the weights in fp64, then quantise the merged
        weights once (``quantize_weights``). ``c₃`` stays online before fc2."""
        if self.merged:
            raise RuntimeError("FlatQuantBlock is already reparameterised")
        f = self._factors(torch.float64)
        for name, (in_map, out_map) in self._weight_maps(f).items():
            self.linears()[name].merge(in_map, out_map, quantize=quantize_weights)
        for name, norm in (("ln_trans", self.norm1), ("fc1_trans", self.norm2)):
            diag = f[name].diag
            fold = diag is not None and getattr(norm, "weight", None) is not None
            if fold:
                norm.weight.copy_((norm.weight.double() * diag).to(norm.weight.dtype))
                if norm.bias is not None:
                    norm.bias.copy_((norm.bias.double() * diag).to(norm.bias.dtype))
            getattr(self, name).materialize(f[name], keep_diag=not fold)
        self.fc2_trans.materialize(f["fc2_trans"], keep_diag=True)
        self.v_trans.materialize(f["v_trans"][0])  # merged into W_v; kept for inspection only
        self.o_trans.materialize(f["o_trans"][0])
        self.merged = True
        self.requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# Calibration
