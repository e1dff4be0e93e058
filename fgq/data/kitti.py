"""KITTI depth (FGQ Table 4; recons_eval's depth protocol): the 13 depth-selection validation drives, left colour
camera, the first 110 annotated frames of each, ground truth at its full annotated resolution.

On disk (as gathered by recons_eval / MonST3R's ``prepare_kitti.py``)::

    {root}/depth_selection/val_selection_cropped/image_gathered/{drive}_02/0000000005.png
    {root}/depth_selection/val_selection_cropped/groundtruth_depth_gathered/{drive}_02/0000000005.png

Ground truth: uint16 PNG, metres × 256, 0 = no LiDAR point. Images go through the evaluation loader
(``eval_resize``: width 512 → 504, so KITTI frames become 504 × 154); the ground truth keeps its own resolution
and the evaluator resizes predictions to it. Clips carry images + depth + valid only (no cameras).

``mode="mono"``: one clip per frame (one frame per forward pass, aligned per frame);
``mode="video"``: one clip per drive with all its frames (aligned per sequence).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fgq.data.batch import Clip, make_clip
from fgq.data.files import DataError, read_png_uint16, read_rgb, require_dir, require_file
from fgq.models.preprocess import eval_resize

log = logging.getLogger(__name__)

DRIVES = (
    "2011_09_26_drive_0002_sync", "2011_09_26_drive_0005_sync", "2011_09_26_drive_0013_sync",
    "2011_09_26_drive_0020_sync", "2011_09_26_drive_0023_sync", "2011_09_26_drive_0036_sync",
    "2011_09_26_drive_0079_sync", "2011_09_26_drive_0095_sync", "2011_09_26_drive_0113_sync",
    "2011_09_28_drive_0037_sync", "2011_09_29_drive_0026_sync", "2011_09_30_drive_0016_sync",
    "2011_10_03_drive_0047_sync",
)
GATHERED = Path("depth_selection") / "val_selection_cropped"
IMAGE_DIR, DEPTH_DIR = "image_gathered", "groundtruth_depth_gathered"
CAMERA_SUFFIX = "_02"  # image_02: the left colour camera


def read_kitti_depth(path: Path) -> np.ndarray:
    """Metres ``float32 [H, W]`` from a KITTI depth PNG (value / 256; 0 = invalid stays 0). Like the KITTI devkit
    reader, a map whose maximum is ≤ 255 is rejected: it is an 8-bit image, not 16-bit depth."""
    raw = read_png_uint16(path)
    if raw.max() <= 255:
        raise DataError(f"{path}: maximum value {raw.max()} ≤ 255, not a 16-bit KITTI depth map (metres × 256)")
    return raw.astype(np.float32) / 256.0


class KITTIDepth(Dataset):
    """KITTI depth clips; see the module docstring. ``resample``: ``bicubic`` (VGGT's loader) or ``lanczos``
    (π3's). ``max_frames``: the first frames (sorted by name) of each drive's ground truth."""

    def __init__(self, *, root: str | Path, mode: str = "mono", drives: tuple[str, ...] | list[str] = DRIVES,
                 max_frames: int = 110, width: int = 512, resample: str = "bicubic"):
        base = require_dir(root, "dataset.kitti.root") / GATHERED
        if mode not in ("mono", "video"):
            raise ValueError(f"KITTIDepth: mode={mode!r}, use mono (one frame per clip) or video (one drive per clip)")
        if max_frames < 1:
            raise ValueError(f"KITTIDepth: max_frames={max_frames} must be ≥ 1")
        self.base, self.mode, self.width, self.resample = base, mode, width, resample
        self.frames: dict[str, list[str]] = {}  # drive → frame names (file stems), sorted
        missing, empty = [], []
        for drive in drives:
            depth_dir = base / DEPTH_DIR / f"{drive}{CAMERA_SUFFIX}"
            if not depth_dir.is_dir():
                missing.append(drive)
                continue
            names = sorted(p.stem for p in depth_dir.glob("*.png"))[:max_frames]
            if not names:
                empty.append(drive)
                continue
            for name in names:  # fail now, naming the file, rather than mid-evaluation
                require_file(self._image_path(drive, name))
            self.frames[drive] = names
        if missing:
            log.warning("KITTI: %d of %d drives are not under %s and are skipped (e.g. %s)",
                        len(missing), len(drives), base / DEPTH_DIR, f"{missing[0]}{CAMERA_SUFFIX}")
        if empty:
            log.warning("KITTI: %d drives have no depth PNG and are skipped (e.g. %s)", len(empty), empty[0])
        if not self.frames:
            raise DataError(f"{base / DEPTH_DIR}: none of the {len(drives)} KITTI drives found (expected folders "
                            f"like {drives[0] if drives else '<drive>'}{CAMERA_SUFFIX}); check dataset.kitti.root")
        if mode == "mono":
            self.items = [(drive, [name]) for drive, names in self.frames.items() for name in names]
        else:
            self.items = list(self.frames.items())

    @property
    def sequences(self) -> list[str]:
        return list(self.frames)

    def __len__(self) -> int:
        return len(self.items)

    def _image_path(self, drive: str, name: str) -> Path:
        return self.base / IMAGE_DIR / f"{drive}{CAMERA_SUFFIX}" / f"{name}.png"

    def _depth_path(self, drive: str, name: str) -> Path:
        return self.base / DEPTH_DIR / f"{drive}{CAMERA_SUFFIX}" / f"{name}.png"

    def __getitem__(self, index: int) -> Clip:
        drive, names = self.items[index]
        images, depths = [], []
        for name in names:
            image = eval_resize(read_rgb(self._image_path(drive, name)), width=self.width, resample=self.resample)
            depth = torch.from_numpy(read_kitti_depth(self._depth_path(drive, name)))
            # One drive has one camera size; a mismatch would otherwise surface as a bare torch.stack error.
            if images and (image.shape != images[0].shape or depth.shape != depths[0].shape):
                raise DataError(f"{self._depth_path(drive, name)}: size differs from the drive's first frame "
                                f"{names[0]} (image {tuple(images[0].shape[1:])}, depth {tuple(depths[0].shape)})")
            images.append(image)
            depths.append(depth)
        meta = {"dataset": "kitti", "sequence": drive, "category": "kitti", "frames": list(names)}
        return make_clip(torch.stack(images), meta, depth=torch.stack(depths))
