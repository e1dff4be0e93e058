"""Activation statistics of a model's calibrated blocks: per block and linear input, the max and median of the
per-channel absmax over held-out synthetic clips (heavy tails = a large max/median ratio = hard to quantize); then
the shape of FGQ's Fisher loss weights per block (how far from FlatQuant's uniform weights they are).

    python experiments/activation_stats.py [model=vggt_tiny] [num_scenes=8] [calib_clips=8]
"""

from __future__ import annotations

import sys

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fgq import ROOT
from fgq.data.synthetic import SyntheticScenes
from fgq.fisher.compute import compute_fisher, fisher_to_weights
from fgq.models.adapter import LINEAR_PATHS


def channel_absmax(model: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per linear input of every calibrated block: the absmax of each input channel over all tokens."""
    view = model.quant_view()
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for ref in view.blocks:
        for short, layer in ref.linears.items():
            name = f"{ref.name}.{LINEAR_PATHS[short]}"

            def hook(_m, inputs, _o, name=name):
                amax = inputs[0].detach().abs().flatten(0, -2).amax(0)
                stats[name] = torch.maximum(stats[name], amax) if name in stats else amax

            hooks.append(layer.register_forward_hook(hook))
    with torch.no_grad():
        for clip in images:
            model(clip[None])
    for h in hooks:
        h.remove()
    return stats


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf" / "model"), version_base="1.3"):
        model = instantiate(compose(args.get("model", "vggt_tiny")))
    data = SyntheticScenes(split="eval", num_scenes=int(args.get("num_scenes", 8)))
    stats = channel_absmax(model, [data[i]["images"] for i in range(len(data))])
    print(f"{'linear input':44s} {'max':>8s} {'median':>8s} {'max/med':>8s}")
    for name, amax in stats.items():
        med = amax.median().item()
        print(f"{name:44s} {amax.max().item():8.2f} {med:8.3f} {amax.max().item() / med:8.1f}")
    fisher_weight_shape(model, stats, int(args.get("calib_clips", 8)))


def fisher_weight_shape(model: torch.nn.Module, stats: dict[str, torch.Tensor], clips: int) -> None:
    """Per block: FGQ's default channel weights (``fisher_to_weights``: mean 1 per block, floor 0.01), their
    coefficient of variation, the share of the total weight on the top 5 % of channels (5 % = uniform), the floored
    fraction, and Spearman's ρ between the weights and the block's input-channel absmax (the qkv input)."""
    calib = SyntheticScenes(split="calib", num_scenes=clips)
    weights = fisher_to_weights(compute_fisher(model, [{"images": calib[i]["images"][None]} for i in range(clips)]))
    top = max(1, round(0.05 * weights.shape[1]))
    print(f"\n{'block':32s} {'CV':>6s} {'top 5 %':>8s} {'floored':>8s} {'ρ(absmax)':>10s}")
    for ref, w in zip(model.quant_view().blocks, weights, strict=True):
        amax = stats[f"{ref.name}.attn.qkv"]
        rank = lambda t: t.argsort().argsort().float()  # noqa: E731 — Spearman = Pearson of ranks
        rho = torch.corrcoef(torch.stack([rank(w), rank(amax)]))[0, 1].item()
        share = w.sort(descending=True).values[:top].sum().item() / w.sum().item()
        floored = (w <= 0.01).float().mean().item()
        print(f"{ref.name:32s} {(w.std() / w.mean()).item():6.2f} {share:8.1%} {floored:8.1%} {rho:10.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
