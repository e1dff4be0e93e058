"""One job: build everything from the config, evaluate FP, quantize, evaluate quantized, write metrics.json."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import resource
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from fgq.caches import ResultCache, TargetCache, fp_eval_key, fp_targets_key
from fgq.config import ConfigError, calib_node, validate
from fgq.data.batch import collate
from fgq.data.files import DataError
from fgq.evaluation import evaluate
from fgq.io import write_json_atomic
from fgq.loggers import finish, log_images, make_loggers
from fgq.quant import QuantContext, quantize, save_quantized
from fgq.quant.registry import needs_calibration, resolved_spec, saveable
from fgq.runtime import resolve_device, resolve_precision
from fgq.schemas import config_object

log = logging.getLogger(__name__)
# Lightning's start-up banner (GPU/TPU availability, tips) adds nothing to a PTQ job's log.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")

# The metric each task's relative degradation is reported on, and whether higher is better.
HEADLINE = {"camera": ("auc@30", True), "depth": ("abs_rel", False), "points": ("acc_mean", False)}


# Settings that cannot change a job's numbers: a rerun that differs only in these still counts as done (resume).
# ``paths`` matters only through values resolved into other nodes (checkpoint, dataset roots), which stay.
NOT_DIGESTED = ("paths", "logger", "cache", "resume", "tags", "report")


def config_digest(cfg: DictConfig) -> str:
    """sha256 of the resolved config, without this job's output location and the settings of ``NOT_DIGESTED``,
    the progress bar and the Fisher cache's location."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_DIGESTED:
        data.pop(key, None)
    data.get("trainer", {}).pop("enable_progress_bar", None)
    if isinstance(data.get("fisher"), dict):
        data["fisher"].pop("cache_dir", None)
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


def _sequences(dataset) -> set[str]:
    return set(getattr(dataset, "sequences", []))


def _instantiate_data(node: DictConfig):
    """A dataset from its config; a data problem surfaces as its own one-line error, not Hydra's wrapper."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        if isinstance(err.__cause__, DataError):
            raise err.__cause__ from None
        raise


def build_data(cfg: DictConfig, with_calib: bool = True) -> tuple[dict[str, DataLoader], DataLoader | None]:
    """Evaluation loaders and, when asked, the calibration loader (``calib.sources[calib.source]``), after
    proving that no calibration sequence belongs to any evaluation set."""
    loaders = {}
    for name, node in cfg.dataset.eval.items():
        loaders[name] = DataLoader(_instantiate_data(node.data), batch_size=node.batch_size, collate_fn=collate)
    calib = None
    if with_calib:
        calib_set = _instantiate_data(calib_node(cfg))
        for name, loader in loaders.items():
            leaked = _sequences(calib_set) & _sequences(loader.dataset)
            if leaked:
                raise ConfigError(f"calibration data overlaps eval set '{name}' ({len(leaked)} sequences, "
                                  f"e.g. {sorted(leaked)[0]}): calibrate on the training split only")
        calib = DataLoader(calib_set, batch_size=cfg.calib.batch_size, collate_fn=collate)
    return loaders, calib


def _config_object(node: DictConfig, where: str):
    """The group's dataclass; a value it refuses is a config error (one line, before any work)."""
    try:
        return config_object(node, where)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def log_phase(loggers: list, phase: str, results: dict) -> None:
    """``<phase>/<eval set>/<task>/<metric>`` to every logger (the same keys whether computed or cached)."""
    flat = {f"{phase}/{name}/{task}/{metric}": value for name, tasks in results.items()
            for task, values in tasks.items() for metric, value in values.items()}
    for logger in loggers:
        logger.log_metrics(flat)


def evaluate_fp(cfg: DictConfig, model: nn.Module, loaders: dict, protocols: dict, device: torch.device,
                precision: str) -> tuple[dict, dict, bool | None]:
    """The FP metrics and per-sequence records, through the shared cache when ``cache.enabled``, and whether the
    cache had them (``None``: no cache)."""
    cache = cfg.get("cache") or {}
    store = ResultCache(cache["fp_eval"]) if cache.get("enabled") and cache.get("fp_eval") else None
    key = fp_eval_key(cfg, device.type, precision) if store is not None else ""
    cached = store.load(key) if store is not None else None
    if cached is not None:
        log.info("FP evaluation loaded from the cache (%s)", store.path(key).name)
        return cached["metrics"], cached["records"], True
    results, records = evaluate(model, loaders, protocols, device, precision, progress=cfg.trainer.enable_progress_bar)
    if store is not None:
        store.save(key, {"metrics": results, "records": records})
    return results, records, (False if store is not None else None)


def target_store(cfg: DictConfig, device: torch.device, precision: str,
                 calib: DataLoader | None) -> TargetCache | None:
    """The FP block-target cache, when enabled and allowed any size (``cache.fp_targets_max_gb`` > 0)."""
    cache = cfg.get("cache") or {}
    if not (cache.get("enabled") and cache.get("fp_targets") and float(cache.get("fp_targets_max_gb") or 0) > 0):
        return None
    return TargetCache(cache["fp_targets"], fp_targets_key(cfg, device.type, precision),
                       float(cache["fp_targets_max_gb"]),
                       loader=calib)


def environment(device: torch.device, precision: str) -> dict:
    """What can change a job's numbers besides its config: library versions, device, precision and thread count
    (calibrated quantizers differ in the last bits between 1 and 2 threads)."""
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "precision": precision}


def peak_memory() -> dict:
    out = {"cpu_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run(cfg: DictConfig, out_dir: Path, choices: dict[str, str], group: str | None = None,
        explicit: frozenset[str] = frozenset()) -> dict:
    """Run one job and return what was written to ``out_dir/metrics.json``. ``explicit``: the top-level config keys
    the command line set (``bits``: the user asked for these bits, so a reloaded model with other bits is refused).
    Every label (``choices.bits``: console, log, metrics.json, W&B name and tags, sweep tables) is the bits the job
    ran with."""
    spec = validate(cfg)
    device = resolve_device(cfg.trainer.accelerator)
    precision = resolve_precision(cfg.trainer.precision, device)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = instantiate(cfg.model)
    qconfig = _config_object(cfg.quantizer, "quantizer")
    fisher_config = _config_object(cfg.fisher, "fisher") if cfg.get("fisher") else None
    requested, spec = spec, resolved_spec(qconfig, spec)  # e.g. a saved quantized model keeps its own bits
    if spec != requested and "bits" in explicit:
        raise ConfigError(f"the saved model holds {spec.tag} (bits {spec.to_dict()}) but the command asks for "
                          f"{requested.tag}: drop bits=… (a reloaded model keeps its own bits)")
    if choices.get("bits") != spec.tag:
        choices = {**choices, "bits": spec.tag, "bits_preset": choices.get("bits")}
    loaders, calib = build_data(cfg, with_calib=not spec.is_fp and needs_calibration(qconfig))
    protocols = {name: OmegaConf.to_container(node.protocol, resolve=True) for name, node in cfg.dataset.eval.items()}
    model.to(device)
    loggers = make_loggers(cfg, out_dir, choices, group)
    env = environment(device, precision)
    for logger in loggers:
        logger.log_hyperparams({"environment": env})
    try:
        timings = {}
        t = time.perf_counter()
        fp, fp_records, hit = evaluate_fp(cfg, model, loaders, protocols, device, precision)
        log_phase(loggers, "fp", fp)
        hits = {"fp_eval": hit, "fp_targets": None, "fisher": None}
        timings["fp_eval_s"] = time.perf_counter() - t
        if spec.is_fp:
            cost = {"quantize_s": 0.0, "note": "bits=w16a16: nothing to quantize, quantized = FP"}
            quant, quant_records = fp, fp_records
        else:
            log.info("quantizing: quantizer=%s bits=%s", choices.get("quantizer"), choices.get("bits"))
            context = QuantContext(
                calib=calib, device=device, precision=precision,
                target_store=target_store(cfg, device, precision, calib),
                use_caches=bool((cfg.get("cache") or {}).get("enabled", True)), fisher_config=fisher_config,
                out_dir=out_dir, log_images=lambda images: log_images(loggers, images))
            cost = quantize(model, qconfig, spec, context)
            hits["fp_targets"] = (cost.get("fp_targets") or {}).get("hit")
            hits["fisher"] = (cost.get("fisher") or {}).get("cache_hit")  # None: no Fisher, or no cache
            if cfg.get("save_quantized") and saveable(qconfig):
                cost["saved"] = str(save_quantized(model, qconfig, spec, out_dir))
            t = time.perf_counter()
            quant, quant_records = evaluate(model, loaders, protocols, device, precision,
                                            progress=cfg.trainer.enable_progress_bar, phase="quantized")
            log_phase(loggers, "quant", quant)
            timings["quant_eval_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - start
        result = {
            "status": "ok",
            "choices": choices,
            "checkpoint": cfg.model.get("checkpoint"),
            "spec": spec.to_dict(),
            "fp": fp,
            "quant": quant,
            "degradation": degradation(fp, quant),
            "quantization": cost,
            "timings": timings,
            "peak_memory": peak_memory(),
            "cache_hits": hits,
            "environment": env,
            "config_digest": config_digest(cfg),
            # per eval set and task, the per-sequence values the metrics aggregate (DatasetEvaluator.records), and
            # the protocols that aggregate them: intervals are computed from these after the fact (fgq.sweeps)
            "records": {"fp": fp_records, "quant": quant_records},
            "protocols": protocols,
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
