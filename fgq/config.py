"""Config helpers: a check of group choices before Hydra composes (one clear line
instead of Hydra's multi-line report), and validation of the composed config before any work starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fgq import ROOT
from fgq.quant.spec import QuantSpec

CONF_DIR = ROOT / "conf"


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line that says what to change."""


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
                raise ConfigError(f"unknown {group} '{value}': choose one of {', '.join(options)} (conf/{group}/)")


DATASET_ALIASES = ("root", "annotations")


def expand_dataset_aliases(args: Sequence[str]) -> list[str]:
    """``dataset=co3d dataset.root=X`` → ``dataset.co3d.root=X``: dataset configs keep their paths under their own
    name (so several merge: ``dataset=[co3d,re10k]``), and with a single dataset the short form is accepted."""
    chosen = [a.split("=", 1)[1] for a in args if a.startswith("dataset=")]
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") in (f"dataset.{k}" for k in DATASET_ALIASES):
            if len(chosen) != 1 or "," in chosen[0] or "[" in chosen[0]:
                raise ConfigError(f"{key}: name the dataset, e.g. dataset.<name>.{key.split('.')[-1]}=PATH "
                                  "(the short form needs exactly one dataset=<name>)")
            arg = f"dataset.{_namespace(chosen[0], key)}.{key.split('.')[-1]}={value}"
        out.append(arg)
    return out


def _namespace(dataset: str, key: str) -> str:
    """The top-level key of ``conf/dataset/<dataset>.yaml`` that holds ``key``'s field (e.g. kitti_mono → kitti)."""
    path = CONF_DIR / "dataset" / f"{dataset}.yaml"
    field = key.split(".")[-1]
    node = OmegaConf.load(path) if path.is_file() else {}
    names = [k for k, v in node.items() if k != "eval" and isinstance(v, DictConfig) and field in v]
    if len(names) != 1:
        raise ConfigError(f"{key}: dataset '{dataset}' has no {field} setting (conf/dataset/{dataset}.yaml)")
    return names[0]


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
        raise ConfigError(f"calib.source={source}: choose one of {', '.join(sources)} (conf/calib/default.yaml)")
    _check_roots(OmegaConf.to_container(sources[source], resolve=True), f"calib.sources.{source}")
    return sources[source]


def validate(cfg: DictConfig) -> QuantSpec:
    """Check everything that can be checked before work starts; returns the quantization spec."""
    spec = quant_spec(cfg)
    for key in OmegaConf.missing_keys(cfg.quantizer):
        raise ConfigError(f"quantizer.{key} is not set (quantizer.{key}=…)")
    if not cfg.dataset.get("eval"):
        raise ConfigError("dataset.eval is empty: choose at least one evaluation set (dataset=synthetic, ...)")
    _check_roots(OmegaConf.to_container(cfg.dataset, resolve=True), "dataset")
    for name, node in cfg.dataset.eval.items():
        unknown = set(node.protocol.tasks) - {"camera", "depth", "points"}
        if unknown:
            raise ConfigError(f"dataset.eval.{name}.protocol.tasks: unknown {sorted(unknown)} (camera, depth, points)")
    for key in ("num_clips", "frames", "batch_size"):
        if int(cfg.calib[key]) < 1:
            raise ConfigError(f"calib.{key}={cfg.calib[key]}: must be ≥ 1")
    return spec
