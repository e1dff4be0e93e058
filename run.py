"""fgq entry point: ``python run.py [group=option ...]``; ``python run.py -m ...`` sweeps.

Each job evaluates the FP model, quantizes it, evaluates again and writes ``metrics.json`` to its directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fgq.config import ConfigError, check_choices
from fgq.models.checkpoint import CheckpointError


def _fail(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from fgq.pipeline import run
    from fgq.summary import print_summary

    hc = HydraConfig.get()
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra") and v is not None}
    group = "/".join(Path(hc.sweep.dir).parts[-2:]) if hc.mode == RunMode.MULTIRUN else None
    out_dir = Path(hc.runtime.output_dir)
    job = cfg.get("job", "quantize")
    try:
        if job == "fisher_validation":
            from fgq.validation import run_fisher_validation

            run_fisher_validation(cfg, out_dir, choices, group)
            print(f"outputs in {out_dir}")  # the r table is logged by fgq.validation
            return None
        if job != "quantize":
            raise ConfigError(f"job={job}: use quantize or fisher_validation")
        result = run(cfg, out_dir, choices, group)
    except (ConfigError, CheckpointError) as err:
        _fail(err)
    print_summary(result, out_dir)
    return None


if __name__ == "__main__":
    try:
        check_choices([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")])
    except ConfigError as err:
        _fail(err)
    main()
