"""The command line: ``fgq [group=option ...]`` (also ``python -m fgq`` and, in a checkout, ``python run.py``);
``-m`` sweeps.

Each job evaluates the FP model, quantizes it, evaluates again and writes ``metrics.json`` to its directory.
A sweep goes on past failed jobs, aggregates its tables at the end (``fgq.sweeps.callback``) and exits with 1 if any
job failed or did not finish.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fgq.config import ConfigError, check_choices
from fgq.precheck import check_names, check_sweep


def _fail(err: Exception) -> None:
    """One line and exit 2; ``HYDRA_FULL_ERROR=1`` shows the traceback instead."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    from fgq.jobs import run_job, user_error
    from fgq.summary import print_summary

    hc = HydraConfig.get()
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra") and v is not None}
    sweep = hc.mode == RunMode.MULTIRUN
    group = "/".join(Path(hc.sweep.dir).parts[-2:]) if sweep else None
    out_dir = Path(hc.runtime.output_dir)
    try:
        # the top-level keys the command line set (bits=…, bits.a_bits=…, +x=…): what the user asked for explicitly
        explicit = frozenset(o.split("=", 1)[0].lstrip("+~").split(".", 1)[0] for o in hc.overrides.task)
        result = run_job(cfg, out_dir, choices, group, sweep=sweep, explicit=explicit)
    except Exception as err:
        known = user_error(err)
        if known is None:
            raise
        _fail(known)
    if result.get("status") != "ok":
        print(f"failed: {result.get('error')} · {out_dir}/metrics.json")
    elif result.get("job") == "fisher_validation":
        print(f"outputs in {out_dir}")  # the r table is logged by fgq.validation.measure
    else:
        print_summary(result, out_dir)


def check_output_dirs(overrides: list[str]) -> None:
    """Hydra creates ``hydra.run.dir``/``hydra.sweep.dir`` before any job starts, with a traceback when it cannot:
    check a folder given on the command line first (its first existing parent must be a writable folder)."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") not in ("hydra.run.dir", "hydra.sweep.dir") or not value or "${" in value:
            continue
        parent = Path(value).absolute()
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            what = "is not a folder" if not parent.is_dir() else "is not writable"
            raise ConfigError(f"{key}={value}: {parent} {what}; choose another output folder")


def main() -> None:
    try:
        overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
        check_choices(overrides)
        check_names(overrides)
        check_output_dirs(overrides)
        if not {"--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help"} & set(sys.argv[1:]):
            check_sweep(overrides)  # the job's config (with -m: every value of the sweep), before any work
    except ConfigError as err:
        _fail(err)
    hydra_main()
    # After a sweep, the aggregation callback (fgq.sweeps.callback) counted jobs that failed or did not finish:
    # the sweep went on past them, but the exit status says so.
    from fgq.sweeps.callback import last_problem_count

    if last_problem_count():
        sys.exit(1)
