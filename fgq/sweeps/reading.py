"""Read a sweep directory from disk: every job's overrides, status and ``metrics.json``, plus the jobs the sweep
should have run but that left no directory (a cluster task that never started). Nothing is recomputed.

A job is ``ok`` or ``failed`` as its ``metrics.json`` says, ``incomplete`` when its directory has no
``metrics.json`` (killed, or still running), ``missing`` when the grid of ``multirun.yaml`` names it but no
directory exists.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fgq.config import group_options
from fgq.io import NUMERIC_PARTS, nan_json

log = logging.getLogger(__name__)

SECTION_KEYS = ("model", "dataset")  # one table per model and dataset choice, as the paper's tables


@dataclass
class Job:
    name: str
    path: Path | None
    overrides: dict[str, str]
    status: str  # ok | failed | incomplete | missing
    result: dict | None = None

    @property
    def error(self) -> str:
        if self.status == "failed":
            return str((self.result or {}).get("error", "unknown error"))
        return {"incomplete": "no metrics.json (killed, or still running)",
                "missing": "never started (no job directory)"}.get(self.status, "")

    @property
    def choices(self) -> dict[str, str]:
        return dict((self.result or {}).get("choices") or {})


@dataclass
class Sweep:
    path: Path
    jobs: list[Job]
    report: dict = field(default_factory=dict)      # the experiment's ``report`` node (layout of its tables)
    defaults: dict[str, str] = field(default_factory=dict)  # config-group choices of the sweep's primary config
    logger: dict = field(default_factory=dict)      # the ``logger`` node (W&B settings of the summary run)

    def value(self, job: Job, key: str) -> str | None:
        """What ``key`` was for ``job``: its override, else its recorded choice, else the sweep's default choice."""
        if key in job.overrides:
            return job.overrides[key]
        return job.choices.get(key, self.defaults.get(key))

    def varying(self) -> list[str]:
        """Override keys whose value differs between jobs, in order of first appearance."""
        keys = list(dict.fromkeys(k for job in self.jobs for k in job.overrides))
        return [k for k in keys if len({self.value(job, k) for job in self.jobs}) > 1]

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "failed": 0, "incomplete": 0, "missing": 0}
        for job in self.jobs:
            out[job.status] = out.get(job.status, 0) + 1
        return out


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["a=1", "+b=[x, y]"]`` → ``{"a": "1", "b": "[x,y]"}``, values in Hydra's canonical spelling (so that a job's
    ``overrides.yaml`` and the rebuilt grid compare equal)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        # unparsable values stay verbatim: only the comparison with the rebuilt grid can suffer
        with contextlib.suppress(Exception):
            value = OverridesParser.create().parse_overrides([str(item)])[0].get_value_element_as_str()
        out[key.lstrip("+~")] = value
    return out


def expected_jobs(master: DictConfig) -> list[dict[str, str]] | None:
    """The grid the basic sweeper builds from ``hydra.sweeper.params`` and the command line (same order, a command-
    line axis replacing a config one); ``None`` if it cannot be rebuilt (another sweeper, range sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    params = _container(master.hydra.sweeper.get("params"))
    strings = [f"{k}={v}" for k, v in params.items()] + [str(o) for o in master.hydra.overrides.get("task", [])]
    try:
        parsed = OverridesParser.create().parse_overrides(strings)
    except Exception as err:  # anything the plain parser cannot read: fall back to what is on disk
        log.info("sweep grid not rebuilt (%s): listing the job directories only", err)
        return None
    axes: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [override.get_value_element_as_str()]
        elif isinstance(override.value(), Glob):  # glob([...]): the options of the config group that exist
            axes[key] = override.value().filter(group_options(key.lstrip("+~")))
        elif override.is_discrete_sweep():
            axes[key] = list(override.sweep_string_iterator())
        else:
            return None
    keys = [k.lstrip("+~") for k in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _container(node: object) -> dict:
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else {}


def _load_json(path: Path) -> dict | None:
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(result, dict):  # metrics.json writes NaN as null (strict JSON): numbers again for the tables
        result.update({k: nan_json(result[k]) for k in NUMERIC_PARTS if k in result})
    return result


def _job_dirs(root: Path) -> list[Path]:
    dirs = [p for p in root.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or (p / "metrics.json").exists())]

    def order(p: Path) -> tuple:
        return (0, int(p.name), "") if re.fullmatch(r"\d+", p.name) else (1, 0, p.name)

    return sorted(dirs, key=order)


def load_sweep(root: str | Path) -> Sweep:
    """Every job directory under ``root`` (a sweep directory of ``run.py -m``, or any folder of job directories)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such sweep directory")
    master = OmegaConf.load(root / "multirun.yaml") if (root / "multirun.yaml").is_file() else None
    jobs = []
    for path in _job_dirs(root):
        overrides_file = path / ".hydra" / "overrides.yaml"
        overrides = parse_overrides(list(OmegaConf.load(overrides_file))) if overrides_file.is_file() else {}
        result = _load_json(path / "metrics.json")
        status = "incomplete" if result is None else str(result.get("status", "failed"))
        jobs.append(Job(path.name, path, overrides, status, result))
    report, defaults, logger = {}, {}, {}
    if master is not None:
        report = _container(master.get("report"))
        defaults = {k: str(v) for k, v in (master.hydra.runtime.get("choices") or {}).items()
                    if not str(k).startswith("hydra") and v is not None}
        logger = _container(master.get("logger"))
        expected = expected_jobs(master)
        seen = [job.overrides for job in jobs]
        missing = [o for o in expected or [] if o not in seen]
        jobs += [Job(f"(not started {i})", None, o, "missing") for i, o in enumerate(missing)]
    elif not jobs and (root / "metrics.json").exists():  # a single run's directory
        jobs = [Job(root.name, root, {}, str((_load_json(root / "metrics.json") or {}).get("status", "failed")),
                    _load_json(root / "metrics.json"))]
    return Sweep(root, jobs, report, defaults, logger)
