"""What the point-map benchmarks (7-Scenes, DTU, ETH3D; recons_eval's protocol) share: stride seq-id maps, one clip
per whole sequence, and recons_eval's ground truth — image fitted to the depth map, both resized to a fixed width
(518), intrinsics rescaled, ``valid = depth > 1e-4``, world points unprojected from the resized depth.

A subclass says which configured sequences are on disk and how long they are (``_discover``) and how one frame is
read (``_load_frame``); everything else lives here. Seq-id map entries outside the configured selection are ignored,
so one map (e.g. the reference's) serves any subset of scenes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fgq.data import seq_ids
from fgq.data.batch import Clip, make_clip
from fgq.data.files import DataError, require_dir
from fgq.data.resize import resize_image_depth_intrinsics

log = logging.getLogger(__name__)
VALID_MIN_DEPTH = 1e-4  # recons_eval's validity test after the resize


@dataclass
class Frame:
    """One frame as read from disk, before the ground-truth resize (``fgq.data.resize``)."""

    image: Image.Image  # RGB, any size (fitted to the depth map's size)
    depth: np.ndarray  # [H, W] float, the dataset's units, 0 where invalid
    intrinsics: np.ndarray  # [3, 3] pixels of the depth map
    extrinsics: np.ndarray  # [3, 4] or [4, 4] w2c, OpenCV axes


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """The reference's colour-to-depth-size resize: LANCZOS when shrinking, BICUBIC otherwise, untouched when the
    size already matches."""
    if image.size == (width, height):
        return image
    scale = max(width / image.size[0], height / image.size[1])
    return image.resize((width, height), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


class PointMapDataset(Dataset):
    """Item i: every frame of sequence i that the seq-id map selects, as one clip at ``width`` pixels wide."""

    name = "pointmap"  # meta["dataset"], the config key (dataset.<name>.root) and the log prefix

    def __init__(self, root: str | Path, *, seq_id_map: str | Path | None, kf_every: int, width: int,
                 min_frames: int) -> None:
        if width <= 0 or width % 14:
            raise ValueError(f"{self.name}: width={width} must be a positive multiple of 14")
        if min_frames < 1:
            raise ValueError(f"{self.name}: min_frames={min_frames} must be ≥ 1")
        self.root = require_dir(root, f"dataset.{self.name}.root")
        self.width = width
        listed = self._discover()
        lengths = {k: n for k, n in listed.items() if n > 0}
        empty = [k for k, n in listed.items() if n == 0]
        if empty:
            log.warning("%s: %d sequences have no frames on disk and are skipped (e.g. %s)", self.name, len(empty),
                        empty[0])
        if not lengths:
            raise DataError(f"{self.root}: no {self.name} sequences with frames found; check dataset.{self.name}.root "
                            f"and the selection in the config")
        mapping = seq_ids.load_or_build(seq_id_map, lambda: seq_ids.stride_map(lengths, kf_every), self.name)
        # Entries outside the configured selection are the user's choice, not missing data: dropped silently.
        mapping = {k: v for k, v in mapping.items() if k in lengths}
        unmapped = [k for k in lengths if k not in mapping]
        if unmapped:
            log.warning("%s: %d sequences on disk are not in the seq-id map %s and are skipped (e.g. %s); delete "
                        "the map to rebuild it", self.name, len(unmapped), seq_id_map, unmapped[0])
        mapping = seq_ids.restrict(mapping, lengths, seq_id_map, self.name)
        short = [k for k, ids in mapping.items() if len(ids) < min_frames]
        if short:
            log.warning("%s: %d sequences have fewer than min_frames=%d selected frames and are skipped (e.g. %s)",
                        self.name, len(short), min_frames, short[0])
        self.frame_ids = {k: ids for k, ids in mapping.items() if len(ids) >= min_frames}
        if not self.frame_ids:
            raise DataError(f"{self.root}: no {self.name} sequence is left to evaluate (see the warnings above)")

    # --- what a dataset supplies ---------------------------------------------------------------------------
    def _discover(self) -> dict[str, int]:
        """Frames on disk (0 if none) of every configured sequence found under the root, in evaluation order;
        configured sequences that are not there are counted in a warning."""
        raise NotImplementedError

    def _load_frame(self, sequence: str, frame: int) -> Frame:
        raise NotImplementedError

    def _category(self, sequence: str) -> str:
        return sequence

    # --- the clip ------------------------------------------------------------------------------------------
    @property
    def sequences(self) -> list[str]:
        return list(self.frame_ids)

    def __len__(self) -> int:
        return len(self.frame_ids)

    def __getitem__(self, index: int) -> Clip:
        sequence = self.sequences[index]
        ids = self.frame_ids[sequence]
        images, depths, intrinsics, extrinsics = [], [], [], []
        for frame_id in ids:
            frame = self._load_frame(sequence, frame_id)
            height, width = frame.depth.shape
            image, depth, k = resize_image_depth_intrinsics(fit_image(frame.image, width, height), frame.depth,
                                                            frame.intrinsics, width=self.width)
            images.append(image)
            depths.append(torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)))
            intrinsics.append(torch.from_numpy(k))
            extrinsics.append(torch.from_numpy(np.asarray(frame.extrinsics, dtype=np.float64)[:3]))
        depth = torch.stack(depths)
        meta = {"dataset": self.name, "sequence": sequence, "category": self._category(sequence),
                "frames": list(ids)}
        return make_clip(torch.stack(images), meta, extrinsics=torch.stack(extrinsics),
                         intrinsics=torch.stack(intrinsics), depth=depth, valid=depth > VALID_MIN_DEPTH)


def frame_numbers(names: list[str], prefix: str, suffix: str, digits: int) -> list[int]:
    """The numbers of the names ``prefix`` + ``digits`` digits + ``suffix`` (other names ignored), sorted."""
    out = []
    for name in names:
        middle = name[len(prefix):len(name) - len(suffix)]
        if name.startswith(prefix) and name.endswith(suffix) and len(middle) == digits and middle.isdigit():
            out.append(int(middle))
    return sorted(out)


def check_numbering(numbers: list[int], where: Path, what: str) -> int:
    """Frame numbers must run 0..N−1 (the reference's check); returns N."""
    if numbers != list(range(len(numbers))):
        raise DataError(f"{where}: {what} must be numbered 0..N-1 without gaps (found {len(numbers)} files, "
                        f"numbers {numbers[0]}..{numbers[-1]})")
    return len(numbers)


def w2c_from_c2w(c2w: np.ndarray) -> np.ndarray:
    """Closed-form inverse of a rigid 4×4 camera-to-world pose, as the reference inverts 7-Scenes poses."""
    rot, t = c2w[:3, :3], c2w[:3, 3]
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot.T, -rot.T @ t
    return out
