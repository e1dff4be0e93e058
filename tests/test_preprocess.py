"""The official preprocessing sizes and fills."""

import numpy as np
import pytest
import torch
from PIL import Image

from fgq.models.preprocess import eval_resize, floor_to_patch_multiple, load_and_preprocess_images


def image(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = 4 if mode == "RGBA" else 3
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(arr, mode)


def test_crop_mode_sizes():
    out = load_and_preprocess_images([image(640, 480)])
    assert out.shape == (1, 3, 392, 518)  # round(480·518/640/14)·14 = 392
    assert out.min() >= 0 and out.max() <= 1
    tall = load_and_preprocess_images([image(300, 700)])
    assert tall.shape == (1, 3, 518, 518)  # centre-cropped height


def test_pad_mode_pads_with_white_to_square():
    out = load_and_preprocess_images([image(300, 700)], mode="pad")
    assert out.shape == (1, 3, 518, 518)
    new_w = round(300 * 518 / 700 / 14) * 14
    left = (518 - new_w) // 2
    assert (out[0, :, :, :left] == 1).all() and (out[0, :, :, left + new_w :] == 1).all()


def test_mixed_sizes_are_padded_to_largest():
    out = load_and_preprocess_images([image(640, 480), image(518, 518)])
    assert out.shape == (2, 3, 518, 518)
    assert (out[0, :, :63] == 1).all()  # (518 − 392) / 2 rows of white above the first image


def test_rgba_is_composited_on_white():
    arr = np.zeros((28, 28, 4), dtype=np.uint8)  # fully transparent black
    out = load_and_preprocess_images([Image.fromarray(arr, "RGBA")], target=28)
    assert torch.allclose(out, torch.ones_like(out))


def test_eval_resize_512_to_504():
    assert eval_resize(image(640, 360), width=512).shape == (3, 294, 504)
    assert eval_resize(image(480, 640), width=512).shape == (3, 504, 504)
    assert eval_resize(image(1242, 375), width=512, resample="lanczos").shape == (3, 154, 504)


def test_floor_is_noop_on_multiples():
    t = torch.rand(2, 3, 28, 42)
    assert floor_to_patch_multiple(t) is t


def test_bad_inputs(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"x.png: cannot be read"):
        load_and_preprocess_images([bad])
    with pytest.raises(ValueError, match="mode"):
        load_and_preprocess_images([image(28, 28)], mode="stretch")
