"""``QuantExperiment`` driven by a user's own Lightning Trainer: FP, then calibration + quantized evaluation, with
the same numbers as the pipeline's plain evaluation loop and a direct ``quantize``."""

import lightning as L
import pytest
import torch
from helpers import fixture_vggt
from torch.utils.data import DataLoader

from fgq.data.batch import collate
from fgq.data.synthetic import SyntheticScenes
from fgq.evaluation import evaluate
from fgq.module import QuantExperiment
from fgq.quant import QuantSpec, RTNConfig, quantize

pytestmark = pytest.mark.usefixtures("one_thread")

PROTOCOL = {"tasks": ["camera", "depth", "points"], "depth_align": "median", "depth_align_scope": "sequence",
            "points_source": "depth_camera", "icp": False, "points_stride": 2}
W4A8 = QuantSpec(w_bits=4, a_bits=8)


def _loader(split: str = "eval") -> DataLoader:
    data = SyntheticScenes(split=split, num_scenes=2, frames=2, height=28, width=28)
    return DataLoader(data, batch_size=1, collate_fn=collate)


def _trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, inference_mode=False)


def test_fp_then_quantized_through_a_users_trainer():
    loaders, protocols = {"synthetic": _loader()}, {"synthetic": PROTOCOL}
    calib = list(_loader("calib"))
    exp = QuantExperiment(fixture_vggt(), protocols, RTNConfig(), W4A8, calib=calib)
    _trainer().test(exp, dataloaders=list(loaders.values()), verbose=False)
    assert exp.phase == "fp" and exp.cost is None
    fp, fp_records = evaluate(fixture_vggt(), loaders, protocols, torch.device("cpu"))
    assert exp.results["fp"] == fp and exp.records["fp"] == fp_records
    _trainer().test(exp, dataloaders=list(loaders.values()), verbose=False)
    assert exp.phase == "quant" and exp.cost["quantized_linears"] > 0
    direct = fixture_vggt()
    quantize(direct, RTNConfig(), W4A8)
    assert exp.results["quant"] == evaluate(direct, loaders, protocols, torch.device("cpu"))[0]
    assert exp.results["quant"] != exp.results["fp"]


def test_quantizer_and_spec_come_together():
    with pytest.raises(ValueError, match="both"):
        QuantExperiment(fixture_vggt(), {"synthetic": PROTOCOL}, RTNConfig())


def test_bf16_autocast_evaluation_runs_on_cpu_close_to_fp32():
    loaders, protocols = {"synthetic": _loader()}, {"synthetic": PROTOCOL}
    fp32 = evaluate(fixture_vggt(), loaders, protocols, torch.device("cpu"))[0]
    bf16 = evaluate(fixture_vggt(), loaders, protocols, torch.device("cpu"), precision="bf16-mixed")[0]
    assert bf16 != fp32  # autocast really ran
    # bf16 has 8 bits of mantissa; on 2 tiny clips the depth metric moves by well under 5 % of its value
    assert bf16["synthetic"]["depth"]["abs_rel"] == pytest.approx(fp32["synthetic"]["depth"]["abs_rel"], rel=0.05)
