"""The Hydra callback that aggregates a sweep when it ends (``conf/hydra/default.yaml`` registers it):
``fgq.tables.aggregate`` on the sweep directory (read from disk, so it works for every launcher: the basic one,
joblib processes and SLURM/submitit jobs), and a summary run in the sweep's W&B group holding the results as a
W&B Table, the paper-layout tables and the figures.

Hydra calls ``on_multirun_end`` only when no job raised; ``fgq.jobs`` turns a job's exception into a failed
``metrics.json``, so the callback always runs and the failure shows in the table.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

_LAST_PROBLEMS: list[int] = []  # jobs that failed or did not finish in this process's last aggregated sweep


def last_problem_count() -> int:
    """How many jobs of the sweep this process just ran failed or did not finish (0 when no sweep ran)."""
    return _LAST_PROBLEMS[-1] if _LAST_PROBLEMS else 0


def log_to_wandb(result: Any, logger: dict | None = None) -> None:
    """A W&B run of job type ``aggregate`` in the sweep's group (the jobs' group: the sweep dir's last two parts)
    with ``results`` (one row per job × metric), every table, and the figures; offline unless an API key is set."""
    import wandb

    from fgq.loggers import wandb_mode

    settings = dict((logger if logger is not None else result.sweep.logger).get("wandb") or {})
    sweep = result.sweep
    group = settings.get("group") or "/".join(sweep.path.resolve().parts[-2:])
    os.environ.setdefault("WANDB_SILENT", "true")
    experiment = sweep.defaults.get("experiment")
    run = wandb.init(project=settings.get("project") or "fgq", entity=settings.get("entity"), group=group,
                     job_type="aggregate", name=f"{experiment or 'sweep'}-summary", dir=str(sweep.path),
                     mode=wandb_mode(str(settings.get("mode") or "auto")), config={"sweep_dir": str(sweep.path),
                     "report": sweep.report, "jobs": sweep.counts()},
                     tags=["aggregate", *([f"experiment:{experiment}"] if experiment else [])],
                     settings=wandb.Settings(console="off"))
    try:
        from fgq.tables import grids, long_rows

        rows = long_rows(result.tables)
        if rows:
            columns = list(rows[0])
            run.log({"results": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
        ours = str(sweep.report.get("ours") or "FGQ")
        for i, table in enumerate(result.tables):
            for j, grid in enumerate(grids(table, ours)):
                run.log({f"tables/{i}_{j}": wandb.Table(columns=grid.header, data=grid.rows)})
        images = {f"figures/{k.split(':', 1)[1]}": wandb.Image(str(p)) for k, p in result.files.items()
                  if k.startswith("figure:")}
        if images:
            run.log(images)
        run.summary.update({f"jobs/{k}": v for k, v in sweep.counts().items()})
    finally:
        run.finish()


class AggregateSweep(Callback):
    """``on_multirun_end``: tables, figures and report.html in the sweep dir; the W&B summary run when ``wandb``
    and the sweep's logger config has W&B."""

    def __init__(self, enabled: bool = True, wandb: bool = True) -> None:
        self.enabled = enabled
        self.wandb = wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from omegaconf import OmegaConf

        from fgq.tables import aggregate

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            result = aggregate(sweep_dir)
        except Exception:  # the jobs' outputs are safe on disk; never turn a finished sweep into a crash
            log.exception("aggregation failed: run `python -m fgq.tables %s` to retry", sweep_dir)
            return
        _LAST_PROBLEMS.append(len(result.problems))
        print(result.markdown)
        print(f"report: {result.files['html']}")
        if result.problems:
            log.warning("%d of %d jobs failed or did not finish (see the table)", len(result.problems),
                        len(result.sweep.jobs))
        logger = OmegaConf.to_container(config.get("logger") or {}, resolve=True)
        if self.wandb and logger.get("wandb"):
            try:
                log_to_wandb(result, logger)
            except Exception:  # W&B trouble must not hide the tables already written
                log.exception("W&B summary run failed; the tables are in %s", sweep_dir)
