"""Does the Fisher predict which blocks are sensitive? Fisher-predicted vs measured per-block loss
(FGQ paper, Fig. 3c: Pearson r = 0.88 on VGGT-1B; the official code releases a script for the measured side only).

**Measured side** (as the official script does it, on the plain model by default): for every calibrated block
``l`` quantize only that block — RTN W``b`` per output channel (``spec``; the de-quantized weight is written
into the weight, as ``fgq.quant.rtn`` does) on its four linears (qkv, proj, fc1, fc2: the official code's six
after splitting qkv) and its per-token activation quantizers at ``spec.a_bits`` — run the full model and
record, per task ``k``::

    measured[k, l] = mean over clips of MSE(task output k quantized, task output k FP)

(camera = ``pose_enc`` / ``camera_poses``, depth, points = ``world_points`` / ``points``; ``QuantView.task_outputs``).
The original weights and ``nn.Linear`` modules are put back after each block, bit for bit.

**Predicted side**: ``pred[k, l] = Σ_c F[k, l, c] · s²[l, c]`` with ``F`` the task Fisher (``fgq.fisher.compute``,
``[T, L, C]``) and ``s²[l, c]`` the per-channel mean squared perturbation of block ``l``'s output under that
block's quantization:

* ``noise="measured"``: ``s²[l, c] = mean over clips, frames and tokens of (h_l^quant − h_l^FP)²[…, c]``, taken
  from the same runs as the measured side (block ``l``'s input is FP there, since earlier blocks are FP);
* ``noise="uniform"``: the uniform-noise model of the official Fisher script's impact table,
  ``s²[l, c] = (2·absmax[l, c] / 2^b)² / 12`` with ``absmax[l, c]`` the running abs-max of block ``l``'s FP
  output over the clips and ``b`` the activation bits (``noise_bits``; the weight bits when activations are
  not quantized).

Both predictions are always computed (they need the same runs); ``noise`` picks the primary one, the other is
reported under ``alternative``. Correlations across blocks: Pearson and Spearman r per task and pooled over
tasks, on the linear scale and on log10 (blocks with a non-positive value dropped there, ``n_log10`` says how
many are left; Spearman on log10 equals Spearman on the linear scale unless points were dropped). ``pooled``
concatenates the raw values of all tasks; it is confounded by scale (the summed-output Fisher grows with the
square of a head's number of outputs while the measured MSE is per element, so tasks sit at different
predicted/measured ratios) and can even come out negative; ``pooled_normalized`` first divides each task's
predicted and measured values by their mean over blocks and is the pooled figure to read. Within a task the
constant factors cancel in r. Which
combination gave the paper's 0.88 is not known (the official predicted side is not released).

**Not done (difference from the official script).** The official script first wraps the model in FlatQuant
modules reparameterised with *uncalibrated* random orthogonal transforms (diagonals 1, LWC folded at its init
clip ratio σ(4) ≈ 0.982, transform matrices in fp16, activation quantizers off) and takes the FP references
from that wrapped model. ``wrap="flatquant"`` offers that (``FlatQuantBlock`` with the FlatQuant defaults'
transform kind and seed, ``one_style`` diagonals, ``reparameterize(quantize_weights=False)``; matrices stay in
the model's dtype, not fp16); the default ``wrap="plain"`` measures the plain model. Its first-order
attribution ``mean_tokens(∂L_k/∂h_l · Δh_l)`` is not computed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from fgq.fisher.compute import TASKS, compute_fisher, take_clips, use_amp
from fgq.fisher.plots import block_labels
from fgq.models.adapter import LINEAR_PATHS, BlockRef, QuantView
from fgq.quant.linear import QuantLinear, swap_linears
from fgq.quant.primitives import quantize_weight
from fgq.quant.spec import QuantSpec
from fgq.validation.correlation import correlation_table, predicted_loss, uniform_noise_variance

log = logging.getLogger(__name__)

NOISE_MODELS = ("measured", "uniform")
WRAPS = ("plain", "flatquant")


# ---------------------------------------------------------------------------------------------------------------
# Quantizing one block at a time


def _linear_names(ref: BlockRef) -> list[str]:
    return [f"{ref.name}.{LINEAR_PATHS[short]}" for short in LINEAR_PATHS]


@contextmanager
def rtn_block(model: nn.Module, ref: BlockRef, spec: QuantSpec) -> Iterator[None]:
    """Quantize only block ``ref`` of a plain model: its linears become ``QuantLinear``s with the RTN
    weight written in (per-token activation quantization at ``spec.a_bits``); on exit the original weights
    (bit for bit) and ``nn.Linear`` modules are restored."""
    names = _linear_names(ref)
    originals = {name: model.get_submodule(name) for name in names}
    for name, layer in originals.items():
        if isinstance(layer, QuantLinear) or not isinstance(layer, nn.Linear):
            raise ValueError(f"{name} is {type(layer).__name__}: the validation needs an FP model")
    backup = {name: layer.weight.detach().clone() for name, layer in originals.items()}
    try:
        layers = swap_linears(model, names, spec)
        with torch.no_grad():
            for layer in layers.values():
                layer.weight.copy_(layer.quantized_weight())
                layer.weight_is_quantized = True
        yield
    finally:
        with torch.no_grad():
            for name, layer in originals.items():
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, layer)
                layer.weight.copy_(backup[name])


@contextmanager
def flat_block(ref: BlockRef, spec: QuantSpec) -> Iterator[None]:
    """Quantize only block ``ref`` of a model wrapped by ``wrap_flatquant``: RTN of its merged weights and its
    activation quantizers (LAC at init) on; restored on exit."""
    linears = ref.module.linears()
    backup = {k: lin.weight.detach().clone() for k, lin in linears.items()}
    try:
        with torch.no_grad():
            for lin in linears.values():
                lin.spec = spec
                lin.weight.copy_(quantize_weight(lin.weight, spec.w_bits, spec.w_sym, spec.group_size,
                                                 spec.w_clip_ratio, spec.grid))
        yield
    finally:
        with torch.no_grad():
            for k, lin in linears.items():
                lin.spec = QuantSpec()
                lin.weight.copy_(backup[k])


def wrap_flatquant(model: nn.Module, spec: QuantSpec, seed: int = 0) -> None:
    """The official script's set-up (in place): every block a ``FlatQuantBlock`` with uncalibrated random
    transforms (FlatQuant defaults, block generator seeded from ``seed``), diagonals 1, LWC folded at its init
    clip ratio, weights merged but not quantized, all activation quantizers off (``spec`` = FP on every
    linear until ``flat_block`` turns one block on)."""
    from fgq.quant.flat_block import FlatQuantBlock
    from fgq.quant.flatquant import FlatQuantConfig, _block_generator, _replace_block

    config = FlatQuantConfig(seed=seed)
    view = model.quant_view()
    for ref in view.blocks:
        device = next(ref.module.parameters()).device
        block = FlatQuantBlock(ref.module, spec, config, _block_generator(seed, ref.index)).to(device)
        block.init_diagonals(None, config.diag_alpha, "one_style")
        block.reparameterize(quantize_weights=False)
        block.requires_grad_(False)
        for lin in block.linears().values():
            lin.spec = QuantSpec()
        _replace_block(view, ref, block)


class _Taps:
    """Forward hooks keeping (detached, float32) block outputs: ``which`` block indices."""

    def __init__(self, view: QuantView, which: Iterable[int]) -> None:
        self.view, self.which = view, list(which)
        self.outputs: dict[int, torch.Tensor] = {}
        self.handles = []

    def __enter__(self) -> _Taps:
        for i in self.which:
            self.handles.append(self.view.blocks[i].module.register_forward_hook(self._keep(i)))
        return self

    def _keep(self, index: int):
        def hook(_module, _args, output):
            self.outputs[index] = output.detach().float()
        return hook

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


def _task_tensors(view: QuantView, predictions: dict) -> dict[str, torch.Tensor]:
    outputs = view.task_outputs(predictions)
    return {t: outputs[t].detach().float() for t in TASKS}


# ---------------------------------------------------------------------------------------------------------------
# The experiment


def fisher_validation(
    model: nn.Module,
    calib: Iterable[dict],
    spec: QuantSpec,
    fisher: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    noise: str = "measured",
    num_clips: int | None = None,
    noise_bits: int | None = None,
    wrap: str = "plain",
    amp: bool | None = None,
    seed: int = 0,
) -> dict:
    """Fisher-predicted vs measured per-block loss for every calibrated block of ``model`` (see the module
    docstring). ``calib``: batches of clips (the first ``num_clips`` are used; ``None`` = all); ``fisher``:
    ``[3, L, C]`` in ``fgq.fisher.compute.TASKS`` order (computed here from the same clips when ``None``); ``device``:
    default where the parameters are; ``amp``: ``None`` = bf16 autocast on CUDA (as the Fisher), fp32 on CPU;
    ``wrap``: ``plain`` | ``flatquant`` (the official set-up; modifies ``model`` in place, after the Fisher is
    taken from the plain model); ``seed``: the transforms of ``wrap="flatquant"``.

    Returns a JSON-able dict: ``blocks`` (labels F0, G0, … / D0, …), ``tasks`` (per task ``predicted``,
    ``measured`` lists over blocks and the r values), ``pooled``, ``pooled_normalized``, ``alternative`` (the
    other noise model's predicted values and r values), ``noise_var_mean`` (per block, both models), and the
    settings. The model's weights and modules are unchanged afterwards (``wrap="plain"``)."""
    if noise not in NOISE_MODELS:
        raise ValueError(f"noise={noise!r}: use one of {', '.join(NOISE_MODELS)}")
    if wrap not in WRAPS:
        raise ValueError(f"wrap={wrap!r}: use one of {', '.join(WRAPS)}")
    if torch.is_inference_mode_enabled() and fisher is None:
        raise RuntimeError("the Fisher needs autograd: call fisher_validation outside torch.inference_mode()")
    start = time.perf_counter()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = take_clips(calib, num_clips)
    was_training = model.training
    model.to(device).eval()
    if fisher is None:
        fisher = compute_fisher(model, batches, tasks=TASKS, device=device, amp=amp)
    fisher = fisher.detach().to("cpu", torch.float64)
    view = model.quant_view()
    channels = view.channels
    if tuple(fisher.shape) != (len(TASKS), len(view.blocks), channels):
        raise ValueError(f"fisher has shape {tuple(fisher.shape)}: expected [{len(TASKS)}, {len(view.blocks)}, "
                         f"{channels}] (tasks {', '.join(TASKS)} × blocks × channels)")
    if wrap == "flatquant":
        wrap_flatquant(model, spec, seed)
        view = model.quant_view()
    blocks = view.blocks
    bits = noise_bits if noise_bits is not None else (spec.a_bits if spec.quantizes_activations else spec.w_bits)
    quantize_one = flat_block if wrap == "flatquant" else (lambda ref, s: rtn_block(model, ref, s))
    autocast = use_amp(device, amp)

    n_blocks, n_tasks = len(blocks), len(TASKS)
    mse = torch.zeros(n_tasks, n_blocks, dtype=torch.float64)
    dh2 = torch.zeros(n_blocks, channels, dtype=torch.float64)
    positions = torch.zeros(n_blocks, dtype=torch.float64)
    absmax = torch.zeros(n_blocks, channels, dtype=torch.float64)
    clips = 0
    try:
        with torch.no_grad():
            for batch in batches:
                images = batch["images"].to(device)
                b = images.shape[0]
                with _Taps(view, range(n_blocks)) as taps, torch.autocast(device.type, dtype=torch.bfloat16,
                                                                          enabled=autocast):
                    reference = _task_tensors(view, model(images))
                fp_blocks = taps.outputs
                for i in range(n_blocks):
                    h = fp_blocks[i].reshape(-1, channels)
                    absmax[i] = torch.maximum(absmax[i], h.abs().amax(dim=0).double().cpu())
                for i, ref in enumerate(blocks):
                    with quantize_one(ref, spec), _Taps(view, [i]) as tap, torch.autocast(
                            device.type, dtype=torch.bfloat16, enabled=autocast):
                        outputs = _task_tensors(view, model(images))
                    for k, task in enumerate(TASKS):
                        err = (outputs[task] - reference[task]).square().reshape(b, -1).mean(dim=1)
                        mse[k, i] += err.double().sum().cpu()
                    delta = (tap.outputs[i] - fp_blocks[i]).reshape(-1, channels)
                    dh2[i] += delta.double().square().sum(dim=0).cpu()
                    positions[i] += delta.shape[0]
                    del outputs, tap
                del fp_blocks, taps, reference
                clips += b
    finally:
        model.train(was_training)
    mse /= clips
    noise_var = {"measured": dh2 / positions.clamp_min(1).unsqueeze(1),
                 "uniform": uniform_noise_variance(absmax, bits)}
    predicted = {name: predicted_loss(fisher, var) for name, var in noise_var.items()}
    measured = {t: [float(v) for v in mse[k]] for k, t in enumerate(TASKS)}

    def side(name: str, with_measured: bool) -> dict:
        pred = {t: [float(v) for v in predicted[name][k]] for k, t in enumerate(TASKS)}
        table = correlation_table(pred, measured)
        tasks = {t: {"predicted": pred[t], **({"measured": measured[t]} if with_measured else {}), **table[t]}
                 for t in TASKS}
        return {"noise": name, "tasks": tasks, "pooled": table["pooled"],
                "pooled_normalized": table["pooled_normalized"]}

    primary = side(noise, True)
    other = side(next(n for n in NOISE_MODELS if n != noise), False)
    return {
        "noise": noise,
        "noise_bits": bits,
        "wrap": wrap,
        "spec": spec.to_dict(),
        "clips": clips,
        "frames": int(batches[0]["images"].shape[1]),
        "resolution": list(batches[0]["images"].shape[-2:]),
        "precision": "bf16-autocast" if autocast else "fp32",
        "blocks": block_labels(view),
        "block_names": [ref.name for ref in blocks],
        "tasks": primary["tasks"],
        "pooled": primary["pooled"],
        "pooled_normalized": primary["pooled_normalized"],
        "alternative": other,
        "noise_var_mean": {name: [float(v) for v in var.mean(dim=1)] for name, var in noise_var.items()},
        "time_s": time.perf_counter() - start,
    }
