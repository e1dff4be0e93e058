"""The Hydra callback that aggregates a sweep when it ends (``fgq/conf/hydra/default.yaml`` registers it):
``fgq.sweeps.aggregate.aggregate`` on the sweep directory (read from disk, so it works for every launcher: the
basic one, joblib processes and SLURM/submitit jobs), and the W&B summary run (``fgq.sweeps.wandb_summary``).

Hydra calls ``on_multirun_end`` only when no job raised; ``fgq.jobs`` turns a job's exception into a failed
``metrics.json``, so the callback always runs and the failure shows in the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# Problems of this process's last sweep: jobs that failed or did not finish, plus 1 when the aggregation failed.
_LAST_PROBLEMS: list[int] = []


def last_problem_count() -> int:
    """How many problems the sweep this process just ran had (0 when no sweep ran): the CLI exits 1 on any."""
    return _LAST_PROBLEMS[-1] if _LAST_PROBLEMS else 0


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

        from fgq.sweeps.aggregate import aggregate
        from fgq.sweeps.wandb_summary import log_to_wandb

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            result = aggregate(sweep_dir)
        except Exception:  # the jobs' outputs are safe on disk: no crash, but the exit status says it failed
            log.exception("aggregation failed: run `python -m fgq.sweeps %s` to retry", sweep_dir)
            _LAST_PROBLEMS.append(1)
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
