"""Cross-view attention supervision used to train the tiny models: exact patch matches and the loss."""

import math

import torch
from torch import nn

from fgq.data.batch import collate
from fgq.data.synthetic import SyntheticScenes
from fgq.training.correspondence import AttentionMatchLoss, patch_matches
from fgq.training.losses import normalize_scene


def test_patch_matches_see_the_same_surface_point():
    gt = normalize_scene(collate([SyntheticScenes(split="calib", num_scenes=2)[i] for i in range(2)]))
    target, visible = patch_matches(gt, 14)
    assert target.shape == visible.shape == (2, 3, 64)
    assert 0.05 < visible.float().mean() < 0.95
    points, depth = gt["world_points"][:, :, 7::14, 7::14].flatten(2, 3), gt["depth"][:, :, 7::14, 7::14].flatten(2)
    matched = torch.stack([points[b, 0][target[b]] for b in range(2)])  # frame-0 point of the matched patch
    gap = (points[:, 1:] - matched).norm(dim=-1) / depth[:, 1:]
    # A match is the patch containing the point, so its centre lies within about half a patch of it.
    assert gap[visible].median() < 0.1 and gap[~visible].median() > 2 * gap[visible].median()


class RiggedAttention(nn.Module):
    """Queries and keys chosen so that every frame-i patch attends to frame-0 patch ``answer``."""

    def __init__(self, answer: torch.Tensor, start: int, patches: int, sharpness: float,
                 every_frame: bool = False) -> None:
        super().__init__()
        self.answer, self.start, self.patches, self.sharpness = answer, start, patches, sharpness
        self.every_frame = every_frame  # the same keys in every frame: frame 0 is indistinguishable

    def heads(self, x: torch.Tensor, pos: torch.Tensor):
        b, n, _ = x.shape
        p = self.start + self.patches
        s = n // p
        q = torch.zeros(b, 1, s, p, self.patches)
        k = torch.zeros(b, 1, s, p, self.patches)
        k[:, 0, : s if self.every_frame else 1, self.start:] = torch.eye(self.patches) * self.sharpness
        q[:, 0, 1:, self.start:] = nn.functional.one_hot(self.answer, self.patches).float()
        return q.flatten(2, 3), k.flatten(2, 3), k.flatten(2, 3)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self.heads(x, pos)
        return x


def test_attention_match_loss_rewards_attending_to_the_match():
    start, patches, frames = 2, 6, 3
    target = torch.randint(0, patches, (1, frames - 1, patches))
    visible = torch.ones_like(target, dtype=torch.bool)
    x, pos = torch.zeros(1, frames * (start + patches), 4), torch.zeros(1, frames * (start + patches), 2)

    def loss(answer: torch.Tensor, sharpness: float = 100.0, keys: str = "first", every_frame: bool = False):
        attn = RiggedAttention(answer, start, patches, sharpness, every_frame)
        match = AttentionMatchLoss([attn], patch_start=start, keys=keys)
        attn(x, pos)
        value = match.loss(target, visible).item()
        match.remove()
        return value

    assert loss(target[0]) < 1e-3
    assert loss((target[0] + 1) % patches) > 10
    assert math.isclose(loss(target[0], sharpness=0.0), math.log(patches), rel_tol=1e-5)  # uniform attention
    assert loss(target[0], keys="all") < 1e-3
    # Matching every frame's copy of the patch equally: fine over frame 0's keys, log(frames) over all keys.
    assert loss(target[0], every_frame=True) < 1e-3
    assert math.isclose(loss(target[0], keys="all", every_frame=True), math.log(frames), rel_tol=1e-3)
    attn = RiggedAttention(target[0], start, patches, 100.0).eval()
    match = AttentionMatchLoss([attn], patch_start=start)
    attn(x, pos)
    assert match.inputs == []  # evaluation passes are not supervised
