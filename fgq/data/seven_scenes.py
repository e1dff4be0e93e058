"""7-Scenes point-map benchmark (FGQ Table 2; recons_eval's point-map protocol): the test sequences of each scene, every
``kf_every``-th frame (200: the paper's sparse setting), ground truth from the depth re-projected into the colour
camera, at 518×392.

Layout (as prepared by SimpleRecon / Spann3R)::

    {root}/{scene}/TestSplit.txt               lines "sequence3" → folder seq-03
    {root}/{scene}/seq-XX/frame-%06d.color.png   640×480 RGB
                         frame-%06d.pose.txt    4×4 camera-to-world
                         frame-%06d.depth.proj.png  uint16 mm, 480×640, 65535 = invalid (or depth.png: raw Kinect)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fgq.data.files import DataError, read_matrix_txt, read_png_uint16, read_rgb, require_file
from fgq.data.pointmap import Frame, PointMapDataset, check_numbering, frame_numbers, w2c_from_c2w
from fgq.data.resize import intrinsics_at

log = logging.getLogger(__name__)
SCENES = ("chess", "fire", "heads", "office", "pumpkin", "redkitchen", "stairs")
DEPTH_SUFFIXES = ("depth.proj.png", "depth.png")
SIZE = (480, 640)  # the reference asserts this depth size (H, W)
INVALID_RAW = 65535
DEPTH_RANGE = (1e-3, 10.0)  # metres; outside → invalid (reference)


def split_sequences(path: Path) -> list[str]:
    """``TestSplit.txt`` / ``TrainSplit.txt``: ``sequenceN`` per line → ``seq-NN``."""
    out = []
    for line in require_file(path).read_text().splitlines():
        word = line.strip()
        if not word:
            continue
        number = word[len("sequence"):]
        if not (word.startswith("sequence") and number.isdigit()):
            raise DataError(f"{path}: line {word!r} is not of the form sequenceN")
        out.append(f"seq-{int(number):02d}")
    return out


class SevenScenes(PointMapDataset):
    """Item i: the selected frames of one ``scene/seq-XX`` (the seq-id map key) as a clip, depth in metres."""

    name = "seven_scenes"

    def __init__(self, root: str | Path, *, seq_id_map: str | Path | None = None, kf_every: int = 200,
                 width: int = 518, scenes: Sequence[str] = SCENES, split: str = "test",
                 depth_suffix: str = "depth.proj.png", check_size: bool = True,
                 intrinsics: Sequence[float] = (525.0, 525.0, 320.0, 240.0), min_frames: int = 1) -> None:
        if split not in ("test", "train"):
            raise ValueError(f"seven_scenes: split={split!r}: use test or train")
        if depth_suffix not in DEPTH_SUFFIXES:
            raise ValueError(f"seven_scenes: depth_suffix={depth_suffix!r}: use one of {DEPTH_SUFFIXES}")
        if len(intrinsics) != 4:
            raise ValueError(f"seven_scenes: intrinsics={list(intrinsics)} must be [fx, fy, cx, cy]")
        self.scenes, self.split, self.depth_suffix, self.check_size = tuple(scenes), split, depth_suffix, check_size
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        self.intrinsics = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        super().__init__(root, seq_id_map=seq_id_map, kf_every=kf_every, width=width, min_frames=min_frames)

    def _discover(self) -> dict[str, int]:
        missing = [s for s in self.scenes if not (self.root / s).is_dir()]
        if missing:
            log.warning("seven_scenes: %d of %d scenes are not under %s and are skipped (e.g. %s)",
                        len(missing), len(self.scenes), self.root, missing[0])
        split_file = f"{self.split.capitalize()}Split.txt"
        return {f"{scene}/{seq}": self._count_frames(self.root / scene / seq)
                for scene in self.scenes if scene not in missing
                for seq in split_sequences(self.root / scene / split_file)}

    def _count_frames(self, folder: Path) -> int:
        if not folder.is_dir():
            return 0  # listed in the split file but not on disk: skipped with the empty ones (logged)
        names = [p.name for p in folder.iterdir()]
        kinds = ("color.png", self.depth_suffix, "pose.txt")
        counts = [frame_numbers(names, "frame-", f".{kind}", 6) for kind in kinds]
        if len({len(c) for c in counts}) != 1:
            raise DataError(f"{folder}: unequal numbers of frame files ("
                            + ", ".join(f"{len(c)} {k}" for c, k in zip(counts, kinds, strict=True)) + ")")
        for numbers, kind in zip(counts, kinds, strict=True):
            check_numbering(numbers, folder, f"the {kind} frames")
        return len(counts[0])

    def _category(self, sequence: str) -> str:
        return sequence.split("/")[0]

    def _load_frame(self, sequence: str, frame: int) -> Frame:
        stem = self.root / sequence / f"frame-{frame:06d}"
        depth_path = Path(f"{stem}.{self.depth_suffix}")
        raw = read_png_uint16(depth_path)
        if self.check_size and raw.shape != SIZE:
            raise DataError(f"{depth_path}: depth is {raw.shape[0]}×{raw.shape[1]}, 7-Scenes depth is "
                            f"{SIZE[0]}×{SIZE[1]} (set check_size=false to accept other sizes)")
        depth = np.where(raw == INVALID_RAW, 0, raw).astype(np.float32) / 1000.0
        depth[(depth < DEPTH_RANGE[0]) | (depth > DEPTH_RANGE[1])] = 0.0
        pose_path = Path(f"{stem}.pose.txt")
        c2w = read_matrix_txt(pose_path, 4, 4)
        if not np.isfinite(c2w).all():
            raise DataError(f"{pose_path}: the pose has non-finite values")
        # K is given for 640×480: frames stored at another size (check_size=false) get it scaled to theirs
        return Frame(read_rgb(Path(f"{stem}.color.png")), depth, intrinsics_at(self.intrinsics, SIZE, raw.shape),
                     w2c_from_c2w(c2w))
