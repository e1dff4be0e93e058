"""DTU point-map benchmark (FGQ Table 3; recons_eval's point-map protocol): the 22 test scans of Spann3R's
``dtu_test_mvsnet_release``, every 5th view (0, 5, …, 45), ground truth in **millimetres** masked by the eroded
object mask, at 518 wide.

Layout::

    {root}/scan{N}/images/%08d.jpg          numbered 0..n−1
                   depths/%08d.npy          float depth in mm, NaN = invalid
                   binary_masks/%08d.png    object mask (/255 > 0.5), resized nearest to the depth size, eroded
                   cams/%08d_cam.txt        MVSNet camera: "extrinsic" 4×4 w2c, "intrinsic" 3×3, depth range
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from fgq.data.files import DataError, read_npy, read_rgb, require_file
from fgq.data.pointmap import Frame, PointMapDataset, check_numbering, frame_numbers
from fgq.data.resize import nearest_resize

log = logging.getLogger(__name__)
SCANS = (1, 4, 9, 10, 11, 12, 13, 15, 23, 24, 29, 32, 33, 34, 48, 49, 62, 75, 77, 110, 114, 118)


def read_mvsnet_cam(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An MVSNet ``_cam.txt`` read as whitespace-separated words, as the reference does: word 0 "extrinsic",
    words 1–16 the 4×4 w2c, word 17 "intrinsic", words 18–26 K; the depth range after it is not needed.
    Returns ``(K [3, 3], w2c [4, 4])``."""
    words = require_file(path).read_text().split()
    if len(words) < 27 or words[0] != "extrinsic" or words[17] != "intrinsic":
        raise DataError(f"{path}: not an MVSNet camera file (expected 'extrinsic' + 16 numbers, 'intrinsic' + 9)")
    try:
        extrinsic = np.array(words[1:17], dtype=np.float64).reshape(4, 4)
        intrinsic = np.array(words[18:27], dtype=np.float64).reshape(3, 3)
    except ValueError as err:
        raise DataError(f"{path}: not an MVSNet camera file ({err})") from None
    if not (np.isfinite(extrinsic).all() and np.isfinite(intrinsic).all()):
        raise DataError(f"{path}: the camera has non-finite values")
    return intrinsic, extrinsic


def erode(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary erosion by a ``size × size`` square, matching OpenCV's ``cv2.erode(mask, ones((size, size)))``:
    the default anchor is ``size // 2`` (5 for the reference's 10×10, so an even kernel reaches 5 pixels up/left
    and 4 down/right: ``out[y, x] = min in[y−5 … y+4, x−5 … x+4]``), and the default border value never erodes
    (pixels outside the image count as set). ``size ≤ 1`` leaves the mask unchanged."""
    out = np.asarray(mask, dtype=bool)
    if size <= 1:
        return out.copy()
    before = size // 2
    for axis in (0, 1):  # a square is separable: rows, then columns
        pad = [(0, 0), (0, 0)]
        pad[axis] = (before, size - 1 - before)
        out = sliding_window_view(np.pad(out, pad, constant_values=True), size, axis=axis).all(axis=-1)
    return out


def read_mask(path: Path) -> np.ndarray:
    """A single-channel mask PNG as ``value / 255 > 0.5`` (bool ``[H, W]``)."""
    try:
        with Image.open(require_file(path)) as img:
            img.load()
            array = np.asarray(img.convert("L") if img.mode == "1" else img)
    except OSError as err:
        raise DataError(f"{path}: cannot read the mask PNG ({err})") from None
    if array.ndim != 2:
        raise DataError(f"{path}: expected a single-channel mask PNG, got shape {array.shape}")
    return array.astype(np.float64) / 255.0 > 0.5


class DTU(PointMapDataset):
    """Item i: the selected views of one ``scanN`` as a clip; depth, extrinsic translations and world points in mm."""

    name = "dtu"

    def __init__(self, root: str | Path, *, seq_id_map: str | Path | None = None, kf_every: int = 5,
                 width: int = 518, scans: Sequence[int] = SCANS, mask_erosion: int = 10, min_frames: int = 1) -> None:
        if mask_erosion < 0:
            raise ValueError(f"dtu: mask_erosion={mask_erosion} must be ≥ 0 (the kernel size; 0 or 1: none)")
        self.scans, self.mask_erosion = [f"scan{int(n)}" for n in scans], mask_erosion
        super().__init__(root, seq_id_map=seq_id_map, kf_every=kf_every, width=width, min_frames=min_frames)

    def _discover(self) -> dict[str, int]:
        missing = [s for s in self.scans if not (self.root / s).is_dir()]
        if missing:
            log.warning("dtu: %d of %d scans are not under %s and are skipped (e.g. %s)",
                        len(missing), len(self.scans), self.root, missing[0])
        lengths = {}
        for scan in self.scans:
            if scan not in missing:
                folder = self.root / scan / "images"
                names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
                lengths[scan] = check_numbering(frame_numbers(names, "", ".jpg", 8), folder, "the images")
        return lengths

    def _load_frame(self, sequence: str, frame: int) -> Frame:
        scan, name = self.root / sequence, f"{frame:08d}"
        depth_path = scan / "depths" / f"{name}.npy"
        depth = read_npy(depth_path)
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise DataError(f"{depth_path}: expected a 2-D numeric depth map, got {depth.dtype} {depth.shape}")
        # NaN marks missing depth (the reference zeroes NaN; other non-finite values are treated the same way)
        depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
        mask = nearest_resize(read_mask(scan / "binary_masks" / f"{name}.png"), depth.shape[1], depth.shape[0])
        depth = depth * erode(mask, self.mask_erosion)
        intrinsic, extrinsic = read_mvsnet_cam(scan / "cams" / f"{name}_cam.txt")
        return Frame(read_rgb(scan / "images" / f"{name}.jpg"), depth, intrinsic, extrinsic)
