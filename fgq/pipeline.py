"""One job: build everything from the config, evaluate FP, quantize, evaluate quantized, write metrics.json."""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from fgq.config import ConfigError, validate
from fgq.data.batch import collate
from fgq.fisher import fisher_to_weights
from fgq.fisher_cache import fisher_for
from fgq.fisher_plots import block_labels, save_fisher_figures
from fgq.io import write_json_atomic
from fgq.loggers import finish, log_images, make_loggers
from fgq.module import QuantExperiment
from fgq.quant import FGQConfig, LoadConfig, QuantSpec, quantize, save_quantized
from fgq.quant.saving import saved_spec

log = logging.getLogger(__name__)
# Lightning's start-up banner (GPU/TPU availability, tips) adds nothing to a PTQ job's log.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")

# The metric each task's relative degradation is reported on, and whether higher is better.
HEADLINE = {"camera": ("auc@30", True), "depth": ("abs_rel", False), "points": ("acc_mean", False)}


def config_digest(cfg: DictConfig) -> str:
    """sha256 of the resolved config, without this job's output location."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.get("paths", {}).pop("output_dir", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def degradation(fp: dict, quant: dict) -> dict:
    """Per dataset and task: the relative change of every metric, and the headline degradation
    (positive = worse, as a fraction of the FP value)."""
    out: dict[str, dict] = {}
    for name, tasks in fp.items():
        out[name] = {}
        for task, values in tasks.items():
            q = quant[name][task]
            rel = {m: (q[m] - v) / abs(v) if v else float("nan") for m, v in values.items() if m in q}
            metric, higher_better = HEADLINE[task]
            entry = {"relative_change": rel}
            if metric in rel:
                entry[f"degradation({metric})"] = -rel[metric] if higher_better else rel[metric]
            out[name][task] = entry
    return out


def _device(accelerator: str) -> str:
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA device is visible (use trainer=cpu)")
        return "cuda"
    return "cpu"


def build_trainer(cfg: DictConfig, out_dir: Path, loggers: list) -> L.Trainer:
    device = _device(cfg.trainer.accelerator)
    precision = cfg.trainer.precision
    if precision == "auto":
        precision = "bf16-mixed" if device == "cuda" else "32-true"
    return L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=cfg.trainer.devices, precision=precision,
        logger=loggers or False, inference_mode=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=cfg.trainer.enable_progress_bar, default_root_dir=str(out_dir), log_every_n_steps=1,
    )


def _sequences(dataset) -> set[str]:
    return set(getattr(dataset, "sequences", []))


def build_data(cfg: DictConfig) -> tuple[dict[str, DataLoader], DataLoader | None]:
    loaders = {}
    for name, node in cfg.dataset.eval.items():
        loaders[name] = DataLoader(instantiate(node.data), batch_size=node.batch_size, collate_fn=collate)
    calib = None
    if cfg.dataset.get("calib"):
        calib_set = instantiate(cfg.dataset.calib)
        for name, loader in loaders.items():
            leaked = _sequences(calib_set) & _sequences(loader.dataset)
            if leaked:
                raise ConfigError(f"calibration data overlaps eval set '{name}' ({len(leaked)} sequences, "
                                  f"e.g. {sorted(leaked)[0]}): calibrate on the training split only")
        calib = DataLoader(calib_set, batch_size=cfg.calib.batch_size, collate_fn=collate)
    return loaders, calib


def fisher_for_job(model, qconfig, spec: QuantSpec, calib, device: torch.device, out_dir: Path, loggers: list):
    """FGQ: the task Fisher (through the cache) and its pictures in the job dir, and whether the cache had it;
    (None, None) for other quantizers."""
    if not isinstance(qconfig, FGQConfig) or spec.is_fp or qconfig.fisher.granularity == "none":
        return None, None
    fc = qconfig.fisher
    fisher, hit = fisher_for(model, calib, fc, device)
    log.info("Fisher %s", "loaded from the cache" if hit else "computed")
    weights = fisher_to_weights(fisher, fc.task_weight_vector(), fc.granularity, fc.floor, fc.normalize)
    paths = save_fisher_figures(fisher, out_dir, block_labels(model.quant_view()), weights=weights)
    log_images(loggers, {f"fisher/{p.stem}": p for p in paths})
    return fisher, hit


def peak_memory() -> dict:
    out = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run(cfg: DictConfig, out_dir: Path, choices: dict[str, str], group: str | None = None) -> dict:
    """Run one job and return what was written to ``out_dir/metrics.json``."""
    spec = validate(cfg)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = instantiate(cfg.model)
    qconfig = instantiate(cfg.quantizer)
    if isinstance(qconfig, LoadConfig):  # a saved quantized model is evaluated with the bits it was made with
        spec = saved_spec(qconfig)
    loaders, calib = build_data(cfg)
    protocols = {name: OmegaConf.to_container(node.protocol, resolve=True) for name, node in cfg.dataset.eval.items()}
    loggers = make_loggers(cfg, out_dir, choices, group)
    try:
        trainer = build_trainer(cfg, out_dir, loggers)
        module = QuantExperiment(model, protocols)
        timings = {}
        t = time.perf_counter()
        trainer.test(module, dataloaders=list(loaders.values()), verbose=False)
        timings["fp_eval_s"] = time.perf_counter() - t
        if spec.is_fp:
            cost = {"quantize_s": 0.0, "note": "bits=w16a16: nothing to quantize, quantized = FP"}
            module.results["quant"] = module.results["fp"]
        else:
            device = torch.device(_device(cfg.trainer.accelerator))  # Lightning's teardown leaves the model on CPU
            module.model.to(device)
            fisher, hit = fisher_for_job(module.model, qconfig, spec, calib, device, out_dir, loggers)
            cost = quantize(module.model, qconfig, spec, calib=calib, fisher=fisher, device=device)
            if fisher is not None:
                cost.setdefault("fisher", {})["cache_hit"] = hit
            if cfg.get("save_quantized") and not isinstance(qconfig, LoadConfig):
                cost["saved"] = str(save_quantized(module.model, cfg.quantizer, spec, out_dir))
            module.phase = "quant"
            t = time.perf_counter()
            trainer.test(module, dataloaders=list(loaders.values()), verbose=False)
            timings["quant_eval_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - start
        fp, quant = module.results["fp"], module.results["quant"]
        result = {
            "status": "ok",
            "choices": choices,
            "spec": spec.to_dict(),
            "fp": fp,
            "quant": quant,
            "degradation": degradation(fp, quant),
            "quantization": cost,
            "timings": timings,
            "peak_memory": peak_memory(),
            "config_digest": config_digest(cfg),
        }
        write_json_atomic(out_dir / "metrics.json", result)
        final = {f"time/{k}": v for k, v in timings.items()}
        final.update({f"degradation/{name}/{task}": value for name, tasks in result["degradation"].items()
                      for task, entry in tasks.items() for key, value in entry.items() if key != "relative_change"})
        for logger in loggers:
            logger.log_metrics(final)
            logger.save()
        return result
    finally:
        finish(loggers)
