"""Co3Dv2 relative-pose benchmark (FGQ Table 1; recons_eval's sequence selection, seq-id map and loader).

On disk: the raw images ``{root}/{category}/{sequence}/images/frameXXXXXX.jpg`` and the preprocessed annotations
of the official VGGT evaluation script, ``{annotations}/{category}_{split}.jgz``: a gzip JSON dict
``{sequence_name: [{"filepath" (relative to root), "R", "T", "focal_length", "principal_point"}, ...]}`` with
cameras in PyTorch3D convention (row vectors ``X_cam = X_world · R + T``, +X left, +Y up, NDC intrinsics).

Kept sequences: ≥ ``min_frames`` annotated frames and no frame with ``T[0] + T[1] + T[2] > 1e5``. Each clip is
one sequence's ``num_frames`` frames from the pose seq-id map (indices into the annotation list, drawn order kept:
entry 0 is the reference frame). Clips carry images and cameras (OpenCV w2c, pixel K of the resized images).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fgq.data import seq_ids
from fgq.data.batch import Clip, make_clip
from fgq.data.files import DataError, read_gzip_json, read_rgb, require_dir
from fgq.data.resize import scale_intrinsics
from fgq.models.preprocess import PATCH, eval_resize

log = logging.getLogger(__name__)

# The official lists (recons_eval datasets/co3d_v2.py). ``all`` is SEEN + UNSEEN in this order — not sorted — and
# the official seq-id map was drawn iterating categories in exactly this order (checked: the shipped
# CO3Dv2_relpose_seq-id-map_seed42.json is reproduced by one seed-42 stream drawn sequence after sequence).
SEEN_CATEGORIES = (
    "apple", "backpack", "banana", "baseballbat", "baseballglove", "bench", "bicycle", "bottle", "bowl", "broccoli",
    "cake", "car", "carrot", "cellphone", "chair", "cup", "donut", "hairdryer", "handbag", "hydrant", "keyboard",
    "laptop", "microwave", "motorcycle", "mouse", "orange", "parkingmeter", "pizza", "plant", "stopsign",
    "teddybear", "toaster", "toilet", "toybus", "toyplane", "toytrain", "toytruck", "tv", "umbrella", "vase",
    "wineglass",
)
UNSEEN_CATEGORIES = ("ball", "book", "couch", "frisbee", "hotdog", "kite", "remote", "sandwich", "skateboard",
                     "suitcase")
MAX_TRANSLATION_SUM = 1e5  # the reference drops sequences with a frame whose T[0]+T[1]+T[2] exceeds this
FRAME_KEYS = ("filepath", "R", "T", "focal_length", "principal_point")


def resolve_categories(categories: str | Sequence[str]) -> list[str]:
    """``all`` (51, official order), ``seen`` (the 41 training categories) or an explicit list (order kept)."""
    if isinstance(categories, str):
        named = {"all": SEEN_CATEGORIES + UNSEEN_CATEGORIES, "seen": SEEN_CATEGORIES}
        if categories not in named:
            raise ValueError(f"Co3D categories={categories!r}: use all, seen or a list of category names")
        return list(named[categories])
    out = [str(c) for c in categories]
    if not out:
        raise ValueError("Co3D categories: the list is empty")
    return out


def pytorch3d_to_opencv(rotation: Sequence, translation: Sequence) -> np.ndarray:
    """w2c ``[3, 4]`` (OpenCV axes) from a PyTorch3D camera: negate the x and y camera axes (``T[:2]`` and the
    first two columns of ``R``), then transpose ``R`` from the row-vector to the column-vector convention."""
    r = np.array(rotation, dtype=np.float64).reshape(3, 3).copy()
    t = np.array(translation, dtype=np.float64).reshape(3).copy()
    t[:2] *= -1
    r[:, :2] *= -1
    return np.concatenate((r.T, t[:, None]), axis=1)


def ndc_to_pixel_intrinsics(focal_length: Sequence, principal_point: Sequence, width: int, height: int) -> np.ndarray:
    """Pixel K from PyTorch3D NDC intrinsics: ``s = min(H, W)/2``, ``f_px = f·s``,
    ``c_px = −p·s + (W/2, H/2)``.

    One scale for both axes is PyTorch3D's ``ndc_isotropic`` convention, the one Co3Dv2's frame annotations use
    (FlowMap's Co3D loader asserts it); the preprocessed files drop the format field. As in the reference the
    centre is ``W/2`` (image edges at 0 and W), not the ``(W − 1)/2`` of integer pixel centres."""
    s = min(width, height) / 2.0
    f = np.array(focal_length, dtype=np.float64).reshape(2) * s
    c = -np.array(principal_point, dtype=np.float64).reshape(2) * s + np.array([width / 2.0, height / 2.0])
    return np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])


def eval_resize_intrinsics(intrinsics: np.ndarray, in_size: tuple[int, int], out_size: tuple[int, int],
                           width: int) -> np.ndarray:
    """K of an image of ``in_size`` (W, H) after ``eval_resize(width=width)`` produced ``out_size`` (H, W): resize
    to ``width`` × ``round(h·width/w/14)·14``, centre-crop a taller height to ``width``, then the resize that
    floors both sides to multiples of 14."""
    w0, h0 = in_size
    new_h = round(h0 * width / w0 / PATCH) * PATCH  # eval_resize's first resize
    k = scale_intrinsics(np.asarray(intrinsics, dtype=np.float64), width / w0, new_h / h0)
    if new_h > width:
        k[1, 2] -= (new_h - width) // 2
        new_h = width
    out_h, out_w = out_size
    return scale_intrinsics(k, out_w / width, out_h / new_h)


class Co3DPose(Dataset):
    """Co3Dv2 relative-pose clips; see the module docstring.

    ``seq_id_map``: JSON ``{sequence: [frame indices]}``, built on first use (seed ``seed``, sequences of the
    chosen categories in official order, annotation order within a category) and reused; drop in recons_eval's
    ``CO3Dv2_relpose_seq-id-map_seed42.json`` to evaluate the official frames. ``width``/``resample``: the
    evaluation loader (512 → 504 wide; bicubic for VGGT, lanczos for π3)."""

    def __init__(self, *, root: str | Path, annotations: str | Path, split: str = "test",
                 categories: str | Sequence[str] = "all", min_frames: int = 50, num_frames: int = 10,
                 seed: int = 42, seq_id_map: str | Path | None = None, width: int = 512, resample: str = "bicubic"):
        self.root = require_dir(root, "dataset.co3d.root")
        anno_dir = require_dir(annotations, "dataset.co3d.annotations")
        if num_frames < 1 or min_frames < num_frames:
            raise ValueError(f"Co3DPose: need 1 ≤ num_frames ≤ min_frames (got {num_frames}, {min_frames})")
        if width < PATCH:
            raise ValueError(f"Co3DPose: width={width} must be ≥ {PATCH}")
        self.width, self.resample = width, resample
        self.frames: dict[str, list[dict]] = {}  # sequence → annotation list (all kept sequences, official order)
        self.category: dict[str, str] = {}
        short, bad = [], []
        for category in resolve_categories(categories):
            path = anno_dir / f"{category}_{split}.jgz"
            if not path.is_file():
                raise DataError(f"{path}: not found; preprocess that category (the VGGT evaluation's "
                                f"preprocess_co3d.py) or choose dataset.eval.<name>.data.categories=[...]")
            data = read_gzip_json(path)
            if not isinstance(data, dict):
                raise DataError(f"{path}: expected a JSON object {{sequence_name: [frames]}} (the preprocessed "
                                f"annotations of the VGGT evaluation script)")
            for name, frames in data.items():
                if len(frames) < min_frames:
                    short.append(name)
                elif any(_checked_translation_sum(frame, path, name) > MAX_TRANSLATION_SUM for frame in frames):
                    bad.append(name)
                else:
                    self.frames[name], self.category[name] = frames, category
        if short:
            log.warning("Co3D: %d sequences have fewer than %d annotated frames and are skipped (e.g. %s)",
                        len(short), min_frames, short[0])
        if bad:
            log.warning("Co3D: %d sequences have a frame with T[0]+T[1]+T[2] > %g and are skipped (e.g. %s)",
                        len(bad), MAX_TRANSLATION_SUM, bad[0])
        lengths = {name: len(frames) for name, frames in self.frames.items()}
        # Drawn over every annotated sequence (not only those on disk) so a partial download keeps the frames.
        mapping = seq_ids.load_or_build(seq_id_map, lambda: seq_ids.pose_map(lengths, num_frames, seed), "Co3D")
        seq_ids.check_pose_frames(mapping, num_frames, seq_id_map)
        other = [name for name in mapping if name not in lengths]
        if other:
            log.warning("Co3D: %d of %d sequences of the seq-id map %s are not among the kept %s-split sequences of "
                        "the chosen categories and are skipped (e.g. %s)", len(other), len(mapping), seq_id_map,
                        split, other[0])
            mapping = {name: ids for name, ids in mapping.items() if name in lengths}
        on_disk = {name: n for name, n in lengths.items() if self._sequence_dir(name).is_dir()}
        self.map = seq_ids.restrict(mapping, on_disk, seq_id_map, "Co3D")
        seq_ids.warn_unmapped(on_disk, self.map, seq_id_map, "Co3D")
        self.names = [name for name in lengths if name in self.map]
        if not self.names:
            raise DataError(f"Co3D: no sequence to evaluate under {self.root} with the annotations in {anno_dir} "
                            f"(check dataset.co3d.root, dataset.co3d.annotations and the categories)")

    @property
    def sequences(self) -> list[str]:
        return list(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def _sequence_dir(self, name: str) -> Path:
        return (self.root / self.frames[name][0]["filepath"]).parent

    def __getitem__(self, index: int) -> Clip:
        name = self.names[index]
        ids = self.map[name]
        images, extrinsics, intrinsics = [], [], []
        for i in ids:
            frame = self.frames[name][i]
            path = self.root / frame["filepath"]
            pil = read_rgb(path)
            image = eval_resize(pil, width=self.width, resample=self.resample)
            k = ndc_to_pixel_intrinsics(frame["focal_length"], frame["principal_point"], *pil.size)
            if images and image.shape != images[0].shape:
                raise DataError(f"{path}: image size differs from the sequence's first selected frame")
            images.append(image)
            extrinsics.append(pytorch3d_to_opencv(frame["R"], frame["T"]))
            intrinsics.append(eval_resize_intrinsics(k, pil.size, image.shape[-2:], self.width))
        meta = {"dataset": "co3d", "sequence": name, "category": self.category[name], "frames": list(ids),
                "files": [self.frames[name][i]["filepath"] for i in ids]}
        return make_clip(torch.stack(images), meta, extrinsics=torch.from_numpy(np.stack(extrinsics)),
                         intrinsics=torch.from_numpy(np.stack(intrinsics)))


def _checked_translation_sum(frame: dict, path: Path, name: str) -> float:
    """``T[0] + T[1] + T[2]`` of a frame whose annotation has every field the loader reads."""
    missing = [key for key in FRAME_KEYS if key not in frame]
    if missing:
        raise DataError(f"{path}: a frame of sequence {name!r} lacks {missing}; regenerate the annotations")
    try:
        return float(sum(frame["T"][:3]))
    except TypeError as err:
        raise DataError(f"{path}: sequence {name!r} has a frame with an invalid T ({err})") from None
