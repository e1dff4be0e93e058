"""Co3Dv2: the relative-pose loader (PyTorch3D → OpenCV cameras, NDC intrinsics, seq-id map), FGQ's calibration
sampler (seeded, train split only) and an end-to-end run of ``dataset=co3d`` on the tiny fixture."""

import gzip
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from fgq.data.co3d import (
    SEEN_CATEGORIES,
    UNSEEN_CATEGORIES,
    Co3DPose,
    eval_resize_intrinsics,
    resolve_categories,
)
from fgq.data.co3d_calib import Co3DCalibClips
from fgq.data.files import DataError, read_gzip_json, write_gzip_json
from fgq.data.fixtures import co3d as fixture
from fgq.models.preprocess import eval_resize

CATS = ["apple", "ball"]
TEST_SEQS = {"106_12648_23157", "110_13051_23361", "123_14363_28981"}  # ≥ 50 annotated test frames
TRAIN_SEQS = {"189_20393_38136", "113_13350_35633"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = fixture.write(tmp_path_factory.mktemp("co3d"))
    return root / fixture.RAW, root / fixture.ANNOTATIONS


def pose(data, tmp_path, **kw):
    raw, anno = data
    kw.setdefault("seq_id_map", tmp_path / "map.json")
    return Co3DPose(root=raw, annotations=anno, categories=kw.pop("categories", CATS), **kw)


def truth_of(clip):
    return fixture.render()[clip["meta"]["category"], clip["meta"]["sequence"]]


def test_round_trip_native_size(data, tmp_path):
    """At the image's own width eval_resize is the identity: images (JPEG-quantised), w2c and K are the truth."""
    ds = pose(data, tmp_path, categories=["apple"], width=56)
    assert ds.sequences == ["106_12648_23157", "110_13051_23361"]
    for clip in (ds[0], ds[1]):
        truth = truth_of(clip)
        numbers = [truth.annotated[i] for i in clip["meta"]["frames"]]  # annotation index → frame number
        assert clip["meta"]["files"] == [fixture.frame_path("apple", clip["meta"]["sequence"], n) for n in numbers]
        assert clip["images"].shape == (10, 3, 42, 56)
        expected = torch.from_numpy(truth.images[numbers]).permute(0, 3, 1, 2).float()
        assert (clip["images"] - expected).abs().mean() < 0.02
        torch.testing.assert_close(clip["extrinsics"], torch.from_numpy(truth.extrinsics[numbers]).float(),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(clip["intrinsics"], torch.from_numpy(truth.intrinsics[numbers]).float(),
                                   atol=1e-4, rtol=0)
        assert clip["meta"]["category"] == "apple" and clip["meta"]["dataset"] == "co3d"


def test_portrait_is_centre_cropped_and_intrinsics_follow(data, tmp_path):
    """42 × 56 portrait at width 42: height 56 > 42 is centre-cropped (rows 7..48); cy moves up by 7."""
    clip = pose(data, tmp_path, categories=["ball"], width=42)[0]
    truth = truth_of(clip)
    numbers = [truth.annotated[i] for i in clip["meta"]["frames"]]
    assert clip["images"].shape == (10, 3, 42, 42)
    expected = torch.from_numpy(truth.images[numbers][:, 7:49]).permute(0, 3, 1, 2).float()
    assert (clip["images"] - expected).abs().mean() < 0.02
    k = truth.intrinsics[numbers].copy()
    k[:, 1, 2] -= 7
    torch.testing.assert_close(clip["intrinsics"], torch.from_numpy(k).float(), atol=1e-4, rtol=0)


def test_pytorch3d_to_opencv_against_pytorch3d_projection(data, tmp_path):
    """Project world points with PyTorch3D's own conventions (row vectors, +X left / +Y up, isotropic NDC → screen)
    and with the loader's OpenCV w2c and K: same pixels, same depth."""
    anno = data[1]
    clip = pose(data, tmp_path, categories=["apple"], width=56)[0]
    frames = read_gzip_json(anno / "apple_test.jgz")[clip["meta"]["sequence"]]
    width, height = fixture.SIZES["apple"]
    rng = np.random.default_rng(0)
    for j, i in enumerate(clip["meta"]["frames"]):
        f = frames[i]
        r, t = np.array(f["R"]), np.array(f["T"])
        centre = -r @ t  # camera centre: X_cam = X·R + T = 0
        points = centre + rng.normal(size=(5, 3)) * 0.2 + 2.0 * r[:, 2]  # ahead of the camera (+Z)
        cam = points @ r + t
        s = min(width, height) / 2
        ndc = np.array(f["focal_length"]) * cam[:, :2] / cam[:, 2:] + np.array(f["principal_point"])
        screen = np.stack((width / 2 - ndc[:, 0] * s, height / 2 - ndc[:, 1] * s), axis=1)
        e, k = clip["extrinsics"][j].double().numpy(), clip["intrinsics"][j].double().numpy()
        cv = points @ e[:, :3].T + e[:, 3]
        pixels = (cv @ k.T)[:, :2] / cv[:, 2:]
        np.testing.assert_allclose(cv[:, 2], cam[:, 2], rtol=1e-5)
        np.testing.assert_allclose(pixels, screen, atol=1e-3)


@pytest.mark.parametrize("size,width", [((100, 75), 56), ((100, 75), 60), ((60, 100), 56)])
def test_eval_resize_intrinsics_track_image_content(tmp_path, size, width):
    """A smooth blob at a known sub-pixel spot lands where the resized K maps it (resize, crop, floor-to-14)."""
    w0, h0 = size
    u0, v0 = 0.43 * w0 + 0.3, 0.52 * h0 - 0.2
    v, u = np.mgrid[0:h0, 0:w0].astype(np.float64)
    blob = np.exp(-((u - u0) ** 2 + (v - v0) ** 2) / (2 * 6.0**2))
    image = Image.fromarray(np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=2))
    out = eval_resize(image, width=width)[0].double().numpy()
    k = np.array([[80.0, 0, w0 / 2], [0, 80.0, h0 / 2], [0, 0, 1]])
    k2 = eval_resize_intrinsics(k, (w0, h0), out.shape, width)
    # pixel → normalised camera ray with K, back to pixels with K'
    expected = (k2[0, 0] * (u0 - k[0, 2]) / k[0, 0] + k2[0, 2], k2[1, 1] * (v0 - k[1, 2]) / k[1, 1] + k2[1, 2])
    vv, uu = np.mgrid[0:out.shape[0], 0:out.shape[1]]
    weights = np.clip(out - 0.05, 0, None)
    centroid = ((weights * uu).sum() / weights.sum(), (weights * vv).sum() / weights.sum())
    np.testing.assert_allclose(centroid, expected, atol=0.1)


def test_seq_id_map_official_construction_written_once_and_reused(data, tmp_path, caplog):
    path = tmp_path / "map.json"
    ds = pose(data, tmp_path)
    mapping = json.loads(path.read_text())
    # One np.random.seed(42) stream, sequences of the categories in the given order, annotation order within each.
    _, anno = data
    state = np.random.RandomState(42)
    expected = {}
    for category in CATS:
        for name, frames in read_gzip_json(anno / f"{category}_test.jgz").items():
            if len(frames) >= 50:
                expected[name] = [int(i) for i in state.choice(len(frames), 10, replace=False)]
    assert mapping == expected and list(mapping) == ds.sequences
    assert Co3DPose(root=data[0], annotations=data[1], categories=CATS, seq_id_map=tmp_path / "again.json").map \
        == expected
    custom = {name: list(range(10)) for name in list(expected)[:2]}
    path.write_text(json.dumps(custom))
    with caplog.at_level(logging.WARNING):
        reused = pose(data, tmp_path)
    assert reused.map == custom and reused[0]["meta"]["frames"] == list(range(10))
    assert "1 sequences are not in the seq-id map" in caplog.text
    path.write_text(json.dumps({name: list(range(5)) for name in expected}))
    with pytest.raises(DataError, match="has 5 frame ids, not num_frames=10"):
        pose(data, tmp_path)


def test_official_category_order():
    assert resolve_categories("all") == list(SEEN_CATEGORIES + UNSEEN_CATEGORIES)  # seen first: not sorted
    assert len(resolve_categories("all")) == 51 and len(resolve_categories("seen")) == 41
    with pytest.raises(ValueError, match="categories='unseen'"):
        resolve_categories("unseen")


def test_skips_are_logged(data, tmp_path, caplog):
    raw, anno = data
    copy = tmp_path / "data"
    shutil.copytree(raw, copy / "raw")
    shutil.copytree(anno, copy / "anno")
    shutil.rmtree(copy / "raw" / "apple" / "110_13051_23361")  # annotated but not on disk
    frames = read_gzip_json(copy / "anno" / "ball_test.jgz")
    frames["123_14363_28981"][3]["T"] = [1e5, 1.0, 1.0]  # the reference's "ridiculous translation"
    write_gzip_json(copy / "anno" / "ball_test.jgz", frames)
    map_path = tmp_path / "map.json"
    map_path.write_text(json.dumps({"999_1_2": list(range(10))}))
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match="no sequence to evaluate"):
        Co3DPose(root=copy / "raw", annotations=copy / "anno", categories=CATS, seq_id_map=map_path)
    assert "1 of 1 sequences of the seq-id map" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds = Co3DPose(root=copy / "raw", annotations=copy / "anno", categories=CATS)
    assert ds.sequences == ["106_12648_23157"]
    assert "1 sequences have fewer than 50 annotated frames" in caplog.text and "12_104_640" in caplog.text
    assert "1 sequences have a frame with T[0]+T[1]+T[2] > 100000" in caplog.text
    assert "1 of 2 sequences in the seq-id map None are not on disk" in caplog.text


def test_bad_data_errors(data, tmp_path):
    raw, anno = data
    with pytest.raises(DataError, match=r"dataset\.co3d\.root"):
        Co3DPose(root=tmp_path / "missing", annotations=anno)
    with pytest.raises(DataError, match=r"dataset\.co3d\.annotations"):
        Co3DPose(root=raw, annotations=tmp_path / "missing")
    with pytest.raises(DataError, match=r"backpack_test\.jgz: not found"):
        Co3DPose(root=raw, annotations=anno, categories="seen")
    bad = tmp_path / "anno"
    shutil.copytree(anno, bad)
    (bad / "apple_test.jgz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"apple_test\.jgz: not a gzip JSON"):
        Co3DPose(root=raw, annotations=bad, categories=CATS)
    with gzip.open(bad / "apple_test.jgz", "wt") as f:
        json.dump({"106_12648_23157": [{"filepath": "x.jpg"}] * 60}, f)
    with pytest.raises(DataError, match=r"apple_test.jgz: a frame of sequence '106_12648_23157' lacks \['R'"):
        Co3DPose(root=raw, annotations=bad, categories=CATS)
    copy = tmp_path / "raw"
    shutil.copytree(raw / "apple", copy / "apple")
    ds = Co3DPose(root=copy, annotations=anno, categories=["apple"], width=56)
    name = ds[0]["meta"]["files"][0]
    (copy / name).unlink()
    with pytest.raises(DataError, match=f"{name}: file not found"):
        ds[0]


def test_calibration_sampler_seeded_train_only_and_disjoint(data, tmp_path):
    raw, anno = data
    clips = Co3DCalibClips(root=raw, num_clips=12, frames=4, size=28, exclude_annotations=anno)
    assert clips.clips == Co3DCalibClips(root=raw, num_clips=12, frames=4, size=28, exclude_annotations=anno).clips
    assert clips.clips != Co3DCalibClips(root=raw, num_clips=12, frames=4, size=28, seed=1,
                                         exclude_annotations=anno).clips
    assert set(clips.sequences) == TRAIN_SEQS
    assert not set(clips.sequences) & set(pose(data, tmp_path).sequences)
    # The same algorithm written out: sorted categories, sorted non-excluded folders (set_lists/ is one, without
    # images: a wasted draw as in the official code), sorted images, rng.sample.
    rng, expected = random.Random(42), []
    while len(expected) < 12:
        category = rng.choice(sorted(CATS))
        folder = rng.choice(sorted(p.name for p in (raw / category).iterdir() if p.name not in TEST_SEQS | {
            "12_104_640"}))
        images = raw / category / folder / "images"
        if images.is_dir():
            expected.append((category, folder, rng.sample(sorted(p.name for p in images.iterdir()), 4)))
    assert clips.clips == expected
    # A prefix property the Fisher pass (32 clips) and calibration (64) rely on.
    assert Co3DCalibClips(root=raw, num_clips=5, frames=4, size=28, exclude_annotations=anno).clips == expected[:5]
    clip = clips[0]
    assert clip["images"].shape == (4, 3, 28, 28) and set(clip) == {"images", "meta"}
    assert clip["meta"]["frames"] == expected[0][2] and clip["meta"]["sequence"] == expected[0][1]
    everything = Co3DCalibClips(root=raw, num_clips=40, frames=4, size=28)  # without the exclusion
    assert set(everything.sequences) & TEST_SEQS


def test_calibration_resize_modes_and_errors(data, tmp_path, caplog):
    raw, anno = data
    square = Co3DCalibClips(root=raw, num_clips=1, frames=2, size=518, exclude_annotations=anno)
    image = Image.open(raw / square.clips[0][0] / square.clips[0][1] / "images" / square.clips[0][2][0])
    expected = np.asarray(image.convert("RGB").resize((518, 518), Image.Resampling.BILINEAR), dtype=np.float32)
    torch.testing.assert_close(square[0]["images"][0], torch.from_numpy(expected / 255).permute(2, 0, 1))
    aspect = Co3DCalibClips(root=raw, num_clips=12, frames=2, size=112, resize="aspect", exclude_annotations=anno)
    shapes = {c[0]: aspect[i]["images"].shape[-2:] for i, c in enumerate(aspect.clips)}
    assert shapes == {"apple": (84, 112), "ball": (112, 112)}
    with pytest.raises(DataError, match=r"calib\.sources\.co3d\.root"):
        Co3DCalibClips(root=tmp_path / "missing")
    partial = tmp_path / "anno"
    partial.mkdir()
    shutil.copy(anno / "apple_test.jgz", partial)
    with pytest.raises(DataError, match=r"ball_test\.jgz: missing"):
        Co3DCalibClips(root=raw, num_clips=8, frames=2, size=28, exclude_annotations=partial)
    with caplog.at_level(logging.WARNING):
        few = Co3DCalibClips(root=raw, num_clips=20, frames=55, size=28)  # only the 56-frame sequence qualifies
    assert 0 < len(few) < 20 and few.sequences == ["106_12648_23157"]
    assert f"only {len(few)} of 20 clips found in 200 attempts" in caplog.text
    with pytest.raises(DataError, match="no sequence with ≥ 100 images"):
        Co3DCalibClips(root=raw, num_clips=2, frames=100, size=28)


def test_cli_end_to_end(data, tmp_path):
    """``dataset=co3d`` alone: GPTQ calibrates on the fixture's train sequences (calib.source follows the dataset),
    evaluation runs on its test split."""
    raw, anno = data
    args = ["dataset=co3d", f"dataset.root={raw}", f"dataset.annotations={anno}", "model=vggt_tiny",
            "quantizer=gptq", "bits=w8a8", "calib.num_clips=2", "logger=none", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
            "dataset.eval.co3d.data.categories=[apple,ball]", "dataset.eval.co3d.data.width=112",
            f"dataset.eval.co3d.data.seq_id_map={tmp_path / 'map.json'}", "calib.sources.co3d.size=112"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for phase in ("fp", "quant"):
        camera = result[phase]["co3d"]["camera"]
        assert {"auc@30", "auc@15", "auc@5", "auc@3"} <= set(camera)
        assert all(math.isfinite(v) and 0 <= v <= 100 for v in camera.values())
    assert (tmp_path / "map.json").is_file()
    assert result["choices"]["quantizer"] == "gptq" and result["quant"]["co3d"]["camera"]["auc@30"] >= 0
