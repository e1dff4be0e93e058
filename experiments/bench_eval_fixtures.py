"""Evaluation time per sequence of every real-dataset protocol, on the tiny fixtures written in each format.

    python experiments/bench_eval_fixtures.py [--model vggt_tiny] [--threads 1]

Writes the fixtures to a temporary folder, builds each dataset exactly as ``conf/dataset/<name>.yaml`` does (the
protocol's image widths, alignment, ICP; only the frame strides are shortened to fit the few fixture frames), and
times loading, the FP forward pass and the metrics per sequence (medians over the sequences).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fgq import ROOT
from fgq.data.batch import collate
from fgq.evaluation import DatasetEvaluator

# dataset config → (fixture module, overrides that fit the fixture's few frames / categories)
DATASETS = {
    "co3d": ("co3d", ["dataset.eval.co3d.data.categories=[apple,ball]"]),
    "re10k": ("re10k", []),
    "seven_scenes": ("seven_scenes", ["dataset.eval.seven_scenes.data.kf_every=2"]),
    "dtu": ("dtu", ["dataset.eval.dtu.data.kf_every=2", "dataset.eval.dtu.data.scans=[1,4]"]),
    "eth3d": ("eth3d", ["dataset.eval.eth3d.data.kf_every=2", "dataset.eval.eth3d.data.scenes=[courtyard,pipes]"]),
    "kitti_mono": ("kitti", []),
    "kitti_video": ("kitti", []),
    "nrgbd": ("nrgbd", ["dataset.eval.nrgbd.data.kf_every=2"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vggt_tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("datasets", nargs="*", default=list(DATASETS), help="dataset configs (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="fgq-fixtures-"))
    print(f"{'dataset':13} {'seqs':>4} {'frames':>6} {'input':>9} {'load s':>7} {'forward s':>9} {'metrics s':>9}")
    for name in args.datasets:
        fixture, overrides = DATASETS[name]
        data_dir = tmp / fixture
        if not data_dir.exists():
            importlib.import_module(f"fgq.data.fixtures.{fixture}").write(data_dir)
        # The Co3D fixture holds co3d/ and co3d_annotations/ (the data_dir layout); the others are the root itself.
        root = [] if fixture == "co3d" else [f"dataset.{fixture}.root={data_dir}"]
        with initialize_config_dir(config_dir=str(ROOT / "fgq" / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"model={args.model}", f"dataset={name}", f"paths.data_dir={data_dir}",
                                               f"paths.cache_dir={tmp / 'cache'}", *root, *overrides])
        if "seq_id_map" in cfg.dataset.eval[name].data:
            OmegaConf.update(cfg, f"dataset.eval.{name}.data.seq_id_map", str(tmp / f"{name}_map.json"))
        model = instantiate(cfg.model).eval()
        node = cfg.dataset.eval[name]
        protocol = OmegaConf.to_container(node.protocol, resolve=True)
        data = instantiate(node.data)
        evaluator = DatasetEvaluator(**{k: v for k, v in protocol.items() if k not in ("points_source", "pred_resize")},
                                     name=name)
        load, forward, metrics, frames = [], [], [], 0
        for i in range(len(data)):
            t0 = time.perf_counter()
            batch = collate([data[i]])
            t1 = time.perf_counter()
            with torch.no_grad():
                pred = model(batch["images"])
                size = tuple(batch["depth"].shape[-2:]) if "depth" in batch else None
                geometry = model.geometry(pred, protocol.get("points_source", "depth_camera"), size=size,
                                         resize=protocol.get("pred_resize", "bilinear"))
            t2 = time.perf_counter()
            evaluator.update(geometry, batch)
            t3 = time.perf_counter()
            load.append(t1 - t0), forward.append(t2 - t1), metrics.append(t3 - t2)
            frames += batch["images"].shape[1]
        evaluator.compute()
        h, w = batch["images"].shape[-2:]
        print(f"{name:13} {len(data):4d} {frames:6d} {f'{w}×{h}':>9} {statistics.median(load):7.2f} "
              f"{statistics.median(forward):9.2f} {statistics.median(metrics):9.2f}", flush=True)


if __name__ == "__main__":
    main()
