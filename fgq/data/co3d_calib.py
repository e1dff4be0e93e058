"""FGQ's calibration / Fisher clips: random Co3Dv2 frames from the raw image tree (as the official FGQ code draws them).

The sampler of the FGQ code: ``rng = random.Random(seed)``; until ``num_clips`` clips (at most 10 × ``num_clips``
attempts): pick a category (sorted sub-folders of the raw root), pick a sequence, take its ``images/*.jpg|png``
(sorted), skip it if it has fewer than ``frames`` images, else draw ``frames`` of them with ``rng.sample`` (random
order: the reference frame is random too). Images become ``size`` × ``size`` (aspect ratio not preserved, PIL
bilinear as torchvision's ``Resize``) — or, with ``resize: aspect``, go through the evaluation loader at width
``size``. The Fisher pass (32 clips) and calibration (64) share the seed, so one is a prefix of the other.

Two deliberate departures: sequences are listed **sorted** (the official code picks from an unsorted
``os.listdir``, so its clips depend on the file system), and sequences of ``exclude_annotations``'
``{category}_{exclude_split}.jgz`` files are never drawn (the official sampler does not exclude evaluation
sequences). Clips carry images + meta only.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from fgq.data.batch import Clip, make_clip
from fgq.data.files import DataError, read_gzip_json, read_rgb, require_dir
from fgq.models.preprocess import PATCH, eval_resize, to_tensor

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".png")  # the official glob patterns (case-sensitive)


class Co3DCalibClips(Dataset):
    """Calibration clips; see the module docstring. ``clips``: the drawn ``(category, sequence, [file names])``."""

    def __init__(self, *, root: str | Path, num_clips: int = 64, frames: int = 4, size: int = 518,
                 resize: str = "square", seed: int = 42, exclude_annotations: str | Path | None = None,
                 exclude_split: str = "test"):
        self.root = require_dir(root, "calib.sources.co3d.root")
        if resize not in ("square", "aspect"):
            raise ValueError(f"Co3DCalibClips: resize={resize!r}, use square (the paper) or aspect")
        if size < PATCH or size % PATCH:
            raise ValueError(f"Co3DCalibClips: size={size} must be a positive multiple of {PATCH}")
        if num_clips < 1 or frames < 1:
            raise ValueError(f"Co3DCalibClips: need num_clips ≥ 1 and frames ≥ 1 (got {num_clips}, {frames})")
        self.size, self.resize = size, resize
        self.exclude_dir = None if exclude_annotations in (None, "") else require_dir(
            exclude_annotations, "calib.sources.co3d.exclude_annotations")
        self.exclude_split = exclude_split
        self.clips = self._draw(num_clips, frames, random.Random(seed))

    def _draw(self, num_clips: int, frames: int, rng: random.Random) -> list[tuple[str, str, list[str]]]:
        categories = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not categories:
            raise DataError(f"calib.sources.co3d.root={self.root}: no category folders (expected the raw Co3Dv2 tree "
                            f"{{category}}/{{sequence}}/images/*.jpg)")
        listings: dict[str, list[str]] = {}
        clips, attempts = [], 0
        while len(clips) < num_clips and attempts < 10 * num_clips:
            attempts += 1
            category = rng.choice(categories)
            if category not in listings:
                listings[category] = self._candidates(category)
            if not listings[category]:
                continue
            sequence = rng.choice(listings[category])
            image_dir = self.root / category / sequence / "images"
            images = sorted(p.name for p in image_dir.iterdir() if p.suffix in IMAGE_SUFFIXES) \
                if image_dir.is_dir() else []
            if len(images) < frames:
                continue
            clips.append((category, sequence, rng.sample(images, frames)))
        if not clips:
            raise DataError(f"calib.sources.co3d.root={self.root}: no sequence with ≥ {frames} images found in "
                            f"{attempts} attempts (expected {{category}}/{{sequence}}/images/*.jpg)")
        if len(clips) < num_clips:
            log.warning("Co3D calibration: only %d of %d clips found in %d attempts under %s", len(clips),
                        num_clips, attempts, self.root)
        return clips

    def _candidates(self, category: str) -> list[str]:
        """The category's sequence folders, sorted (reproducible, unlike the official unsorted listing), minus
        the sequences of the excluded split."""
        names = sorted(p.name for p in (self.root / category).iterdir() if p.is_dir())
        if self.exclude_dir is None:
            return names
        path = self.exclude_dir / f"{category}_{self.exclude_split}.jgz"
        if not path.is_file():
            raise DataError(f"{path}: missing, so the {self.exclude_split} sequences of '{category}' cannot be kept "
                            f"out of calibration (add the file, remove the folder from the raw root, or set "
                            f"calib.sources.co3d.exclude_annotations=null)")
        excluded = read_gzip_json(path)
        if not isinstance(excluded, dict):
            raise DataError(f"{path}: expected a JSON object {{sequence_name: [frames]}}")
        return [name for name in names if name not in excluded]

    @property
    def sequences(self) -> list[str]:
        """The drawn clips' sequence names (each once, in draw order)."""
        return list(dict.fromkeys(sequence for _, sequence, _ in self.clips))

    def __len__(self) -> int:
        return len(self.clips)

    def _load(self, path: Path) -> torch.Tensor:
        image = read_rgb(path)
        if self.resize == "aspect":
            return eval_resize(image, width=self.size, resample="bicubic")
        return to_tensor(image.resize((self.size, self.size), Image.Resampling.BILINEAR))

    def __getitem__(self, index: int) -> Clip:
        category, sequence, names = self.clips[index]
        folder = self.root / category / sequence / "images"
        images = [self._load(folder / name) for name in names]
        if any(image.shape != images[0].shape for image in images):
            raise DataError(f"{folder}: the clip's images differ in size; use calib.sources.co3d.resize=square")
        meta = {"dataset": "co3d_calib", "sequence": sequence, "category": category, "frames": list(names)}
        return make_clip(torch.stack(images), meta)
