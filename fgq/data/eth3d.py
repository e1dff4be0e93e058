"""ETH3D point-map benchmark (FGQ Table 3; recons_eval's point-map protocol): the 13 high-res multi-view training
scenes as undistorted by recons_eval's preparation, every 5th image of the sorted list, at 518 wide.

Layout (per scene)::

    {root}/{scene}/images/custom_undistorted/<name>.JPG
                   ground_truth_depth/custom_undistorted/<name>.JPG   raw float32, row-major, the image's size,
                                                                       no header; non-finite or ≤ 0 = invalid
                   custom_undistorted_cam/<name>.npz                  intrinsics 3×3, extrinsics 4×4 w2c
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fgq.data.files import DataError, read_rgb, require_file
from fgq.data.pointmap import Frame, PointMapDataset

log = logging.getLogger(__name__)
SCENES = ("courtyard", "delivery_area", "electro", "facade", "kicker", "meadow", "office", "pipes", "playground",
          "relief", "relief_2", "terrace", "terrains")
IMAGES = Path("images", "custom_undistorted")
DEPTHS = Path("ground_truth_depth", "custom_undistorted")
CAMS = Path("custom_undistorted_cam")


def read_raw_depth(path: Path, width: int, height: int) -> np.ndarray:
    """ETH3D's headerless little-endian float32 depth of a ``width × height`` image; invalid pixels → 0."""
    data = require_file(path).read_bytes()
    if len(data) != width * height * 4:
        raise DataError(f"{path}: {len(data)} bytes, expected {width * height * 4} (float32 depth of the "
                        f"{width}×{height} image)")
    depth = np.frombuffer(data, dtype="<f4").reshape(height, width)
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def read_cam_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(K [3, 3], w2c [4, 4] or [3, 4])`` from a prepared camera ``.npz``."""
    try:
        cam = np.load(require_file(path), allow_pickle=False)
        if not isinstance(cam, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single array, expected an .npz with intrinsics and extrinsics")
        with cam:
            if not {"intrinsics", "extrinsics"} <= set(cam.files):
                raise DataError(f"{path}: has {sorted(cam.files)}, needs intrinsics and extrinsics")
            intrinsic = np.asarray(cam["intrinsics"], np.float64)
            extrinsic = np.asarray(cam["extrinsics"], np.float64)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read the camera .npz ({err})") from None
    if intrinsic.shape != (3, 3) or extrinsic.shape not in ((4, 4), (3, 4)):
        raise DataError(f"{path}: intrinsics must be 3×3 and extrinsics 4×4 (got {intrinsic.shape}, "
                        f"{extrinsic.shape})")
    if not (np.isfinite(intrinsic).all() and np.isfinite(extrinsic).all()):
        raise DataError(f"{path}: the camera has non-finite values")
    return intrinsic, extrinsic


class ETH3D(PointMapDataset):
    """Item i: the selected images of one scene as a clip; frame ids index the scene's sorted ``.JPG`` names."""

    name = "eth3d"

    def __init__(self, root: str | Path, *, seq_id_map: str | Path | None = None, kf_every: int = 5,
                 width: int = 518, scenes: Sequence[str] = SCENES, min_frames: int = 1) -> None:
        self.scenes = tuple(scenes)
        self.images: dict[str, list[str]] = {}
        super().__init__(root, seq_id_map=seq_id_map, kf_every=kf_every, width=width, min_frames=min_frames)

    def _discover(self) -> dict[str, int]:
        missing = [s for s in self.scenes if not (self.root / s).is_dir()]
        if missing:
            log.warning("eth3d: %d of %d scenes are not under %s and are skipped (e.g. %s)",
                        len(missing), len(self.scenes), self.root, missing[0])
        for scene in self.scenes:
            if scene not in missing:
                folder = self.root / scene / IMAGES
                names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
                self.images[scene] = sorted(n for n in names if n.endswith(".JPG"))
        return {scene: len(names) for scene, names in self.images.items()}

    def _load_frame(self, sequence: str, frame: int) -> Frame:
        name = self.images[sequence][frame]
        scene = self.root / sequence
        image = read_rgb(scene / IMAGES / name)
        depth = read_raw_depth(scene / DEPTHS / name, *image.size)
        intrinsic, extrinsic = read_cam_npz(scene / CAMS / f"{Path(name).stem}.npz")
        return Frame(image, depth, intrinsic, extrinsic)
