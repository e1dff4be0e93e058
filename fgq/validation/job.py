"""The Fisher-validation job: ``python run.py experiment=fisher_validation`` (dispatched by ``fgq.jobs``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fgq.fisher.compute import FisherConfig
from fgq.fisher.plots import save_scatter
from fgq.schemas import config_object
from fgq.validation.correlation import r_summary
from fgq.validation.measure import fisher_validation

log = logging.getLogger(__name__)


def run_fisher_validation(cfg, out_dir: Path, choices: dict[str, str], group: str | None = None) -> dict:
    """Build the model and the calibration clips as a quantization job does, take the Fisher through the cache
    (``cfg.fisher``), run ``fisher_validation`` with the spec of ``cfg.bits`` and the settings of
    ``cfg.validation`` (``noise``, ``num_clips``, ``noise_bits``, ``wrap``, ``amp``; all optional), write
    ``metrics.json`` and ``fisher_validation.png`` to ``out_dir``, log the r values. Returns the metrics."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from fgq.config import ConfigError, validate
    from fgq.io import write_json_atomic
    from fgq.loggers import finish, log_images, make_loggers
    from fgq.pipeline import build_data, config_digest, peak_memory
    from fgq.runtime import resolve_device

    spec = validate(cfg)
    if spec.is_fp:
        raise ConfigError("bits=w16a16 quantizes nothing: the Fisher validation needs bits < 16 (e.g. bits=w4a4)")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    settings = OmegaConf.to_container(cfg.get("validation") or {}, resolve=True)
    fisher_cfg = config_object(cfg.fisher, "fisher") if cfg.get("fisher") else FisherConfig()
    model = instantiate(cfg.model)
    _, calib = build_data(cfg)
    if calib is None:
        raise ConfigError("the Fisher validation needs calibration clips (calib.source)")
    device = resolve_device(cfg.trainer.accelerator)
    loggers = make_loggers(cfg, out_dir, choices, group, job_type="fisher_validation")
    try:
        from fgq.fisher.cache import fisher_for

        model.to(device)
        t = time.perf_counter()
        fisher, hit = fisher_for(model, calib, fisher_cfg, device)
        fisher_s = time.perf_counter() - t
        log.info("Fisher %s", "loaded from the cache" if hit else "computed")
        result = fisher_validation(
            model, calib, spec, fisher=fisher, device=device, noise=settings.get("noise", "measured"),
            num_clips=settings.get("num_clips"), noise_bits=settings.get("noise_bits"),
            wrap=settings.get("wrap", "plain"), amp=settings.get("amp"), seed=int(settings.get("seed", 0)))
        figure = save_scatter(result, out_dir)
        metrics = {
            "status": "ok",
            "job": "fisher_validation",
            "choices": choices,
            "spec": spec.to_dict(),
            "fisher": {"cache_hit": hit, "time_s": fisher_s, "estimator": fisher_cfg.estimator,
                       "num_clips": fisher_cfg.num_clips},
            "validation": result,
            "r": r_summary(result),
            "figure": figure.name,
            "timings": {"fisher_s": fisher_s, "validation_s": result["time_s"],
                        "total_s": time.perf_counter() - start},
            "peak_memory": peak_memory(),
            "config_digest": config_digest(cfg),
        }
        write_json_atomic(out_dir / "metrics.json", metrics)
        values = {f"validation/{k}": v for k, v in metrics["r"].items()}
        values.update({f"time/{k}": v for k, v in metrics["timings"].items()})
        for logger in loggers:
            logger.log_metrics(values)
            logger.save()
        log_images(loggers, {"validation/scatter": figure})
        for line in format_summary(result):
            log.info(line)
        return metrics
    finally:
        finish(loggers)


def format_summary(result: dict) -> list[str]:
    """Console lines: the r values per task and pooled, for the primary noise model."""
    def fmt(v):
        return "   –  " if v is None else f"{v:+.3f}"

    lines = [f"Fisher validation ({result['noise']} noise, {result['wrap']}, w{result['spec']['w_bits']}"
             f"a{result['spec']['a_bits']}, {len(result['blocks'])} blocks, {result['clips']} clips)",
             f"{'':18s} {'pearson':>8s} {'spearman':>8s} {'pear.log':>8s}"]
    groups = {**result["tasks"], "pooled": result["pooled"], "pooled_normalized": result["pooled_normalized"]}
    for name, r in groups.items():
        lines.append(f"{name:18s} {fmt(r['pearson']):>8s} {fmt(r['spearman']):>8s} {fmt(r['pearson_log10']):>8s}")
    return lines
