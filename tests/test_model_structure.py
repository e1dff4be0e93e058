"""Full-size models have exactly the official keys and shapes (built on meta: nothing is allocated)."""

import pytest
import torch
from conftest import ROOT
from helpers import fixture_images
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fgq.models import VGGT, Pi3

OFFICIAL_PARAMS = {"vggt": 1_256_537_516, "pi3": 958_696_732}
TRACK_HEAD_PARAMS = 65_941_396


def read_tsv(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (ROOT / "tests" / "data" / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def model_cfg(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf" / "model"), version_base="1.3"):
        return compose(config_name=name)


def arch(cfg) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("_target_", "_convert_", "checkpoint",
                                                                               "init_seed")}


@pytest.mark.parametrize(("name", "cls", "tsv"), [("vggt", VGGT, "vggt_1b_state_dict.tsv"),
                                                  ("pi3", Pi3, "pi3_state_dict.tsv")])
def test_full_size_keys_and_shapes_match_official(name, cls, tsv):
    reference = read_tsv(tsv)
    with torch.device("meta"):
        model = cls(**arch(model_cfg(name)))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {k: v for k, v in reference.items() if not k.startswith("track_head.")}
    assert len(reference) == {"vggt": 1797, "pi3": 1210}[name]
    assert sorted(ours) == sorted(expected)
    assert ours == expected
    params = sum(p.numel() for p in model.parameters())
    skipped = TRACK_HEAD_PARAMS if name == "vggt" else 0
    assert params == OFFICIAL_PARAMS[name] - skipped
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("name", ["vggt_tiny", "pi3_tiny"])
def test_tiny_configs_instantiate_and_run(name):
    model = instantiate(model_cfg(name))
    images = fixture_images((1, 4, 3, 112, 112))
    with torch.no_grad():
        out = model(images)
    if name.startswith("vggt"):
        assert out["pose_enc"].shape == (1, 4, 9)
        assert out["depth"].shape == (1, 4, 112, 112, 1) and out["depth_conf"].shape == (1, 4, 112, 112)
        assert out["world_points"].shape == (1, 4, 112, 112, 3)
        assert len(out["pose_enc_list"]) == 4
        assert (out["depth"] > 0).all() and (out["depth_conf"] >= 1).all()
    else:
        assert out["points"].shape == (1, 4, 112, 112, 3) and out["conf"].shape == (1, 4, 112, 112, 1)
        assert out["camera_poses"].shape == (1, 4, 4, 4)
        assert (out["local_points"][..., 2] > 0).all()


def test_vggt_accepts_unbatched_and_non_square_inputs():
    model = instantiate(model_cfg("vggt_tiny"))
    images = fixture_images((3, 3, 70, 126))
    with torch.no_grad():
        out = model(images)
    assert out["depth"].shape == (1, 3, 70, 126, 1)


def test_pi3_decoder_narrower_than_encoder_does_not_crash():
    # The official constructor crashes when decoder width ≠ encoder width; ours projects.
    model = Pi3(img_size=112, encoder=dict(embed_dim=64, depth=1, num_heads=4),
                decoder=dict(embed_dim=48, depth=2, num_heads=4),
                heads=dict(embed_dim=32, depth=1, num_heads=4, out_dim=32, camera_out_dim=16)).eval()
    with torch.no_grad():
        out = model(fixture_images((1, 2, 3, 56, 56)))
    assert out["points"].shape == (1, 2, 56, 56, 3)
    assert "encoder_proj.weight" in model.state_dict()


def test_bad_architecture_knobs_fail_clearly():
    with pytest.raises(ValueError, match="intermediate_layer_idx"):
        VGGT(img_size=56, embed_dim=32, aggregator=dict(depth=2, num_heads=2, patch_embed=dict(depth=1, num_heads=2)),
             depth_head=dict(intermediate_layer_idx=[0, 1, 2, 5]))
    with pytest.raises(ValueError, match="even"):
        Pi3(encoder=dict(embed_dim=32, depth=1, num_heads=2), decoder=dict(embed_dim=32, depth=3, num_heads=2))
    with pytest.raises(ValueError, match="head_dim"):
        VGGT(embed_dim=36, aggregator=dict(depth=1, num_heads=6, patch_embed=dict(depth=1, num_heads=6)))
