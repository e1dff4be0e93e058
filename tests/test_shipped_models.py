"""The shipped tiny checkpoints (weights/*.safetensors, the defaults of model=vggt_tiny / pi3_tiny) beat trivial
predictors on held-out synthetic scenes. Floors are set from measurements (README, "Embedded default")."""

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fgq.data.batch import collate
from fgq.data.synthetic import SyntheticScenes
from fgq.evaluation import DatasetEvaluator, trivial_geometry

SCENES = 16
# Floors from measurements on these 16 scenes (README, "The embedded default model"). Trivial predictors
# (fgq.evaluation.trivial_geometry): AUC@30 0.128, AbsRel 0.517, Acc 0.559. Measured: pi3_tiny AUC@30 0.423 (×3.3),
# AbsRel 0.255 (×0.49), Acc 0.361 (×0.65); vggt_tiny AUC@30 0.436 (×3.4), AbsRel 0.266 (×0.51), Acc 0.363 (×0.65).
# Pose: AUC@30 ≥ floor × trivial; depth and points (lower is better): metric ≤ floor × trivial.
FLOORS = {"vggt_tiny": {"auc@30": 2.0, "abs_rel": 0.55, "acc_mean": 0.7},
          "pi3_tiny": {"auc@30": 2.0, "abs_rel": 0.5, "acc_mean": 0.7}}


def evaluate(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf" / "model"), version_base="1.3"):
        cfg = compose(name)
    assert cfg.checkpoint and str(cfg.checkpoint).endswith(f"weights/{name}.safetensors")
    model = instantiate(cfg)
    data = SyntheticScenes(split="eval", num_scenes=SCENES)
    ours, trivial = (DatasetEvaluator(points_stride=2, icp=False) for _ in range(2))
    with torch.no_grad():
        for i in range(len(data)):
            batch = collate([data[i]])
            ours.update(model.geometry(model(batch["images"])), batch)
            trivial.update(trivial_geometry(batch), batch)
    return ours.compute(), trivial.compute()


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_shipped_model_beats_trivial_predictors(name):
    ours, trivial = evaluate(name)
    floor = FLOORS[name]
    assert ours["camera"]["auc@30"] >= floor["auc@30"] * trivial["camera"]["auc@30"] > 0
    assert ours["depth"]["abs_rel"] <= floor["abs_rel"] * trivial["depth"]["abs_rel"]
    assert ours["points"]["acc_mean"] <= floor["acc_mean"] * trivial["points"]["acc_mean"]
