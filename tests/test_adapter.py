"""The quantization view: block order, running blocks one at a time reproduces the model, linears/norms."""

import torch
from helpers import fixture_images, fixture_pi3, fixture_vggt

from fgq.models.adapter import LINEAR_PATHS


def test_vggt_blocks_in_execution_order():
    view = fixture_vggt().quant_view()
    names = [b.name for b in view.blocks]
    assert names[:4] == ["aggregator.frame_blocks.0", "aggregator.global_blocks.0",
                         "aggregator.frame_blocks.1", "aggregator.global_blocks.1"]
    assert len(names) == 8 and [b.kind for b in view.blocks][:2] == ["frame", "global"]
    assert [b.index for b in view.blocks] == list(range(8))


def test_vggt_block_by_block_equals_aggregator():
    model = fixture_vggt()
    view = model.quant_view()
    images = fixture_images((2, 3, 3, 28, 42))
    with torch.no_grad():
        layers = model.aggregator(images)
        x, pos = view.embed(images)
        assert x.shape == (2, 3, 5 + 2 * 3, 64) and pos.shape == (2, 3, 11, 2)
        for ref in view.blocks:
            x = view.run_block(ref, x, pos)
            if ref.kind == "frame":
                frame_out = x
            else:
                j = ref.index // 2
                assert torch.equal(torch.cat((frame_out, x), dim=-1), layers[j])


def test_global_block_mixes_frames_and_frame_block_does_not():
    model = fixture_vggt()
    view = model.quant_view()
    x, pos = view.embed(fixture_images((1, 2, 3, 28, 28)))
    x2 = x.clone()
    x2[:, 1] += 1.0  # change frame 1 only
    frame, glob = view.blocks[0], view.blocks[1]
    with torch.no_grad():
        assert torch.equal(view.run_block(frame, x, pos)[:, 0], view.run_block(frame, x2, pos)[:, 0])
        assert not torch.allclose(view.run_block(glob, x, pos)[:, 0], view.run_block(glob, x2, pos)[:, 0])


def test_pi3_block_by_block_equals_forward():
    model = fixture_pi3()
    view = model.quant_view()
    assert [b.kind for b in view.blocks] == ["frame", "global", "frame", "global"]
    assert view.blocks[3].name == "decoder.3"
    images = fixture_images((1, 2, 3, 28, 28))
    captured = {}
    hook = model.decoder[3].register_forward_hook(lambda m, i, o: captured.setdefault("last", o))
    with torch.no_grad():
        model(images)
        x, pos = view.embed(images)
        for ref in view.blocks:
            x = view.run_block(ref, x, pos)
    hook.remove()
    assert torch.equal(x.reshape(captured["last"].shape), captured["last"])


def test_linears_and_norms_are_the_block_modules():
    for model in (fixture_vggt(), fixture_pi3()):
        view = model.quant_view()
        for ref in view.blocks:
            assert list(ref.linears) == list(LINEAR_PATHS)
            for short, path in LINEAR_PATHS.items():
                assert ref.linears[short] is ref.module.get_submodule(path)
            assert ref.norms["qkv"] is ref.module.norm1 and ref.norms["fc1"] is ref.module.norm2
        names = view.linear_names()
        assert len(names) == 4 * len(view.blocks)
        assert all(model.get_submodule(n) is lin for n, lin in names.items())


def test_view_gives_width_dtype_and_token_layout():
    for model in (fixture_vggt(), fixture_pi3()):
        view = model.quant_view()
        assert view.channels == view.blocks[0].module.norm1.normalized_shape[-1]
        owner = getattr(model, "aggregator", model)  # where each family keeps its token layout
        assert view.patch_start == owner.patch_start_idx == model.patch_start_idx > 0
        assert all(ref.param_dtype == torch.float32 for ref in view.blocks)
        model.to(torch.bfloat16)
        assert all(ref.param_dtype == torch.bfloat16 for ref in view.blocks)


def test_task_outputs():
    images = fixture_images((1, 2, 3, 28, 28))
    for model in (fixture_vggt(), fixture_pi3()):
        view = model.quant_view()
        with torch.no_grad():
            tasks = view.task_outputs(model(images))
        assert set(tasks) == {"camera", "depth", "points"}
        assert tasks["points"].shape == (1, 2, 28, 28, 3)
        assert tasks["depth"].shape == (1, 2, 28, 28, 1)
