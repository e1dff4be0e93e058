"""Procedural scenes with exact ground truth for the synthetic dataset (``fgq.data.synthetic``).

A scene is a closed axis-aligned room (floor, ceiling, four walls) holding spheres, boxes and capped cylinders
(boxes and cylinders may be rotated). Every surface has a solid texture — a sum of sinusoids and soft square
waves at several scales, defined in world coordinates — so a surface point has the same colour in every view.
Rendering is analytic ray casting in torch: all pixels of a frame against all primitives at once, nearest
positive hit, Lambertian shading from one directional light plus ambient.

World frame: the room's, y up, floor at y = 0, room centred on x = z = 0. Cameras are w2c with OpenCV axes and
follow :mod:`fgq.models.geometry`: pixel (u, v) at integer coordinates, camera ray ((u − cx)/fx, (v − cy)/fy, 1),
so the ray parameter of a hit is its z-depth.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from fgq.models.geometry import quat_to_mat

ROOM_FACES = 6  # primitive ids 0..5: room faces x−, x+, floor, ceiling, z−, z+; then spheres, boxes, cylinders
TEXTURE_TERMS = 8
_EPS = 1e-4  # smallest accepted ray parameter (= z-depth) of a hit
_TINY = 1e-12  # replaces zero direction components so slab divisions never produce 0/0
_INF = float("inf")


class Rendering(NamedTuple):
    images: torch.Tensor  # [S, 3, H, W] float32 in [0, 1]
    depth: torch.Tensor  # [S, H, W] float32 z-depth, 0 where nothing was hit
    valid: torch.Tensor  # [S, H, W] bool
    ids: torch.Tensor  # [S, H, W] int64 primitive id (see ROOM_FACES), -1 where nothing was hit


@dataclass
class Scene:
    """One room, its objects and their materials; float32 CPU tensors. Material m belongs to primitive id m."""

    room_lo: torch.Tensor  # [3]
    room_hi: torch.Tensor  # [3]
    size: float  # characteristic room size in scene units
    center: torch.Tensor  # [3] centre of interest the cameras look at
    bounds: torch.Tensor  # [O, 4] bounding sphere (centre, radius) of every object, for camera placement
    sphere_center: torch.Tensor  # [Ns, 3]
    sphere_radius: torch.Tensor  # [Ns]
    box_center: torch.Tensor  # [Nb, 3]
    box_rot: torch.Tensor  # [Nb, 3, 3] columns: the box axes in world coordinates
    box_half: torch.Tensor  # [Nb, 3]
    cyl_center: torch.Tensor  # [Nc, 3]
    cyl_rot: torch.Tensor  # [Nc, 3, 3] column 1 is the cylinder axis
    cyl_radius: torch.Tensor  # [Nc]
    cyl_half: torch.Tensor  # [Nc] half height
    tex_base: torch.Tensor  # [M, 3] base colour
    tex_freq: torch.Tensor  # [M, K, 3] angular frequency vectors
    tex_phase: torch.Tensor  # [M, K]
    tex_sharp: torch.Tensor  # [M, K] 1 ≈ sine, larger → square wave
    tex_colour: torch.Tensor  # [M, K, 3] colour each wave adds
    light: torch.Tensor  # [3] unit vector towards the light
    ambient: float

    def render(self, extrinsics: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> Rendering:
        """Render views: w2c ``[S, 3, 4]`` and ``K`` ``[S, 3, 3]`` (pixels of a height × width image)."""
        v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                              indexing="ij")
        frames = [self._render_frame(e, k, u.reshape(-1), v.reshape(-1))
                  for e, k in zip(extrinsics.float(), intrinsics.float(), strict=True)]
        s = len(frames)
        images, depth, valid, ids = (torch.stack(x) for x in zip(*frames, strict=True))
        grid = (s, height, width)
        return Rendering(images.reshape(*grid, 3).permute(0, 3, 1, 2).contiguous(), depth.reshape(grid),
                         valid.reshape(grid), ids.reshape(grid))

    def _render_frame(self, extrinsic: torch.Tensor, k: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
        rot, trans = extrinsic[:, :3], extrinsic[:, 3]
        origin = -rot.T @ trans
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        ray_cam = torch.stack(((u - cx) / fx, (v - cy) / fy, torch.ones_like(u)), dim=-1)
        dirs = ray_cam @ rot  # rotᵀ · ray per row; unnormalised, so the hit parameter t is the z-depth
        hits = (
            _hit_room(origin, dirs, self.room_lo, self.room_hi),
            _hit_spheres(origin, dirs, self.sphere_center, self.sphere_radius),
            _hit_boxes(origin, dirs, self.box_center, self.box_rot, self.box_half),
            _hit_cylinders(origin, dirs, self.cyl_center, self.cyl_rot, self.cyl_radius, self.cyl_half),
        )
        t_all = torch.cat([h[0] for h in hits], dim=1)
        normals = torch.cat([h[1] for h in hits], dim=1)
        t, ids = t_all.min(dim=1)
        valid = torch.isfinite(t)
        t = torch.where(valid, t, torch.zeros_like(t))
        normal = normals[torch.arange(len(ids)), ids]
        points = origin + t[:, None] * dirs
        albedo = self._albedo(points, ids, footprint=t / fx)
        shade = self.ambient + (1.0 - self.ambient) * (normal @ self.light).clamp_min(0.0)
        rgb = torch.where(valid[:, None], (albedo * shade[:, None]).clamp(0.0, 1.0), torch.zeros_like(albedo))
        return rgb, t, valid, torch.where(valid, ids, -1)

    def _albedo(self, points: torch.Tensor, ids: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
        freq = self.tex_freq[ids]
        wave = torch.sin((freq * points[:, None]).sum(-1) + self.tex_phase[ids])
        sharp = self.tex_sharp[ids]
        wave = torch.tanh(sharp * wave) / torch.tanh(sharp)
        # Gaussian pre-filter of ~0.7 px: waves finer than a pixel fade to their mean instead of aliasing.
        wave = wave * torch.exp(-0.5 * (freq.norm(dim=-1) * 0.7 * footprint[:, None]) ** 2)
        return (self.tex_base[ids] + (wave[..., None] * self.tex_colour[ids]).sum(1)).clamp(0.0, 1.0)


def _to_local(origin: torch.Tensor, dirs: torch.Tensor, center: torch.Tensor, rot: torch.Tensor):
    """Ray origin ``[P, 3]`` and directions ``[N, P, 3]`` in each primitive's frame (rot columns = its axes)."""
    local_o = torch.einsum("pc,pcj->pj", origin - center, rot)
    local_d = torch.einsum("nc,pcj->npj", dirs, rot)
    return local_o, torch.where(local_d.abs() < _TINY, torch.full_like(local_d, _TINY), local_d)


def _to_world(normal: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    return torch.einsum("npj,pij->npi", normal, rot)


def _hit_room(origin: torch.Tensor, dirs: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """From inside the room the nearest positive plane hit among the six faces is the exit face."""
    planes = torch.stack((lo, hi), dim=-1).reshape(6)
    axis = torch.tensor([0, 0, 1, 1, 2, 2])
    t = (planes - origin[axis]) / dirs[:, axis]
    t = torch.where(t > _EPS, t, _INF)
    inward = torch.zeros(6, 3)
    inward[torch.arange(6), axis] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    return t, inward.expand(len(dirs), 6, 3)


def _hit_spheres(origin: torch.Tensor, dirs: torch.Tensor, center: torch.Tensor, radius: torch.Tensor):
    oc = origin - center
    a = (dirs * dirs).sum(-1, keepdim=True)
    b = dirs @ oc.T
    disc = b * b - a * ((oc * oc).sum(-1) - radius**2)
    t = (-b - disc.clamp_min(0.0).sqrt()) / a  # the near root: cameras are never inside an object
    t = torch.where((disc >= 0) & (t > _EPS), t, _INF)
    normal = (origin + t[..., None] * dirs[:, None] - center) / radius[:, None]
    return t, normal


def _hit_boxes(origin: torch.Tensor, dirs: torch.Tensor, center: torch.Tensor, rot: torch.Tensor,
               half: torch.Tensor):
    o, d = _to_local(origin, dirs, center, rot)
    t1, t2 = (-half - o) / d, (half - o) / d  # slab method
    t_in, axis = torch.minimum(t1, t2).max(dim=-1)
    t_out = torch.maximum(t1, t2).amin(dim=-1)
    t = torch.where((t_in <= t_out) & (t_in > _EPS), t_in, _INF)
    normal = -torch.sign(d) * torch.nn.functional.one_hot(axis, 3).to(d.dtype)
    return t, _to_world(normal, rot)


def _hit_cylinders(origin: torch.Tensor, dirs: torch.Tensor, center: torch.Tensor, rot: torch.Tensor,
                   radius: torch.Tensor, half: torch.Tensor):
    o, d = _to_local(origin, dirs, center, rot)
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    # Side: the near root of the infinite cylinder, kept where it lies between the caps.
    a = dx * dx + dz * dz
    b = ox * dx + oz * dz
    disc = b * b - a * (ox * ox + oz * oz - radius**2)
    t_side = (-b - disc.clamp_min(0.0).sqrt()) / a
    side_ok = (disc >= 0) & (t_side > _EPS) & ((oy + t_side * dy).abs() <= half)
    t_side = torch.where(side_ok, t_side, _INF)
    # Cap: only the cap facing the ray can be an entry point.
    cap_y = -torch.sign(dy) * half
    t_cap = (cap_y - oy) / dy
    cap_ok = (t_cap > _EPS) & ((ox + t_cap * dx) ** 2 + (oz + t_cap * dz) ** 2 <= radius**2)
    t_cap = torch.where(cap_ok, t_cap, _INF)
    t = torch.minimum(t_side, t_cap)
    side_n = torch.stack((ox + t * dx, torch.zeros_like(t), oz + t * dz), dim=-1) / radius[:, None]
    cap_n = torch.stack((torch.zeros_like(t), torch.sign(cap_y), torch.zeros_like(t)), dim=-1)
    normal = torch.where((t_cap < t_side)[..., None], cap_n, side_n)
    return t, _to_world(normal, rot)


def _rotation(rng: np.random.Generator, tilt_prob: float) -> np.ndarray:
    """A random yaw about the world up axis, followed with probability ``tilt_prob`` by a uniform rotation."""
    yaw = rng.uniform(0.0, 2 * math.pi)
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    if rng.random() < tilt_prob:
        rot = rot @ quat_to_mat(torch.from_numpy(rng.normal(size=4))).numpy()
    return rot


def _materials(rng: np.random.Generator, count: int, size: float) -> dict[str, np.ndarray]:
    """Distinct base colours (hues spread by the golden ratio; pale room, saturated objects) and multi-scale waves."""
    hue0 = rng.random()
    base = np.array([
        colorsys.hsv_to_rgb((hue0 + 0.618034 * m) % 1.0, rng.uniform(*((0.1, 0.45) if m < ROOM_FACES else (0.45, 0.9))),
                            rng.uniform(0.45, 0.85))
        for m in range(count)
    ])
    direction = rng.normal(size=(count, TEXTURE_TERMS, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    period = size * np.exp(rng.uniform(math.log(1 / 60), math.log(1 / 3), size=(count, TEXTURE_TERMS, 1)))
    # Mostly brightness variation, little chroma on the room; finer waves are fainter so shading stays visible.
    chroma = np.where(np.arange(count) < ROOM_FACES, 0.03, 0.06)[:, None, None]
    colour = chroma * rng.normal(size=(count, TEXTURE_TERMS, 3)) + 0.08 * rng.normal(size=(count, TEXTURE_TERMS, 1))
    colour *= (3 * period / size) ** 0.3
    return {
        "tex_base": base, "tex_freq": direction * (2 * math.pi / period),
        "tex_phase": rng.uniform(0.0, 2 * math.pi, size=(count, TEXTURE_TERMS)),
        "tex_sharp": rng.choice([1.0, 6.0], p=[0.7, 0.3], size=(count, TEXTURE_TERMS)), "tex_colour": colour,
    }


def sample_scene(rng: np.random.Generator, *, num_objects: tuple[int, int] = (3, 7),
                 room_size: tuple[float, float] = (3.0, 12.0)) -> Scene:
    """A random room (size uniform in ``room_size``) with ``num_objects`` (inclusive range) objects."""
    size = rng.uniform(*room_size)
    extent = size * np.array([rng.uniform(0.8, 1.2), rng.uniform(0.5, 0.8), rng.uniform(0.8, 1.2)])
    lo = np.array([-extent[0] / 2, 0.0, -extent[2] / 2])
    objects: dict[str, list] = {"sphere": [], "box": [], "cylinder": []}
    bounds: list[np.ndarray] = []
    for _ in range(rng.integers(num_objects[0], num_objects[1] + 1)):
        kind = ("sphere", "box", "cylinder")[rng.choice(3, p=[0.35, 0.4, 0.25])]
        scale = extent.min() * rng.uniform(0.08, 0.2)
        if kind == "sphere":
            rot, shape = np.eye(3), np.array([scale * rng.uniform(0.7, 1.2)])
            bound = vertical = shape[0]
        elif kind == "box":
            rot = _rotation(rng, tilt_prob=0.3) if rng.random() < 0.75 else np.eye(3)
            shape = scale * rng.uniform(0.5, 1.3, size=3)
            bound, vertical = np.linalg.norm(shape), np.abs(rot[1]) @ shape
        else:
            rot = _rotation(rng, tilt_prob=0.4)
            shape = scale * np.array([rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.8)])  # radius, half height
            up = abs(rot[1, 1])
            bound, vertical = np.hypot(*shape), shape[1] * up + shape[0] * math.sqrt(max(0.0, 1 - up * up))
        # A few tries to avoid heavy interpenetration; the last try is kept either way (touching is fine).
        for _ in range(30):
            xz = rng.uniform(-0.75, 0.75, size=2) * (extent[[0, 2]] / 2 - bound)
            on_floor = rng.random() < 0.6
            y = vertical if on_floor else rng.uniform(vertical, max(vertical, extent[1] - vertical))
            center = np.array([xz[0], y, xz[1]])
            if all(np.linalg.norm(center - b[:3]) > 0.8 * (bound + b[3]) for b in bounds):
                break
        objects[kind].append((center, rot, shape))
        bounds.append(np.array([*center, bound]))
    spheres, boxes, cylinders = objects["sphere"], objects["box"], objects["cylinder"]
    count = ROOM_FACES + len(bounds)
    light = np.array([rng.uniform(-1, 1), rng.uniform(0.6, 1.5), rng.uniform(-1, 1)])
    center = np.mean([b[:3] for b in bounds], axis=0) if bounds else lo + extent / 2

    def tensor(rows: list, width: tuple[int, ...]) -> torch.Tensor:
        return torch.tensor(np.array(rows).reshape(-1, *width), dtype=torch.float32)

    return Scene(
        room_lo=tensor([lo], (3,))[0], room_hi=tensor([lo + extent], (3,))[0], size=float(size),
        center=tensor([center], (3,))[0], bounds=tensor(bounds, (4,)),
        sphere_center=tensor([o[0] for o in spheres], (3,)), sphere_radius=tensor([o[2][0] for o in spheres], ()),
        box_center=tensor([o[0] for o in boxes], (3,)), box_rot=tensor([o[1] for o in boxes], (3, 3)),
        box_half=tensor([o[2] for o in boxes], (3,)),
        cyl_center=tensor([o[0] for o in cylinders], (3,)), cyl_rot=tensor([o[1] for o in cylinders], (3, 3)),
        cyl_radius=tensor([o[2][0] for o in cylinders], ()), cyl_half=tensor([o[2][1] for o in cylinders], ()),
        **{k: torch.tensor(a, dtype=torch.float32) for k, a in _materials(rng, count, size).items()},
        light=torch.tensor(light / np.linalg.norm(light), dtype=torch.float32), ambient=float(rng.uniform(0.3, 0.5)),
    )
