"""Loggers for one job: W&B (offline unless an API key is configured; never prompts) and CSV."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf


def _api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_mode(requested: str) -> str:
    if requested not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode={requested!r}: use auto, online, offline or disabled")
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if _api_key_configured() else "offline"


def run_name(choices: dict[str, str]) -> str:
    return "-".join(choices.get(k, "?") for k in ("model", "quantizer", "bits"))


def run_tags(choices: dict[str, str], extra: list[str]) -> list[str]:
    tags = [f"{k}:{choices[k]}" for k in ("model", "dataset", "quantizer", "bits", "experiment") if choices.get(k)]
    return tags + [str(t) for t in extra]


def make_loggers(
    cfg: DictConfig, out_dir: Path, choices: dict[str, str], group: str | None, job_type: str | None = None
) -> list[Logger]:
    loggers: list[Logger] = []
    node = cfg.get("logger") or {}
    if node.get("csv") and node.csv.get("enabled", True):
        loggers.append(CSVLogger(save_dir=str(out_dir), name="csv", version=""))
    if node.get("wandb"):
        w = node.wandb
        mode = wandb_mode(w.mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        logger = WandbLogger(
            project=w.project, entity=w.entity, save_dir=str(out_dir), name=w.name or run_name(choices),
            group=w.group or group, job_type=job_type or w.job_type,
            tags=run_tags(choices, list(cfg.get("tags") or [])),
            # ``choices.<group>`` (model, dataset, quantizer, bits, ...) as config keys: the W&B UI groups runs by them
            mode=mode, config={**OmegaConf.to_container(cfg, resolve=True), "choices": choices},
            settings={"console": "off"},
        )
        # Lightning always passes ``anonymous`` (None by default), which current wandb answers with a deprecation
        # warning on every run; the setting has no effect, so it is not passed at all
        logger._wandb_init.pop("anonymous", None)
        loggers.append(logger)
    return loggers


def finish(loggers: list[Logger]) -> None:
    """Close the W&B run of this job (a later job would otherwise log into it)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def log_images(loggers: list[Logger], images: dict[str, Path]) -> None:
    """PNG files to W&B (the CSV logger has no images; the files stay in the job dir)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for key, path in images.items():
                logger.log_image(key=key, images=[str(path)])
