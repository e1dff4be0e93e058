"""Per-sequence records: every evaluation keeps the values its dataset metrics aggregate, with sequence ids, and the
metrics recomputed from the records equal the reported ones (so intervals can be computed after the fact)."""

import json

import pytest
import torch
from helpers import fixture_vggt
from hydra import compose, initialize_config_module
from torch.utils.data import DataLoader

from fgq.data.batch import collate
from fgq.data.synthetic import SyntheticScenes
from fgq.evaluation import evaluate, metrics_from_records
from fgq.pipeline import run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("pose_averaging", "depth_scope"), [("pooled", "sequence"), ("per_category", "frame")])
def test_metrics_recomputed_from_records_equal_the_reported_ones(pose_averaging, depth_scope):
    data = SyntheticScenes(split="eval", num_scenes=3, frames=3, height=28, width=28)
    loaders = {"synthetic": DataLoader(data, batch_size=2, collate_fn=collate)}
    protocol = {"tasks": ["camera", "depth", "points"], "pose_averaging": pose_averaging,
                "depth_align_scope": depth_scope, "icp": False, "points_stride": 2}
    metrics, records = evaluate(fixture_vggt(), loaders, {"synthetic": protocol}, torch.device("cpu"))
    rows = records["synthetic"]
    assert [r["sequence"] for r in rows["camera"]] == [r["sequence"] for r in rows["points"]] == data.sequences
    assert all(len(r["rot_err_deg"]) == 3 for r in rows["camera"])  # 3 frames: 3 pairs per sequence
    assert len(rows["depth"]) == (3 if depth_scope == "sequence" else 9)
    assert metrics_from_records(rows, protocol) == metrics["synthetic"]
    half = {task: task_rows[:1] for task, task_rows in rows.items()}  # a subset is scored the same way
    assert metrics_from_records(half, protocol) != metrics["synthetic"]


def test_metrics_json_holds_the_records(tmp_path):
    with initialize_config_module("fgq.conf", version_base="1.3"):
        cfg = compose("config", overrides=[
            "quantizer=rtn", "bits=w8a8", "logger=none", "cache=none", "trainer.enable_progress_bar=false",
            "dataset.eval.synthetic.data.num_scenes=2", f"paths.output_dir={tmp_path}/job",
            "calib.num_clips=1"])
    result = run(cfg, tmp_path / "job", {"quantizer": "rtn"})
    saved = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert saved["records"] == result["records"]
    protocol = {k: v for k, v in cfg.dataset.eval.synthetic.protocol.items()}
    for phase in ("fp", "quant"):
        assert metrics_from_records(saved["records"][phase]["synthetic"], protocol) == saved[phase]["synthetic"]
