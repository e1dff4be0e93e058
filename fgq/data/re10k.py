"""RealEstate10K relative-pose benchmark (FGQ Table 7; recons_eval's test list, seq-id map and loader).

On disk (as prepared by recons_eval's ``prepare_re10k.py``): ``{root}/{seq}/images/%04d.png`` (frames extracted at
the metadata timestamps, renamed in timestamp order) and ``{root}/{seq}/annotations.json``, a list of
``{"idx", "filepath" (relative to root), "intrinsics" (3×3 pixels), "extrinsics" (4×4 w2c, OpenCV)}``. The camera
metadata ``RealEstate10K/test/{seq}.txt`` it is built from is read by :func:`read_camera_txt`.

Sequences: those of the test list (``re10k_test_1719.txt``: one id per line), or every prepared folder (sorted)
when ``test_list`` is null — the same set and order for the official data, whose list is sorted. Each clip is one
sequence's ``num_frames`` frames from the pose seq-id map (indices into ``annotations.json``, drawn order kept).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fgq.data import seq_ids
from fgq.data.batch import Clip, make_clip
from fgq.data.co3d import eval_resize_intrinsics
from fgq.data.files import DataError, read_json, read_rgb, require_dir, require_file
from fgq.models.preprocess import eval_resize

log = logging.getLogger(__name__)
ANNOTATIONS = "annotations.json"


def read_camera_txt(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A RealEstate10K camera file: line 1 the video URL, then per frame ``timestamp_µs fx fy cx cy d1 d2`` and the
    3×4 w2c matrix row by row (19 numbers; intrinsics normalised by the image width (fx, cx) and height (fy, cy);
    d1, d2 unused). Returns timestamps ``int64 [N]``, normalised K ``[N, 3, 3]`` and w2c ``[N, 3, 4]`` (float64)."""
    path = Path(path)
    lines = require_file(path).read_text().splitlines()
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        words = line.split()
        if len(words) != 19:
            raise DataError(f"{path}:{number}: expected 19 numbers (timestamp, fx fy cx cy, 2 unused, 3×4 w2c), "
                            f"found {len(words)}")
        try:
            rows.append((int(words[0]), [float(w) for w in words[1:]]))
        except ValueError as err:
            raise DataError(f"{path}:{number}: not a camera line ({err})") from None
    if not rows:
        raise DataError(f"{path}: no camera lines after the URL line")
    timestamps = np.array([r[0] for r in rows], dtype=np.int64)
    values = np.array([r[1] for r in rows], dtype=np.float64)
    k = np.zeros((len(rows), 3, 3))
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = (*values[:, :4].T, 1.0)
    return timestamps, k, values[:, 6:].reshape(-1, 3, 4)


def _read_annotations(path: Path) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list of frames (idx, filepath, intrinsics, extrinsics)")
    for entry in data:
        missing = [key for key in ("filepath", "intrinsics", "extrinsics") if not isinstance(entry, dict)
                   or key not in entry]
        if missing:
            raise DataError(f"{path}: a frame lacks {missing}; re-run the preparation")
    return data


class RealEstate10KPose(Dataset):
    """RealEstate10K relative-pose clips; see the module docstring. ``seq_id_map``: built on first use (seed
    ``seed``, sequences in list order) and reused; drop in recons_eval's ``Re10K_relpose_seq-id-map_seed42.json``
    to evaluate the official frames."""

    def __init__(self, *, root: str | Path, test_list: str | Path | None = None, num_frames: int = 10,
                 seed: int = 42, seq_id_map: str | Path | None = None, width: int = 512, resample: str = "bicubic"):
        self.root = require_dir(root, "dataset.re10k.root")
        if num_frames < 1:
            raise ValueError(f"RealEstate10KPose: num_frames={num_frames} must be ≥ 1")
        self.width, self.resample = width, resample
        if test_list in (None, ""):
            names = sorted(p.name for p in self.root.iterdir() if (p / ANNOTATIONS).is_file())
        else:
            names = [line.strip() for line in require_file(Path(test_list)).read_text().splitlines() if line.strip()]
        missing = [name for name in names if not (self.root / name / ANNOTATIONS).is_file()]
        if missing:
            log.warning("RealEstate10K: %d of %d listed sequences have no %s under %s and are skipped (e.g. %s)",
                        len(missing), len(names), ANNOTATIONS, self.root, missing[0])
        self.frames = {name: _read_annotations(self.root / name / ANNOTATIONS) for name in names
                       if name not in missing}
        lengths = {name: len(frames) for name, frames in self.frames.items()}
        short = [name for name, n in lengths.items() if n < num_frames]
        if short:
            log.warning("RealEstate10K: %d sequences have fewer than %d frames and are skipped (e.g. %s)",
                        len(short), num_frames, short[0])
        mapping = seq_ids.load_or_build(seq_id_map, lambda: seq_ids.pose_map(lengths, num_frames, seed),
                                        "RealEstate10K")
        seq_ids.check_pose_frames(mapping, num_frames, seq_id_map)
        self.map = seq_ids.restrict(mapping, lengths, seq_id_map, "RealEstate10K")
        seq_ids.warn_unmapped([name for name in lengths if name not in short], self.map, seq_id_map, "RealEstate10K")
        self.names = [name for name in lengths if name in self.map]
        if not self.names:
            raise DataError(f"RealEstate10K: no sequence to evaluate under {self.root} (check dataset.re10k.root "
                            f"and the test list)")

    @property
    def sequences(self) -> list[str]:
        return list(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Clip:
        name = self.names[index]
        ids = self.map[name]
        images, extrinsics, intrinsics = [], [], []
        for i in ids:
            frame = self.frames[name][i]
            path = self.root / frame["filepath"]
            pil = read_rgb(path)
            image = eval_resize(pil, width=self.width, resample=self.resample)
            if images and image.shape != images[0].shape:
                raise DataError(f"{path}: image size differs from the sequence's first selected frame")
            w2c = np.array(frame["extrinsics"], dtype=np.float64)
            k = np.array(frame["intrinsics"], dtype=np.float64)
            if w2c.shape not in ((4, 4), (3, 4)) or k.shape != (3, 3):
                raise DataError(f"{self.root / name / ANNOTATIONS}: frame {i} needs a 3×3 intrinsics and a 4×4 "
                                f"extrinsics matrix")
            images.append(image)
            extrinsics.append(w2c[:3])
            # The annotation K is for the first extracted frame's size, which every frame of a video shares.
            intrinsics.append(eval_resize_intrinsics(k, pil.size, image.shape[-2:], self.width))
        meta = {"dataset": "re10k", "sequence": name, "category": "re10k", "frames": list(ids),
                "files": [self.frames[name][i]["filepath"] for i in ids]}
        return make_clip(torch.stack(images), meta, extrinsics=torch.from_numpy(np.stack(extrinsics)),
                         intrinsics=torch.from_numpy(np.stack(intrinsics)))
