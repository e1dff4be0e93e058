"""The command line: ``fgq [group=option ...]`` (also ``python -m fgq`` and, in a checkout, ``python run.py``);
``-m`` sweeps.

Each job evaluates the FP model, quantizes it, evaluates again and writes ``metrics.json`` to its directory.
A sweep goes on past failed jobs, aggregates its tables at the end (``fgq.sweeps.callback``) and exits with 1 if any
job failed or did not finish.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fgq.config import ConfigError, check_choices
from fgq.data.files import DataError
from fgq.models.checkpoint import CheckpointError


def _fail(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    from fgq.jobs import run_job
    from fgq.summary import print_summary

    hc = HydraConfig.get()
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra") and v is not None}
    sweep = hc.mode == RunMode.MULTIRUN
    group = "/".join(Path(hc.sweep.dir).parts[-2:]) if sweep else None
    out_dir = Path(hc.runtime.output_dir)
    try:
        result = run_job(cfg, out_dir, choices, group, sweep=sweep)
    except (ConfigError, CheckpointError, DataError) as err:
        _fail(err)
    if result.get("status") != "ok":
        print(f"failed: {result.get('error')} · {out_dir}/metrics.json")
    elif result.get("job") == "fisher_validation":
        print(f"outputs in {out_dir}")  # the r table is logged by fgq.validation.measure
    else:
        print_summary(result, out_dir)


def main() -> None:
    try:
        check_choices([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    except ConfigError as err:
        _fail(err)
    hydra_main()
    # After a sweep, the aggregation callback (fgq.sweeps.callback) counted jobs that failed or did not finish:
    # the sweep went on past them, but the exit status says so.
    from fgq.sweeps.callback import last_problem_count

    if last_problem_count():
        sys.exit(1)
