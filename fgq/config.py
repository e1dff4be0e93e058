"""Config helpers: a check of group choices before Hydra composes (one clear line
instead of Hydra's multi-line report), and validation of the composed config before any work starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fgq import CONF_DIR
from fgq.errors import ConfigError
from fgq.quant.spec import QuantSpec

__all__ = ["ConfigError", "calib_node", "check_choices", "check_seed", "group_options", "quant_spec", "validate"]


def group_options(group: str) -> list[str]:
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def check_choices(overrides: Sequence[str]) -> None:
    """Raise ``ConfigError`` for a command-line choice of a config group that has no file, e.g.
    ``quantizer=foo`` or ``bits=w8a8,w5a5``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as err:  # Hydra's own grammar errors are already clear; surface them as one line
        raise ConfigError(str(err).splitlines()[0]) from None
    for override in parsed:
        group = override.key_or_group
        if override.package or override.is_delete() or not (CONF_DIR / group).is_dir():
            continue
        # glob(...) selects among the existing options only; Hydra's own groups (hydra/launcher=...) also have
        # options registered by plugins, which Hydra checks itself
        if isinstance(override.value(), Glob) or group.startswith("hydra/"):
            continue
        options = group_options(group)
        values = [str(v) for v in override.sweep_string_iterator()] if override.is_sweep_override() else (
            [str(v) for v in override.value()] if isinstance(override.value(), list) else [str(override.value())]
        )
        for value in values:
            if value not in options and value != "null":
                raise ConfigError(f"unknown {group} '{value}': choose one of {', '.join(options)} (fgq/conf/{group}/)")


DATASET_ALIASES = ("root", "annotations")  # dataset.<alias> is the short form of dataset.<name>.<alias>


def _check_aliases(dataset: dict) -> None:
    """The short form ``dataset.root=PATH`` is resolved by each namespace's ``${oc.select:dataset.root,…}``; it must
    reach exactly one namespace (one dataset, or several sharing one namespace such as kitti_mono + kitti_video)."""
    for alias in DATASET_ALIASES:
        if dataset.get(alias) in (None, "???"):
            continue
        owners = [k for k, v in dataset.items() if k != "eval" and isinstance(v, dict) and alias in v]
        if len(owners) != 1:
            raise ConfigError(f"dataset.{alias}: name the dataset, e.g. dataset.<name>.{alias}=PATH (the short form "
                              f"needs exactly one dataset with a {alias} setting; here: {', '.join(owners) or 'none'})")


def quant_spec(cfg: DictConfig) -> QuantSpec:
    try:
        return QuantSpec(**OmegaConf.to_container(cfg.bits, resolve=True))
    except TypeError as err:
        raise ConfigError(f"bits: {err}") from None
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_roots(node: object, where: str) -> None:
    """Every ``root``/``annotations`` path a dataset names must be set and exist."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if where == "dataset" and key in DATASET_ALIASES:
            continue  # the short form, checked by _check_aliases
        if key in ("root", "annotations"):
            if value in (None, "", "???"):
                raise ConfigError(f"{where}.{key} is not set: give the dataset's location ({where}.{key}=PATH)")
            if not Path(str(value)).exists():
                raise ConfigError(f"{where}.{key}={value}: no such file or directory (set {where}.{key}=PATH)")
        else:
            _check_roots(value, f"{where}.{key}")


def calib_node(cfg: DictConfig) -> DictConfig:
    """The calibration source ``calib.sources[calib.source]``, its paths checked."""
    source, sources = cfg.calib.get("source"), cfg.calib.get("sources") or {}
    if source not in sources:
        raise ConfigError(f"calib.source={source}: choose one of {', '.join(sources)} (fgq/conf/calib/default.yaml)")
    _check_roots(OmegaConf.to_container(sources[source], resolve=True), f"calib.sources.{source}")
    return sources[source]


def check_seed(cfg: DictConfig) -> None:
    """``seed`` is an integer: every ``${fgq_seed:…}`` of the config resolves from it, so check it first."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed={seed}: must be an integer (seed=0)")


def validate(cfg: DictConfig) -> QuantSpec:
    """Check everything that can be checked before work starts; returns the quantization spec."""
    check_seed(cfg)
    spec = quant_spec(cfg)
    for key in OmegaConf.missing_keys(cfg.quantizer):
        name = key if key.startswith("quantizer.") else f"quantizer.{key}"  # OmegaConf may give the full path
        raise ConfigError(f"{name} is not set ({name}=…)")
    if not cfg.dataset.get("eval"):
        raise ConfigError("dataset.eval is empty: choose at least one evaluation set (dataset=synthetic, ...)")
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    _check_aliases(dataset)
    _check_roots(dataset, "dataset")
    for name, node in cfg.dataset.eval.items():
        unknown = set(node.protocol.tasks) - {"camera", "depth", "points"}
        if unknown:
            raise ConfigError(f"dataset.eval.{name}.protocol.tasks: unknown {sorted(unknown)} (camera, depth, points)")
    for key in ("num_clips", "frames", "batch_size"):
        if int(cfg.calib[key]) < 1:
            raise ConfigError(f"calib.{key}={cfg.calib[key]}: must be ≥ 1")
    return spec
