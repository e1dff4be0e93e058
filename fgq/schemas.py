"""Typed schemas of the config groups whose nodes are dataclasses (quantizers, the Fisher), stored in Hydra's
ConfigStore as ``<name>_schema``. Each YAML option lists its schema first in its defaults, so a wrong key or type
(``quantizer.epochs=abc``, ``quantizer.foo=1``) fails while the config is composed, before any work, and
``config_object`` turns a composed node into its dataclass, nested dataclasses included."""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fgq.fisher.compute import FisherConfig
from fgq.quant.fgq import FGQConfig
from fgq.quant.flatquant_config import FlatQuantConfig
from fgq.quant.gptq import GPTQConfig
from fgq.quant.quantvggt import QuantVGGTConfig
from fgq.quant.quarot import QuaRotConfig
from fgq.quant.rtn import RTNConfig
from fgq.quant.saving import LoadConfig

SCHEMAS: dict[str, dict[str, type]] = {
    "quantizer": {"rtn": RTNConfig, "gptq": GPTQConfig, "quarot": QuaRotConfig, "flatquant": FlatQuantConfig,
                  "fgq": FGQConfig, "quantvggt": QuantVGGTConfig, "load": LoadConfig},
    "fisher": {"fisher": FisherConfig},
}


def register() -> None:
    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, cls in schemas.items():
            store.store(group=group, name=f"{name}_schema", node=cls)


def config_object(node: DictConfig, where: str) -> Any:
    """The dataclass a composed, schema-typed node stands for, nested dataclasses included. A value the dataclass
    refuses raises its own ``ValueError`` (which names the key); any other OmegaConf error becomes one ``ValueError``
    line naming ``where`` (e.g. ``quantizer``)."""
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as err:
        cause = err.__cause__ if isinstance(err.__cause__, ValueError | TypeError) else err
        raise ValueError(f"{where}: {str(cause).splitlines()[0]}") from None
