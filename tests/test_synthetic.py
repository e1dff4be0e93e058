"""Procedural scenes: batch contract, determinism, disjoint splits, exact geometry and enough visual richness."""

import pytest
import torch

from fgq.data.batch import check_clip, collate
from fgq.data.synthetic import SyntheticScenes
from fgq.data.synthetic_scene import ROOM_FACES
from fgq.models import geometry as G

N = 6  # scenes per check: enough to average over, small enough to stay fast


@pytest.fixture(scope="module")
def dataset() -> SyntheticScenes:
    return SyntheticScenes(split="eval", num_scenes=N)


@pytest.fixture(scope="module")
def clips(dataset: SyntheticScenes) -> list[dict]:
    return [dataset[i] for i in range(N)]


def test_contract_dtypes_and_ranges(clips: list[dict]):
    for i, clip in enumerate(clips):
        check_clip(clip, f"synthetic[{i}]")
        assert clip["images"].shape == (4, 3, 112, 112)
        for key in ("images", "extrinsics", "intrinsics", "depth", "world_points"):
            assert clip[key].dtype == torch.float32, key
            assert torch.isfinite(clip[key]).all(), key
        assert clip["images"].min() >= 0.0 and clip["images"].max() <= 1.0
        assert clip["valid"].all()  # closed room: every ray hits something
        assert clip["depth"].min() > 0.05
        k = clip["intrinsics"]
        assert (k[:, 0, 0] > 0).all() and (k[:, 2] == torch.tensor([0.0, 0.0, 1.0])).all()
        assert ((k[:, 0, 2] - 56).abs() < 5).all() and ((k[:, 1, 2] - 56).abs() < 5).all()
        assert clip["meta"] == {"dataset": "synthetic", "sequence": f"eval-s0-{i:05d}", "category": "synthetic",
                                "frames": [0, 1, 2, 3]}
        # frame 0 is not the world frame: models must learn relative poses
        assert not torch.allclose(clip["extrinsics"][0], torch.eye(3, 4), atol=1e-2)
    batch = collate(clips[:2])
    assert batch["images"].shape == (2, 4, 3, 112, 112) and len(batch["meta"]) == 2


def test_size_and_split_validation():
    with pytest.raises(ValueError, match="multiples of 14"):
        SyntheticScenes(height=100)
    with pytest.raises(ValueError, match="multiples of 14"):
        SyntheticScenes(width=113)
    with pytest.raises(ValueError, match="split"):
        SyntheticScenes(split="test")
    with pytest.raises(IndexError):
        SyntheticScenes(num_scenes=2)[2]
    clip = SyntheticScenes(num_scenes=1, frames=2, height=56, width=84)[0]
    assert check_clip(clip)["depth"].shape == (2, 56, 84)


def test_deterministic_per_seed(clips: list[dict]):
    again = SyntheticScenes(split="eval", num_scenes=2)
    for i in range(2):
        for key in ("images", "extrinsics", "intrinsics", "depth", "valid", "world_points"):
            assert torch.equal(again[i][key], clips[i][key]), key
    other = SyntheticScenes(split="eval", num_scenes=1, seed=1)[0]
    assert not torch.equal(other["images"], clips[0]["images"])
    # the scene does not depend on how it is viewed
    assert torch.equal(SyntheticScenes(frames=2).scene(3).room_hi, SyntheticScenes(frames=4).scene(3).room_hi)


def test_splits_are_disjoint():
    splits = {s: SyntheticScenes(split=s, num_scenes=4) for s in ("train", "calib", "eval")}
    ids = [ds.scene_id(i) for ds in splits.values() for i in range(4)]
    assert len(set(ids)) == len(ids) and splits["calib"].scene_id(3) == "calib-s0-00003"
    rooms = [tuple(ds.scene(i).room_hi.tolist()) for ds in splits.values() for i in range(4)]
    assert len(set(rooms)) == len(rooms)


def test_world_points_are_unprojected_depth(clips: list[dict]):
    for clip in clips:
        expected = G.unproject_depth(clip["depth"], clip["extrinsics"], clip["intrinsics"])
        assert torch.allclose(clip["world_points"], expected, rtol=1e-4, atol=1e-5)


def test_rotations_are_proper(clips: list[dict]):
    for clip in clips:
        rot = clip["extrinsics"][:, :, :3]
        assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3).expand_as(rot), atol=1e-5)
        assert torch.allclose(torch.linalg.det(rot), torch.ones(len(rot)), atol=1e-5)


def test_rendered_depth_matches_ray_geometry(clips: list[dict]):
    """The camera-frame point of every pixel lies on that pixel's ray: reprojecting it lands on the pixel."""
    clip = clips[0]
    cam = G.world_to_camera(clip["world_points"], clip["extrinsics"])
    uv = G.project(cam.reshape(4, -1, 3), clip["intrinsics"]).reshape(4, 112, 112, 2)
    v, u = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")
    assert torch.allclose(uv, torch.stack((u, v), -1).expand_as(uv), atol=1e-2)
    assert torch.allclose(cam[..., 2], clip["depth"], rtol=1e-4)


def test_views_show_the_same_scene(clips: list[dict]):
    """Frame 0's points, moved into frame 1, agree with frame 1's own depth wherever they are visible there."""
    fractions = []
    for clip in clips:
        ext, k, depth = clip["extrinsics"], clip["intrinsics"], clip["depth"]
        cam = G.world_to_camera(clip["world_points"][0], ext[1]).reshape(-1, 3)
        uv = G.project(cam, k[1]).round().long()
        inside = (cam[:, 2] > 0) & (uv >= 0).all(-1) & (uv[:, 0] < 112) & (uv[:, 1] < 112)
        uv = uv[inside]
        seen = depth[1, uv[:, 1], uv[:, 0]]
        agree = ((cam[inside, 2] - seen).abs() < 0.02 * seen).sum()
        fractions.append(agree.item() / cam.shape[0])
    assert sum(fractions) / len(fractions) > 0.2, fractions


def test_scenes_are_rich(dataset: SyntheticScenes, clips: list[dict]):
    objects_seen = []
    for i, clip in enumerate(clips):
        assert (clip["images"].std(dim=(1, 2, 3)) > 0.05).all()
        ids = dataset.scene(i).render(clip["extrinsics"], clip["intrinsics"], 112, 112).ids
        objects_seen += [len(frame[frame >= ROOM_FACES].unique()) for frame in ids]
    depth = torch.stack([c["depth"] for c in clips])
    ratio = depth.amax(dim=(-1, -2)) / depth.amin(dim=(-1, -2))
    assert ratio.mean() > 1.5
    assert sum(objects_seen) / len(objects_seen) >= 3, objects_seen


def test_render_reproduces_the_item(dataset: SyntheticScenes, clips: list[dict]):
    extrinsics, intrinsics = dataset.cameras(2)
    out = dataset.scene(2).render(extrinsics, intrinsics, 112, 112)
    assert torch.equal(out.images, clips[2]["images"]) and torch.equal(out.depth, clips[2]["depth"])


def test_orbit_and_line_trajectories():
    """Orbit (the default): cameras on an arc of 20–90° around the centre of interest, travelled either way
    (no constant guess of the relative pose beats chance). Line: a short sweep with much less rotation."""
    orbit = SyntheticScenes(split="eval", num_scenes=20)
    line = SyntheticScenes(split="eval", num_scenes=20, trajectory="line")
    senses, spans, spreads = [], [], []
    for i in range(20):
        scene, (w2c, _) = orbit.scene(i), orbit.cameras(i)
        offset = (G.closed_form_inverse_se3(w2c)[:, :3, 3] - scene.center)[:, [0, 2]]
        azimuth = torch.atan2(offset[:, 1], offset[:, 0])
        steps = torch.remainder(azimuth.diff() + torch.pi, 2 * torch.pi) - torch.pi
        assert (steps.sign() == steps[0].sign()).all()
        senses.append(steps[0].sign().item())
        spans.append(steps.sum().abs().rad2deg().item())
        radius = offset.norm(dim=-1)
        spreads.append((radius.max() / radius.min()).item())
    assert set(senses) == {-1.0, 1.0}
    assert min(spans) > 18.0 and max(spans) < 95.0, spans
    assert max(spreads) < 1.5, spreads

    def median_rotation(ds: SyntheticScenes) -> float:
        angles = [G.rotation_angle_deg(w2c[0, :, :3].T @ w2c[-1, :, :3]) for w2c, _ in map(ds.cameras, range(20))]
        return torch.stack(angles).median().item()

    assert median_rotation(orbit) > 2 * median_rotation(line)
    with pytest.raises(ValueError, match="trajectory"):
        SyntheticScenes(num_scenes=1, trajectory="spiral")
