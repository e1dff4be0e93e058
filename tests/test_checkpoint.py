"""Strict checkpoint loading: round trips and every kind of bad file gives one clear error."""

import logging

import pytest
import torch
from helpers import PI3_FIXTURE_ARCH, VGGT_FIXTURE_ARCH, fixture_images, fixture_pi3, fixture_vggt
from safetensors.torch import save_file

from fgq.models import CheckpointError, load_checkpoint
from fgq.models.factory import pi3, vggt


def _outputs_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


@pytest.mark.parametrize("fmt", ["pt", "pt_nested", "safetensors"])
def test_vggt_round_trip_is_bit_exact(tmp_path, fmt):
    model = fixture_vggt()
    state = model.state_dict()
    path = tmp_path / ("model.safetensors" if fmt == "safetensors" else "model.pt")
    if fmt == "safetensors":
        save_file(state, path)
    else:
        torch.save({"model": state} if fmt == "pt_nested" else state, path)
    loaded = vggt(checkpoint=str(path), **VGGT_FIXTURE_ARCH)
    assert all(not p.is_meta for p in loaded.parameters())
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    images = fixture_images((1, 2, 3, 28, 28))
    with torch.no_grad():
        assert _outputs_equal(model(images), loaded(images))


def test_pi3_round_trip_is_bit_exact(tmp_path):
    model = fixture_pi3()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), path)
    loaded = pi3(checkpoint=str(path), **PI3_FIXTURE_ARCH)
    images = fixture_images((1, 2, 3, 28, 28))
    with torch.no_grad():
        assert _outputs_equal(model(images), loaded(images))
    assert torch.equal(loaded.image_std, model.image_std)


def test_track_head_keys_are_skipped_with_one_log_line(tmp_path, caplog):
    state = fixture_vggt().state_dict()
    state["track_head.tracker.query_ref_token"] = torch.zeros(1, 2, 388)
    state["track_head.feature_extractor.norm.weight"] = torch.ones(128)
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with caplog.at_level(logging.INFO, logger="fgq.models.checkpoint"):
        vggt(checkpoint=str(path), **VGGT_FIXTURE_ARCH)
    lines = [r.getMessage() for r in caplog.records if "track_head" in r.getMessage()]
    assert len(lines) == 1 and "skipped 2 keys" in lines[0]


def _write(tmp_path, state, name="bad.pt"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_missing_key(tmp_path):
    state = fixture_vggt().state_dict()
    del state["camera_head.embed_pose.weight"]
    with pytest.raises(CheckpointError, match=r"missing 1 \(camera_head.embed_pose.weight\)"):
        load_checkpoint(fixture_vggt(), _write(tmp_path, state))


def test_unexpected_key(tmp_path):
    state = fixture_vggt().state_dict()
    state["aggregator.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected 1 \(aggregator.extra.weight\)"):
        load_checkpoint(fixture_vggt(), _write(tmp_path, state))


def test_wrong_shape_names_key_and_file(tmp_path):
    state = fixture_vggt().state_dict()
    state["aggregator.camera_token"] = torch.zeros(1, 2, 1, 32)
    path = _write(tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(fixture_vggt(), path)
    message = str(err.value)
    assert str(path) in message and "wrong shape 1 (aggregator.camera_token" in message
    assert "\n" not in message


def test_full_size_checkpoint_into_tiny_config_lists_counts(tmp_path):
    state = fixture_pi3().state_dict()
    with pytest.raises(CheckpointError, match=r"missing \d+ .*unexpected|wrong shape"):
        load_checkpoint(fixture_vggt(), _write(tmp_path, state))


def test_failed_load_leaves_model_untouched(tmp_path):
    model = fixture_vggt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: torch.zeros_like(v) for k, v in before.items()}
    del state["aggregator.camera_token"]
    with pytest.raises(CheckpointError):
        load_checkpoint(model, _write(tmp_path, state))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_truncated_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(fixture_vggt().state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{path}: not a readable checkpoint"):
        load_checkpoint(fixture_vggt(), path)


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_random_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(fixture_vggt(), path)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(fixture_pi3().state_dict(), path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(fixture_pi3(), path)


class Opaque:
    """An arbitrary class: unpickling it would run code, so weights_only loading must refuse it."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": fixture_vggt().state_dict(), "extra": Opaque()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as caught:
        load_checkpoint(fixture_vggt(), path)
    # the message never passes on torch's advice to load with weights_only=False (that would run the file's code)
    assert "weights_only" not in str(caught.value) and "pickled Python objects" in str(caught.value)


def test_not_a_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_checkpoint(fixture_vggt(), _write(tmp_path, [torch.zeros(2)]))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(fixture_vggt(), tmp_path / "absent.pt")
