"""Checks of the command line before Hydra starts any job: a sweep's every value, and override names.

- **Sweep values.** ``-m quantizer=rtn bits.w_bits=8,1`` would run job 0 to completion before job 1 fails. Every
  value of every swept key (on the command line or in an experiment's ``hydra.sweeper.params``) is composed once,
  with the other keys at their first value, and checked as a job checks its config (``validate``, the quantizer's
  and Fisher's dataclasses): the first bad value stops the sweep before any work, in one line that names it.
- **Override names.** ``bit=w4a4`` (no such key) gets a one-line did-you-mean instead of Hydra's report, whose hint
  (``+bit=w4a4``) points the wrong way.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import yaml
from omegaconf import DictConfig

from fgq import CONF_DIR
from fgq.config import ConfigError, check_seed, validate


def _parse(overrides: Sequence[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except Exception as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def known_keys() -> set[str]:
    """The top-level names an override may start with: config groups, keys of ``config.yaml`` and of the global
    experiment files, and Hydra's own."""
    keys = {p.name for p in CONF_DIR.iterdir() if p.is_dir()} | {"hydra"}
    files = [CONF_DIR / "config.yaml", *sorted((CONF_DIR / "experiment").glob("*.yaml"))]
    for path in files:
        data = yaml.safe_load(path.read_text()) or {}
        keys |= {str(k) for k in data if k != "defaults"}
    return keys


def check_names(overrides: Sequence[str]) -> None:
    """An override whose first name is no config key (``bit=w4a4``) is refused with the closest known name."""
    known = known_keys()
    for override in _parse(overrides):
        key = override.key_or_group
        if override.package is not None or override.is_add() or override.is_force_add():
            continue  # +key=… adds a key on purpose
        head = key.split("/")[0].split(".")[0]
        if head not in known:
            close = difflib.get_close_matches(head, sorted(known), n=1)
            hint = f"; did you mean {close[0]}{key[len(head):]}=…?" if close else ""
            raise ConfigError(f"unknown override {key}={override.input_line.split('=', 1)[-1]}{hint}")


def _one_line(err: Exception) -> str:
    """Hydra's composition report in one line: its first line and the line that says what is wrong (its hint to
    add the key with ``+`` is left out: for a misspelt or misplaced key it points the wrong way)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    causes = [line.strip() for line in str(err.__cause__ or "").splitlines() if line.strip()]
    detail = next((line for line in [*lines[1:], *causes] if line.startswith(("Key ", "Value ", "Could not"))), None)
    return f"{lines[0].rstrip('.')}: {detail}" if lines and detail else (lines[0] if lines else type(err).__name__)


def _values(text: object) -> list[str]:
    parsed = _parse([f"x={text}"])[0]
    return [str(v) for v in parsed.sweep_string_iterator()] if parsed.is_sweep_override() else [str(text)]


def _check_job(cfg: DictConfig) -> None:
    from fgq.schemas import config_object

    check_seed(cfg)
    validate(cfg)
    for group in ("quantizer", "fisher"):
        if cfg.get(group) is not None:
            try:
                config_object(cfg[group], group)
            except ValueError as err:
                raise ConfigError(str(err)) from None


def check_sweep(overrides: Sequence[str]) -> int:
    """Compose and check the job config (a single run: the one job; a sweep: every value of every swept key);
    returns the number of sweep values checked."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    parsed = _parse(overrides)
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    swept = {o.get_key_element(): [str(v) for v in o.sweep_string_iterator()] for o in parsed
             if o.is_sweep_override()}
    checked = 0
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            base = compose("config", overrides=[*plain, *(f"{k}={v[0]}" for k, v in swept.items())],
                           return_hydra_config=True)
        except ConfigCompositionException as err:
            firsts = " ".join(f"{k}={v[0]}" for k, v in swept.items())
            where = f"sweep job {firsts}: " if firsts else ""
            raise ConfigError(f"{where}{_one_line(err)}") from None
        if not swept and not base.hydra.sweeper.get("params"):
            _check_job(base)
        for key, text in (base.hydra.sweeper.get("params") or {}).items():
            swept.setdefault(key, _values(text))  # an experiment's sweep; the command line's own wins
        for key, values in swept.items():
            others = [f"{k}={v[0]}" for k, v in swept.items() if k != key]
            for value in values:
                try:
                    _check_job(compose("config", overrides=[*plain, *others, f"{key}={value}"]))
                except ConfigCompositionException as err:
                    raise ConfigError(f"sweep value {key}={value}: {_one_line(err)}") from None
                except ConfigError as err:
                    raise ConfigError(f"sweep value {key}={value}: {err}") from None
                checked += 1
    return checked
