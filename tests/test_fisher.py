"""The activation Fisher: one-pass result == brute force per block, task order and shape, batching, the
empirical (random projection) estimator, Fisher → weights by hand, the knobs, the config, and the cache."""

import itertools

import pytest
import torch
from conftest import ROOT
from helpers import composed, fixture_images, fixture_pi3, fixture_vggt
from omegaconf import OmegaConf

import fgq.fisher.cache as fisher_cache_mod
import fgq.fisher.compute as fisher_mod
from fgq.fisher.cache import FisherCache
from fgq.fisher.compute import (
    TASKS,
    FisherConfig,
    compute_fisher,
    fisher_sums,
    fisher_to_weights,
    take_clips,
)

pytestmark = pytest.mark.usefixtures("one_thread")


SHAPE = (1, 2, 3, 28, 28)  # one clip of 2 frames, 2×2 patches → 9 tokens per frame
CLIPS = [fixture_images(SHAPE, seed=k) for k in range(2)]


def _model(family: str):
    return fixture_vggt() if family == "vggt" else fixture_pi3()


def _brute_force(model, clips, tasks=TASKS) -> torch.Tensor:
    """The official way, one block at a time: parameters keep requires_grad, a fresh forward per clip, task and
    block, ``retain_grad`` on that block's output, ``backward`` of the summed task output, square, sum."""
    view = model.quant_view()
    out = torch.zeros(len(tasks), len(view.blocks), view.channels)
    for k, task in enumerate(tasks):
        for ref in view.blocks:
            for images in clips:
                kept = {}

                def hook(_module, _args, output, kept=kept):
                    output.retain_grad()
                    kept["h"] = output

                handle = ref.module.register_forward_hook(hook)
                try:
                    model.zero_grad(set_to_none=True)
                    view.task_outputs(model(images))[task].sum().backward()
                finally:
                    handle.remove()
                out[k, ref.index] += kept["h"].grad.square().reshape(-1, out.shape[-1]).sum(dim=0)
    return out / len(clips)


@pytest.mark.parametrize("family", ["vggt", "pi3"])
def test_one_pass_equals_brute_force_per_block(family):
    model = _model(family)
    batched = [{"images": torch.cat(CLIPS)}]  # both clips in one batch of 2: same result as two batches of 1
    fisher = compute_fisher(model, batched)
    view = model.quant_view()
    assert fisher.shape == (3, len(view.blocks), 64) and fisher.dtype == torch.float32
    assert (fisher > 0).all()  # every task reaches every block and channel
    reference = _brute_force(model, CLIPS)
    torch.testing.assert_close(fisher, reference, rtol=2e-5, atol=0)
    # per clip: two batches of one clip give the same average. fp32 sums in another order differ by ~1e-5 relative
    # (seen: 1.1e-5 on π3); a wrong average (e.g. a sum over batches) is off by a factor, far outside 3e-5.
    torch.testing.assert_close(compute_fisher(model, [{"images": c} for c in CLIPS]), fisher, rtol=3e-5, atol=0)


def test_task_order_subset_and_state_restored():
    model = fixture_vggt()
    model.train()
    model.aggregator.camera_token.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    calib = [{"images": c} for c in CLIPS]
    full = compute_fisher(model, calib)
    sub = compute_fisher(model, calib, tasks=("points", "camera"))
    assert sub.shape == (2, 8, 64)
    torch.testing.assert_close(sub, full[[2, 0]], rtol=1e-6, atol=0)
    assert not torch.allclose(full[0] / full[0].mean(), full[1] / full[1].mean())  # tasks differ
    assert model.training  # mode restored (the pass itself runs in eval mode)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before  # flags restored
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients were taken
    first = compute_fisher(model, calib, num_clips=1)
    torch.testing.assert_close(first, compute_fisher(model, calib[:1]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="tasks"):
        compute_fisher(model, calib, tasks=("normals",))


def test_take_clips_cuts_batches():
    calib = [{"images": torch.zeros(3, 2, 3, 14, 14), "meta": [{"i": 0}, {"i": 1}, {"i": 2}]},
             {"images": torch.zeros(3, 2, 3, 14, 14), "meta": [{"i": 3}, {"i": 4}, {"i": 5}]}]
    taken = take_clips(calib, 4)
    assert [b["images"].shape[0] for b in taken] == [3, 1] and taken[1]["meta"] == [{"i": 3}]
    assert len(take_clips(calib)) == 2
    with pytest.raises(ValueError, match="empty"):
        take_clips([])


# ---------------------------------------------------------------------------------------------------------------
# estimators on a linear map, where every quantity is known in closed form


def _linear_toy(n=5, c=4, o=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(c, o, generator=g, dtype=torch.float64)
    h = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    return h, a


def test_summed_output_on_linear_map():
    h, a = _linear_toy()
    y = h @ a  # ∂(Σ y)/∂h[n, c] = Σ_o a[c, o] for every row n
    got = fisher_sums([y], [h], "summed_output")
    torch.testing.assert_close(got[0, 0].double(), 5 * a.sum(dim=1) ** 2, rtol=1e-6, atol=0)


def test_empirical_estimator_is_unbiased(monkeypatch):
    h, a = _linear_toy(n=1, c=4, o=3)
    exact = (a**2).sum(dim=1)  # diag(Jᵀ J) per channel
    # exact expectation: averaging over all 2^3 sign vectors gives diag(Jᵀ J) exactly
    signs = iter(torch.tensor(v, dtype=torch.float32).view(1, 3) for v in itertools.product((-1, 1), repeat=3))
    monkeypatch.setattr(fisher_mod, "_rademacher", lambda shape, generator, device: next(signs).to(device))
    enumerated = fisher_sums([h @ a], [h], "empirical", num_projections=8)
    torch.testing.assert_close(enumerated[0, 0].double(), exact, rtol=1e-6, atol=0)
    monkeypatch.undo()
    # random draws: the sample mean converges to the same value
    h, a = _linear_toy(n=20, c=4, o=3, seed=1)
    sampled = fisher_sums([h @ a], [h], "empirical", num_projections=400, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sampled[0, 0].double(), 20 * (a**2).sum(dim=1), rtol=0.05, atol=0)
    summed = fisher_sums([h @ a], [h], "summed_output")
    assert not torch.allclose(summed, sampled, rtol=0.2)  # a different quantity: cross-output terms


def test_empirical_on_model_is_seeded():
    model = fixture_vggt()
    calib = [{"images": CLIPS[0]}]
    one = compute_fisher(model, calib, estimator="empirical", num_projections=2, seed=3)
    assert torch.equal(one, compute_fisher(model, calib, estimator="empirical", num_projections=2, seed=3))
    assert not torch.equal(one, compute_fisher(model, calib, estimator="empirical", num_projections=2, seed=4))
    assert (one > 0).all() and one.shape == (3, 8, 64)


# ---------------------------------------------------------------------------------------------------------------
# Fisher → weights


# F[task 0] = [[1, 3], [2, 2]]   global mean 2 → F̃₀ = [[0.5, 1.5], [1, 1]]
# F[task 1] = [[4, 0], [0, 12]]  global mean 4 → F̃₁ = [[1, 0], [0, 3]]
FISHER = torch.tensor([[[1.0, 3.0], [2.0, 2.0]], [[4.0, 0.0], [0.0, 12.0]]])


def test_weights_hand_example():
    # ŵ = F̃₀ + F̃₁ = [[1.5, 1.5], [1, 4]]; block means 1.5 and 2.5 → [[1, 1], [0.4, 1.6]]
    w = fisher_to_weights(FISHER)
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.0], [0.4, 1.6]]))
    assert w.shape == (2, 2) and w.dtype == torch.float32
    # floor 0.5 (after the rescale, no renormalisation): 0.4 → 0.5
    torch.testing.assert_close(fisher_to_weights(FISHER, floor=0.5), torch.tensor([[1.0, 1.0], [0.5, 1.6]]))
    # task weights (2, 1): ŵ = [[2, 3], [2, 5]] → /2.5, /3.5 → [[0.8, 1.2], [4/7, 10/7]]
    torch.testing.assert_close(fisher_to_weights(FISHER, task_weights=[2.0, 1.0]),
                               torch.tensor([[0.8, 1.2], [4 / 7, 10 / 7]]))
    # task subset {0} (weight 0 drops task 1): ŵ = F̃₀ → [[0.5, 1.5], [1, 1]]
    torch.testing.assert_close(fisher_to_weights(FISHER, task_weights=[1.0, 0.0]),
                               torch.tensor([[0.5, 1.5], [1.0, 1.0]]))
    # task subset {1}: ŵ = [[1, 0], [0, 3]] → [[2, 0], [0, 2]] → the floor lifts the zeros to 0.01
    torch.testing.assert_close(fisher_to_weights(FISHER, task_weights=[0.0, 1.0]),
                               torch.tensor([[2.0, 0.01], [0.01, 2.0]]))
    # normalize=False: ŵ = F₀ + F₁ = [[5, 3], [2, 14]] → /4, /8 → [[1.25, 0.75], [0.25, 1.75]]
    torch.testing.assert_close(fisher_to_weights(FISHER, normalize=False),
                               torch.tensor([[1.25, 0.75], [0.25, 1.75]]))
    # block: block means of ŵ 1.5, 2.5 → over their mean 2 → 0.75, 1.25, broadcast over channels
    torch.testing.assert_close(fisher_to_weights(FISHER, granularity="block"),
                               torch.tensor([[0.75, 0.75], [1.25, 1.25]]))
    # none: all ones
    assert torch.equal(fisher_to_weights(FISHER, granularity="none"), torch.ones(2, 2))


def test_weights_properties():
    g = torch.Generator().manual_seed(0)
    fisher = torch.rand(3, 6, 16, generator=g) ** 4
    w = fisher_to_weights(fisher, floor=0.0)
    torch.testing.assert_close(w.mean(dim=1), torch.ones(6))  # channel-mean 1 per block
    # per-task normalisation: a constant factor on one task changes nothing
    scaled = fisher * torch.tensor([1e6, 1.0, 1e-3]).view(3, 1, 1)
    torch.testing.assert_close(fisher_to_weights(scaled), fisher_to_weights(fisher))
    assert (fisher_to_weights(fisher, floor=0.2) >= 0.2).all()
    # a uniform Fisher gives weights of exactly 1 (the neutral case)
    assert torch.equal(fisher_to_weights(torch.full((3, 4, 8), 7.0)), torch.ones(4, 8))
    with pytest.raises(ValueError, match="granularity"):
        fisher_to_weights(fisher, granularity="token")
    with pytest.raises(ValueError, match="task_weights"):
        fisher_to_weights(fisher, task_weights=[1.0, 1.0])


def test_config_knobs_and_yaml():
    config = FisherConfig(tasks=["points", "depth"], task_weights={"depth": 2})
    assert config.tasks == ("depth", "points")  # canonical order
    assert config.task_weight_vector() == [0.0, 2.0, 1.0]
    assert FisherConfig(tasks=["points", "depth"], task_weights=[3, 1]).task_weight_vector() == [0.0, 1.0, 3.0]
    assert FisherConfig().task_weight_vector() == [1.0, 1.0, 1.0]
    for bad in ({"tasks": []}, {"tasks": ["normals"]}, {"tasks": ["depth", "depth"]}, {"granularity": "x"},
                {"estimator": "x"}, {"floor": -1.0}, {"num_projections": 0}, {"num_clips": 0},
                {"task_weights": {"camera": 1.0}, "tasks": ["depth"]}, {"task_weights": [1.0]},
                {"task_weights": [0.0, 0.0, 0.0]}):
        with pytest.raises(ValueError):
            FisherConfig(**bad)
    for name in ("default", "none", "block", "empirical", "paper"):
        assert isinstance(composed("fisher", name), FisherConfig)
    node = OmegaConf.to_container(OmegaConf.load(ROOT / "fgq" / "conf" / "fisher" / "default.yaml"))
    assert node.pop("defaults") == ["fisher_schema", "_self_"]
    assert node.pop("cache_dir") == "${paths.cache_dir}/fisher"
    assert node.pop("seed") == "${fgq_seed:}"
    assert FisherConfig(**node) == FisherConfig()


# ---------------------------------------------------------------------------------------------------------------
# cache


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    calls = []
    real = fisher_mod.compute_fisher

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fisher_cache_mod, "compute_fisher", counting)
    cache = FisherCache(tmp_path / "fisher")
    model = fixture_vggt()
    calib = [{"images": c, "meta": [{"sequence": f"s{k}"}]} for k, c in enumerate(CLIPS)]

    first, hit = cache.get_or_compute(model, calib)
    assert not hit and len(calls) == 1
    again, hit = cache.get_or_compute(model, calib)
    assert hit and len(calls) == 1 and torch.equal(first, again)
    files = list((tmp_path / "fisher").iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"  # no temporary file left behind

    def misses(**changes):
        before = len(calls)
        _, hit = cache.get_or_compute(changes.pop("model", model), changes.pop("calib", calib), **changes)
        return not hit and len(calls) == before + 1

    with torch.no_grad():
        changed = fixture_vggt()
        changed.aggregator.global_blocks[1].mlp.fc2.weight[0, 0] += 1e-3  # one weight
    assert misses(model=changed)
    pixel = [dict(b) for b in calib]
    pixel[1]["images"] = pixel[1]["images"].clone()
    pixel[1]["images"][0, 1, 2, 5, 5] += 1e-3  # one pixel of one image
    assert misses(calib=pixel)
    renamed = [dict(b) for b in calib]
    renamed[0]["meta"] = [{"sequence": "other"}]  # same pixels, another clip identity
    assert misses(calib=renamed)
    assert misses(tasks=("camera",))
    assert misses(estimator="empirical", num_projections=1)
    assert misses(num_clips=1)
    assert cache.get_or_compute(model, calib, estimator="empirical", num_projections=1)[1]
    # a corrupt file is recomputed (and rewritten), not trusted
    files[0].write_bytes(b"not a safetensors file")
    recomputed, hit = cache.get_or_compute(model, calib)
    assert not hit and torch.equal(recomputed, first)
    assert cache.get_or_compute(model, calib)[1]


def test_figures(tmp_path):
    from fgq.fisher.plots import block_labels, save_fisher_figures

    assert block_labels(fixture_vggt().quant_view())[:3] == ["F0", "G0", "F1"]
    assert block_labels(fixture_pi3().quant_view()) == ["D0", "D1", "D2", "D3"]
    fisher = torch.rand(3, 8, 16, generator=torch.Generator().manual_seed(0))
    paths = save_fisher_figures(fisher, tmp_path, weights=fisher_to_weights(fisher))
    assert [p.name for p in paths] == ["fisher_blocks.png", "fisher_channels.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
