"""One Hydra job around the pipeline: resume, dispatch on ``cfg.job``, and failure records.

- **Resume**: a job whose ``metrics.json`` has status ``ok`` and the same config digest is skipped (rerunning a
  sweep into its directory only does what is missing, failed or changed; ``resume=false`` forces a rerun).
- **Failure**: in a sweep, an exception becomes ``metrics.json`` with status ``failed``, the error and the
  traceback (written atomically), and the job returns normally, so Hydra's launchers go on with the next job and
  the sweep's table shows it. A single run still stops with the error (exit code 2 for configuration errors).
- **Termination**: SIGTERM (SLURM's time limit, ``kill``) becomes ``SystemExit``, so cleanup runs (W&B run closed,
  temporary files removed) and no ``metrics.json`` is written: the job reads as incomplete and a rerun redoes it.
  Outputs are only ever written atomically, so even SIGKILL leaves no half-written file behind.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import DictConfig

from fgq.config import ConfigError, check_seed
from fgq.data.files import DataError
from fgq.errors import NonFiniteError
from fgq.io import write_json_atomic
from fgq.models.checkpoint import CheckpointError
from fgq.pipeline import config_digest

log = logging.getLogger(__name__)

# Failures a user can act on: reported as one ``error: …`` line (exit 2), never a traceback (HYDRA_FULL_ERROR=1
# shows it).
USER_ERRORS = (ConfigError, CheckpointError, DataError, NonFiniteError)


def user_error(err: BaseException) -> Exception | None:
    """The one-line error inside ``err``: one of ``USER_ERRORS``, also when Hydra's ``instantiate`` wrapped it, or a
    ``ValueError``/``TypeError`` a configured constructor raised (named by its config key). ``None``: a bug."""
    if isinstance(err, USER_ERRORS):
        return err
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        cause = user_error(err.__cause__)
        if cause is not None:
            return cause
        if isinstance(err.__cause__, (ValueError, TypeError)):
            key = next((line.split(":", 1)[1].strip() for line in str(err).splitlines()
                        if line.startswith("full_key:")), "")
            message = str(err.__cause__).strip().splitlines()[0] if str(err.__cause__).strip() else ""
            return ConfigError(f"{key + ': ' if key else ''}{message or type(err.__cause__).__name__}")
    return None


def completed(out_dir: Path, digest: str) -> dict | None:
    """The job's ``metrics.json`` if it finished successfully with this config digest, else ``None``."""
    path = Path(out_dir) / "metrics.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("status") == "ok" and result.get("config_digest") == digest else None


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of atomic writes interrupted by SIGKILL (``.<name>.<random>.tmp``); never read by anyone."""
    for tmp in Path(out_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` for the job's duration, unless someone (submitit) already handles it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
            signal.SIG_DFL, None):
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def record_failure(cfg: DictConfig, out_dir: Path, choices: dict[str, str], err: BaseException, digest: str,
                   elapsed: float) -> dict:
    result = {
        "status": "failed",
        "job": cfg.get("job", "quantize"),
        "choices": choices,
        "error": f"{type(err).__name__}: {err}",
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        "timings": {"total_s": elapsed},
        "config_digest": digest,
    }
    write_json_atomic(Path(out_dir) / "metrics.json", result)
    return result


def dispatch(cfg: DictConfig, out_dir: Path, choices: dict[str, str], group: str | None,
             explicit: frozenset[str] = frozenset()) -> dict:
    job = cfg.get("job", "quantize")
    if job == "fisher_validation":
        from fgq.validation.job import run_fisher_validation

        return run_fisher_validation(cfg, out_dir, choices, group)
    if job != "quantize":
        raise ConfigError(f"job={job}: use quantize or fisher_validation")
    from fgq.pipeline import run

    return run(cfg, out_dir, choices, group, explicit)


def run_job(cfg: DictConfig, out_dir: Path, choices: dict[str, str], group: str | None = None,
            sweep: bool = False, explicit: frozenset[str] = frozenset()) -> dict:
    """Run (or skip, see the module doc) one job; returns its ``metrics.json`` content. ``sweep``: record failures
    and return instead of raising. ``explicit``: the top-level config keys the command line set."""
    out_dir = Path(out_dir)
    check_seed(cfg)  # the digest resolves every ${fgq_seed:…}
    digest = config_digest(cfg)
    if cfg.get("resume", True):
        done = completed(out_dir, digest)
        if done is not None:
            log.info("skipped: %s/metrics.json is complete for this config (resume=false reruns it)", out_dir)
            return {**done, "skipped": True}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".fgq-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"output directory {out_dir}: not writable ({err.strerror or err}); choose another with "
                          "hydra.run.dir=… (hydra.sweep.dir=… for -m)") from None
    remove_stale_temporaries(out_dir)
    start = time.perf_counter()
    with sigterm_as_exit():
        try:
            return dispatch(cfg, out_dir, choices, group, explicit)
        except Exception as err:
            known = user_error(err)
            if known is not None and not sweep and not isinstance(known, NonFiniteError):
                raise known from None  # a config or input problem: one line, nothing written
            failure = record_failure(cfg, out_dir, choices, known or err, digest, time.perf_counter() - start)
            if not sweep:
                if known is not None:  # a non-finite value: metrics.json records where, the console gets one line
                    raise known from None
                raise
            if known is not None:
                log.error("job failed: %s", known)
            else:
                log.exception("job failed (the sweep goes on; metrics.json records the error)")
            return failure
