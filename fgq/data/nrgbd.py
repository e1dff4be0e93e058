"""Neural RGB-D (NRGBD) point-map reconstruction (recons_eval's protocol and loader); not in the FGQ paper's tables.

On disk (the ``neural_rgbd_data.zip`` release)::

    {root}/{scene}/images/img{i}.png     RGB
    {root}/{scene}/depth/depth{i}.png    uint16 millimetres, 480 × 640
    {root}/{scene}/poses.txt             one 4 × 4 camera-to-world matrix (OpenGL axes) per frame, 4 lines each

Frames are numbered 0..N−1 (sorted numerically); colour, depth and pose counts must agree. Intrinsics are fixed
(``fx = fy = 320 / tan 30°``, principal point at the image centre). Frames of a scene are picked with a stride
(``kf_every`` 500: sparse, 100: dense) and stored in a seq-id map; each scene is one clip at width 518.

Some released ``poses.txt`` contain ``nan`` matrices (the Neural RGB-D code marks such frames invalid and fills in
the identity). A selected frame whose pose is not finite is dropped from its clip, with a logged count.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fgq.data.files import DataError, read_png_uint16, read_rgb, require_file
from fgq.data.pointmap import Frame, PointMapDataset, check_numbering
from fgq.data.resize import intrinsics_at

log = logging.getLogger(__name__)

SCENES = ("breakfast_room", "complete_kitchen", "green_room", "grey_white_room", "kitchen", "morning_apartment",
          "staircase", "thin_geometry", "whiteroom")
FOCAL = 554.2562584220408  # 320 / tan(30°): a 60° horizontal field of view at 640 px
INTRINSICS = np.array([[FOCAL, 0.0, 320.0], [0.0, FOCAL, 240.0], [0.0, 0.0, 1.0]])
DEPTH_SIZE = (480, 640)
DEPTH_RANGE = (1e-3, 10.0)  # metres; outside → invalid (reference)
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # flips the camera's y and z axes (right-multiplied: columns 1, 2)


def count_numbered(folder: Path, prefix: str) -> int:
    """The frame count of ``folder/{prefix}{i}.png`` (``i`` not zero-padded); numbers must run 0..N−1."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)\.png")
    numbers = sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name)))
    return check_numbering(numbers, folder, f"the {prefix}<i>.png files")


def read_poses(path: Path) -> np.ndarray:
    """``poses.txt`` → ``[N, 4, 4]`` float64 OpenGL c2w; ``nan`` entries are kept (the loader drops those frames)."""
    try:
        values = np.array(require_file(path).read_text().split(), dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{path}: not a list of 4×4 matrices ({err})") from None
    if values.size == 0 or values.size % 16:
        raise DataError(f"{path}: {values.size} numbers, expected a multiple of 16 (one 4×4 matrix per frame)")
    return values.reshape(-1, 4, 4)


def gl_c2w_to_w2c(c2w_gl: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world ``[..., 4, 4]`` → OpenCV world-to-camera ``[..., 3, 4]``."""
    c2w = c2w_gl @ GL_TO_CV
    rot, trans = c2w[..., :3, :3], c2w[..., :3, 3:]
    rot_t = np.swapaxes(rot, -1, -2)
    return np.concatenate((rot_t, -rot_t @ trans), axis=-1)


class NRGBD(PointMapDataset):
    """One clip per scene of the seq-id map (built with ``stride_map(kf_every)`` on first use, then reused).

    ``depth_size``: the asserted depth resolution (H, W) (``None`` skips the check)."""

    name = "nrgbd"

    def __init__(self, root: str | Path, *, seq_id_map: str | Path | None = None, kf_every: int = 500,
                 width: int = 518, scenes: Sequence[str] = SCENES,
                 depth_size: Sequence[int] | None = DEPTH_SIZE, min_frames: int = 1) -> None:
        self.scenes = tuple(scenes)
        self.depth_size = tuple(depth_size) if depth_size is not None else None
        self.poses: dict[str, np.ndarray] = {}  # scene → OpenGL c2w [N, 4, 4], filled by _discover
        super().__init__(root, seq_id_map=seq_id_map, kf_every=kf_every, width=width, min_frames=min_frames)
        for scene, ids in list(self.frame_ids.items()):
            bad = [i for i in ids if not np.isfinite(self.poses[scene][i]).all()]
            if bad:
                log.warning("nrgbd %s: %d of %d selected frames have a non-finite pose in poses.txt and are dropped "
                            "(e.g. frame %d)", scene, len(bad), len(ids), bad[0])
                self.frame_ids[scene] = [i for i in ids if i not in bad]
        dropped = [s for s, ids in self.frame_ids.items() if len(ids) < min_frames]
        if dropped:
            log.warning("nrgbd: %d scenes have fewer than min_frames=%d frames with a valid pose and are skipped "
                        "(e.g. %s)", len(dropped), min_frames, dropped[0])
            self.frame_ids = {s: ids for s, ids in self.frame_ids.items() if s not in dropped}
        if not self.frame_ids:
            raise DataError(f"{self.root}: no nrgbd scene is left to evaluate (see the warnings above)")

    def _discover(self) -> dict[str, int]:
        present = [s for s in self.scenes if (self.root / s).is_dir()]
        if len(present) < len(self.scenes):
            log.warning("nrgbd: %d of %d scenes are not under %s and are skipped (e.g. %s)",
                        len(self.scenes) - len(present), len(self.scenes), self.root,
                        next(s for s in self.scenes if s not in present))
        for scene in present:
            folder = self.root / scene
            colour, depth = count_numbered(folder / "images", "img"), count_numbered(folder / "depth", "depth")
            poses = read_poses(folder / "poses.txt")
            if not colour == depth == len(poses):
                raise DataError(f"{folder}: {colour} images, {depth} depth maps and {len(poses)} poses; the counts "
                                "must agree")
            self.poses[scene] = poses
        return {s: len(self.poses[s]) for s in present}

    def _load_frame(self, sequence: str, frame: int) -> Frame:
        folder = self.root / sequence
        depth_path = folder / "depth" / f"depth{frame}.png"
        raw = read_png_uint16(depth_path)
        if self.depth_size is not None and raw.shape != self.depth_size:
            raise DataError(f"{depth_path}: depth is {raw.shape[0]}×{raw.shape[1]}, expected "
                            f"{self.depth_size[0]}×{self.depth_size[1]} (set depth_size=null to accept other sizes)")
        depth = raw.astype(np.float32) / 1000.0
        depth[(depth < DEPTH_RANGE[0]) | (depth > DEPTH_RANGE[1])] = 0.0
        # K is given for 640×480: frames stored at another size (depth_size=null) get it scaled to theirs
        return Frame(read_rgb(folder / "images" / f"img{frame}.png"), depth, intrinsics_at(INTRINSICS, DEPTH_SIZE,
                     raw.shape), gl_c2w_to_w2c(self.poses[sequence][frame]))
