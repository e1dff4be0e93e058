"""Procedural multi-view clips with exact ground truth (embedded evaluation/calibration data, training data):
scenes from ``fgq.data.synthetic_scene``, camera paths and the ``SyntheticScenes`` dataset.

Cameras orbit the scene's centre of interest by default (object-centric clips, as Co3D's), travelling either
way round so that relative pose has to be read from the images; ``trajectory="line"`` gives short hand-held
sweeps instead (the dataset fixtures use those).

Extra views of a dataset scene (e.g. for training): ``scene = ds.scene(i)``, then ``scene.render(w2c, K, H, W)`` with
cameras from ``sample_cameras(scene, numpy_rng, ...)`` or any w2c inside the room and outside the objects.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from fgq.data.synthetic_scene import Scene, sample_scene
from fgq.models.geometry import unproject_depth

SPLITS = {"train": 0, "calib": 1, "eval": 2}
TRAJECTORIES = ("orbit", "line")  # camera paths of sample_cameras


def _look_at(position: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """w2c ``[3, 4]`` (OpenCV axes) of a camera at ``position`` looking at ``target``, rolled by ``roll`` radians."""
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    if np.linalg.norm(right) < 1e-3:  # looking straight up or down: any horizontal right vector will do
        right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    c2w = np.stack((c * right + s * down, c * down - s * right, forward), axis=1)
    return np.concatenate((c2w.T, -c2w.T @ position[:, None]), axis=1)


def sample_cameras(scene: Scene, rng: np.random.Generator, *, frames: int = 4, height: int = 112, width: int = 112,
                   trajectory: str = "line", baseline: tuple[float, float] = (0.02, 0.4),
                   arc_deg: tuple[float, float] = (20.0, 90.0),
                   fov_deg: tuple[float, float] = (50.0, 75.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``frames`` cameras inside the room and clear of the objects, each looking near the scene's centre of
    interest. Returns float32 w2c and K. Trajectories:

    * ``line``: a noisy line whose length is ``baseline`` × room size (a hand-held sweep; little rotation);
    * ``orbit``: an arc of ``arc_deg`` degrees around the centre of interest (object-centric, as Co3D's
      turntable-like captures), with jitter in radius and height.
    """
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"sample_cameras: trajectory must be one of {TRAJECTORIES}, got {trajectory!r}")
    size, center = scene.size, scene.center.double().numpy()
    lo, hi = scene.room_lo.double().numpy(), scene.room_hi.double().numpy()
    bounds = scene.bounds.double().numpy()
    margin = 0.04 * size + 0.05  # keeps the nearest surface at a clearly positive depth

    def clear(p: np.ndarray) -> bool:
        inside = bool(np.all(p > lo + margin) and np.all(p < hi - margin))
        return inside and bool(np.all(np.linalg.norm(bounds[:, :3] - p, axis=1) > bounds[:, 3] + margin))

    low = lo + margin + np.array([0.0, 0.15 * (hi[1] - lo[1]), 0.0])
    high = hi - margin - np.array([0.0, 0.15 * (hi[1] - lo[1]), 0.0])
    steps = np.linspace(-0.5, 0.5, frames) if frames > 1 else np.zeros(1)
    if trajectory == "line":
        positions, distance = _line(rng, clear, low, high, center, size, steps, baseline)
    else:
        positions, distance = _orbit(rng, clear, low, high, center, size, steps, arc_deg)
    # Aim and roll: a per-scene part plus a small per-frame jitter (angular, so it does not depend on the distance).
    aim = center + rng.normal(0.0, 0.1 * distance, size=3)
    roll = rng.normal(0.0, 8.0)
    extrinsics = []
    for position in positions:
        target = aim + rng.normal(0.0, 0.03 * distance, size=3)
        frame_roll = math.radians(float(np.clip(roll + rng.normal(0.0, 2.0), -25.0, 25.0)))
        extrinsics.append(_look_at(position, target, frame_roll))
    fx = (width / 2) / math.tan(math.radians(rng.uniform(*fov_deg)) / 2)
    cx, cy = width / 2 + rng.uniform(-0.02, 0.02) * width, height / 2 + rng.uniform(-0.02, 0.02) * height
    k = np.array([[fx, 0.0, cx], [0.0, fx, cy], [0.0, 0.0, 1.0]])
    return (torch.tensor(np.array(extrinsics), dtype=torch.float32),
            torch.tensor(np.repeat(k[None], frames, axis=0), dtype=torch.float32))


def _line(rng: np.random.Generator, clear, low: np.ndarray, high: np.ndarray, center: np.ndarray, size: float,
          steps: np.ndarray, baseline: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Positions along the line and the base point's distance to the centre of interest."""
    for _ in range(1000):
        base = rng.uniform(low, high)
        if clear(base) and np.linalg.norm((base - center)[[0, 2]]) > 0.25 * size:
            break
    else:
        raise RuntimeError("sample_cameras: no free camera position in this scene")
    direction = rng.normal(size=3) * [1.0, 0.3, 1.0]
    direction /= np.linalg.norm(direction)
    offsets = size * rng.uniform(*baseline) * (steps[:, None] * direction + 0.2 * rng.normal(size=(len(steps), 3)))
    positions = []
    for offset in offsets:
        # Pull a blocked position towards the (free) base point until it is free.
        while not clear(base + offset) and np.linalg.norm(offset) > 1e-6:
            offset = 0.7 * offset
        positions.append(base + offset)
    return np.array(positions), float(np.linalg.norm(center - base))


def _orbit(rng: np.random.Generator, clear, low: np.ndarray, high: np.ndarray, center: np.ndarray, size: float,
           steps: np.ndarray, arc_deg: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Positions on the arc and the mean distance to the centre of interest. Rejection sampling of the whole arc;
    the radius range shrinks with failed tries (small rooms, big objects)."""
    tries = 2000
    for attempt in range(tries):
        shrink = 1.0 - 0.7 * attempt / tries
        radius = size * rng.uniform(0.2, 0.45) * shrink
        # Either sense of travel, so that no constant guess of the relative poses beats chance.
        arc = math.radians(rng.uniform(*arc_deg)) * rng.choice((-1.0, 1.0))
        azimuth = rng.uniform(0.0, 2 * math.pi) + arc * steps
        radii = radius * (1.0 + 0.05 * rng.normal(size=len(steps)))
        height = rng.uniform(low[1], high[1]) + 0.03 * size * rng.normal(size=len(steps))
        positions = np.stack((center[0] + radii * np.cos(azimuth), height, center[2] + radii * np.sin(azimuth)), 1)
        if all(clear(p) for p in positions):
            return positions, float(np.linalg.norm(positions - center, axis=1).mean())
    raise RuntimeError("sample_cameras: no free orbit around this scene's centre of interest")


class SyntheticScenes(Dataset):
    """Item i is scene i of ``split`` as a clip (see :mod:`fgq.data.batch`); a pure function of (seed, split, i).

    The scene and its cameras come from separate child seeds, so ``frames``, ``height``, ``width`` and the
    camera settings (``trajectory``, ``baseline``, ``arc_deg``, ``fov_deg``) change the views but not the scene.
    Splits use different seeds and never share a scene."""

    def __init__(self, *, split: str = "eval", num_scenes: int = 16, frames: int = 4, height: int = 112,
                 width: int = 112, seed: int = 0, num_objects: tuple[int, int] = (3, 7),
                 room_size: tuple[float, float] = (3.0, 12.0), trajectory: str = "orbit",
                 baseline: tuple[float, float] = (0.02, 0.4), arc_deg: tuple[float, float] = (20.0, 90.0),
                 fov_deg: tuple[float, float] = (50.0, 75.0)):
        if split not in SPLITS:
            raise ValueError(f"SyntheticScenes: split {split!r} is not one of {sorted(SPLITS)}")
        if height <= 0 or width <= 0 or height % 14 or width % 14:
            raise ValueError(f"SyntheticScenes: height and width must be positive multiples of 14, "
                             f"got {height}×{width}")
        if trajectory not in TRAJECTORIES:
            raise ValueError(f"SyntheticScenes: trajectory must be one of {TRAJECTORIES}, got {trajectory!r}")
        if num_scenes < 0 or frames < 1 or seed < 0:
            raise ValueError(f"SyntheticScenes: need num_scenes ≥ 0, frames ≥ 1, seed ≥ 0 (got {num_scenes}, "
                             f"{frames}, {seed})")
        self.split, self.num_scenes, self.frames, self.height, self.width, self.seed = (
            split, num_scenes, frames, height, width, seed)
        self.num_objects, self.room_size = tuple(num_objects), tuple(room_size)
        self.trajectory, self.baseline, self.arc_deg, self.fov_deg = (
            trajectory, tuple(baseline), tuple(arc_deg), tuple(fov_deg))

    def __len__(self) -> int:
        return self.num_scenes

    def scene_id(self, index: int) -> str:
        """Unique per (seed, split, index): the identity of the generated scene."""
        return f"{self.split}-s{self.seed}-{index:05d}"

    @property
    def sequences(self) -> list[str]:
        """Ids of every scene in this split (checked against eval sets to rule out calibration leakage)."""
        return [self.scene_id(i) for i in range(self.num_scenes)]

    def _seeds(self, index: int) -> list[np.random.SeedSequence]:
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"SyntheticScenes: index {index} out of range for {self.num_scenes} scenes")
        return np.random.SeedSequence([self.seed, SPLITS[self.split], index]).spawn(2)

    def scene(self, index: int) -> Scene:
        return sample_scene(np.random.default_rng(self._seeds(index)[0]), num_objects=self.num_objects,
                            room_size=self.room_size)

    def cameras(self, index: int, scene: Scene | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """w2c ``[S, 3, 4]`` and ``K`` ``[S, 3, 3]`` of item ``index`` (pass its scene to skip re-sampling it)."""
        scene = self.scene(index) if scene is None else scene
        return sample_cameras(scene, np.random.default_rng(self._seeds(index)[1]), frames=self.frames,
                              height=self.height, width=self.width, trajectory=self.trajectory,
                              baseline=self.baseline, arc_deg=self.arc_deg, fov_deg=self.fov_deg)

    def __getitem__(self, index: int) -> dict:
        scene = self.scene(index)
        extrinsics, intrinsics = self.cameras(index, scene)
        out = scene.render(extrinsics, intrinsics, self.height, self.width)
        return {
            "images": out.images, "extrinsics": extrinsics, "intrinsics": intrinsics, "depth": out.depth,
            "valid": out.valid, "world_points": unproject_depth(out.depth, extrinsics, intrinsics),
            "meta": {"dataset": "synthetic", "sequence": self.scene_id(index), "category": "synthetic",
                     "frames": list(range(self.frames))},
        }
