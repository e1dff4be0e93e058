"""The sweep's summary run in W&B: job type ``aggregate`` in the sweep's group, holding the results as a W&B
Table, every paper-layout table and the figures (``fgq.sweeps.callback`` and ``python -m fgq.sweeps --wandb``)."""

from __future__ import annotations

import os
from typing import Any

from fgq.loggers import wandb_mode
from fgq.sweeps.table import grids, long_rows


def log_to_wandb(result: Any, logger: dict | None = None) -> None:
    """A W&B run of job type ``aggregate`` in the sweep's group (the jobs' group: the sweep dir's last two parts)
    with ``results`` (one row per job × metric), every table, and the figures; offline unless an API key is set."""
    import wandb

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
