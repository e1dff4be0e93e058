"""Uncertainty of a sweep's numbers, from the jobs' per-sequence records (``metrics.json`` ``records``).

A bootstrap replicate draws the evaluation sequences with replacement, the same draw for every job compared
(paired: FP and every method are scored on the same resampled sequences), within each category when the protocol
averages pose per category (Co3D's AUC), and draws each arm's seeds with replacement (the spread over seeds).
The statistic is recomputed from the resampled records exactly as the dataset metric aggregates them
(``fgq.evaluation.metrics_from_records``). Intervals are percentile intervals of the replicates.

Stratified, multi-level resampling is outside what ``scipy.stats.bootstrap`` offers (it resamples whole samples,
without strata), so the resampling is written here; the interval's coverage is tested on draws with a known mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fgq.evaluation import metrics_from_records

Records = dict[str, list[dict]]  # {task: rows}, each row with its "sequence" (DatasetEvaluator.records())


@dataclass(frozen=True)
class Estimate:
    """A point value with its interval; ``significant``: the interval excludes 0 (for a difference)."""

    value: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def _by_sequence(records: Records) -> dict[str, dict[str, list[dict]]]:
    out: dict[str, dict[str, list[dict]]] = {}
    for task, rows in records.items():
        for row in rows:
            out.setdefault(task, {}).setdefault(str(row["sequence"]), []).append(row)
    return out


class PairedBootstrap:
    """Resamples the evaluation sequences shared by every job of one evaluation set.

    ``arms``: per arm (FP, a method, ...), the records of each of its seeds. ``protocol``: the evaluation set's
    protocol (``pose_averaging=per_category`` stratifies the draw by category)."""

    def __init__(self, arms: Sequence[Sequence[Records]], protocol: dict, resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> None:
        if not arms or any(not seeds for seeds in arms):
            raise ValueError("PairedBootstrap: every arm needs the records of at least one job")
        self.protocol, self.resamples, self.confidence = protocol, resamples, confidence
        self.arms = [[_by_sequence(r) for r in seeds] for seeds in arms]
        first = arms[0][0]
        task = next(iter(first))
        self.sequences = list(dict.fromkeys(str(row["sequence"]) for row in first[task]))
        for seeds in self.arms:
            for job in seeds:
                if any(set(rows) != set(self.sequences) for rows in job.values()):
                    raise ValueError("PairedBootstrap: the jobs were evaluated on different sequences; a paired "
                                     "comparison needs the same evaluation set for all")
        self.strata = self._strata(first)
        self.rng = np.random.default_rng(seed)

    def _strata(self, records: Records) -> list[np.ndarray]:
        if self.protocol.get("pose_averaging") == "per_category" and "camera" in records:
            category = {str(r["sequence"]): r.get("category", "") for r in records["camera"]}
            groups: dict[str, list[int]] = {}
            for i, seq in enumerate(self.sequences):
                groups.setdefault(category[seq], []).append(i)
            return [np.asarray(g) for _, g in sorted(groups.items())]
        return [np.arange(len(self.sequences))]

    def _draw(self) -> list[str]:
        picks = np.concatenate([self.rng.choice(s, size=s.size, replace=True) for s in self.strata])
        return [self.sequences[i] for i in picks]

    def _metric(self, job: dict[str, dict[str, list[dict]]], draw: list[str], task: str, metric: str) -> float:
        records = {task: [row for seq in draw for row in job[task][seq]]}
        return float(metrics_from_records(records, self.protocol)[task][metric])

    def _statistic(self, weights: Sequence[float], task: str, metric: str, draw: list[str],
                   seeds: list[list[int]]) -> float:
        # an arm with weight 0 (e.g. FP when the row's own value is wanted) is not scored: its seeds are still
        # drawn by the caller, so every estimate of one bootstrap sees the same random stream
        return sum(w * float(np.mean([self._metric(arm[s], draw, task, metric) for s in picks]))
                   for w, arm, picks in zip(weights, self.arms, seeds, strict=True) if w)

    def estimate(self, task: str, metric: str, weights: Sequence[float] | None = None) -> Estimate:
        """``Σ_arm weight · (mean over the arm's seeds of the metric)``: ``weights=None`` is the first arm's value;
        ``[1, -1]`` the difference of two arms (e.g. method − FP), paired over sequences."""
        weights = list(weights) if weights is not None else [1.0] + [0.0] * (len(self.arms) - 1)
        if len(weights) != len(self.arms):
            raise ValueError(f"{len(weights)} weights for {len(self.arms)} arms")
        every = [list(range(len(arm))) for arm in self.arms]
        value = self._statistic(weights, task, metric, self.sequences, every)
        replicates = [
            self._statistic(weights, task, metric, self._draw(),
                            [list(self.rng.integers(0, len(arm), size=len(arm))) for arm in self.arms])
            for _ in range(self.resamples)
        ]
        finite = [r for r in replicates if math.isfinite(r)]
        if not finite:
            return Estimate(value, math.nan, math.nan)
        tail = (1 - self.confidence) / 2 * 100
        low, high = np.percentile(finite, [tail, 100 - tail])
        return Estimate(value, float(low), float(high))


def _records(job, phase: str, eval_set: str) -> Records | None:
    result = job.result or {}
    return ((result.get("records") or {}).get(phase) or {}).get(eval_set)


def _protocol(job, eval_set: str) -> dict | None:
    return ((job.result or {}).get("protocols") or {}).get(eval_set)


def _arms(rows, column, phases) -> tuple[list[list[Records]], dict] | None:
    """Per (row, phase), the records of the row's finished jobs for ``column``'s eval set (the FP phase: its first
    job's, the same for all); ``None`` when any is missing."""
    arms = []
    for row, phase in zip(rows, phases, strict=True):
        jobs = [j for j in row.jobs if j.status == "ok"]
        records = [_records(j, phase, column.eval_set) for j in (jobs if phase == "quant" else jobs[:1])]
        if not records or any(r is None or column.task not in r for r in records):
            return None
        arms.append([{column.task: r[column.task]} for r in records])
    protocol = _protocol(rows[0].jobs[0], column.eval_set) if rows[0].jobs else None
    return (arms, protocol) if protocol is not None else None


def _bootstrap(found, resamples: int, confidence: float, seed: int) -> PairedBootstrap | None:
    """The bootstrap of ``found`` arms, or ``None`` when they were evaluated on different sequences (e.g. a sweep
    over the evaluation set's size): those are not comparable pairs."""
    if found is None:
        return None
    try:
        return PairedBootstrap(found[0], found[1], resamples, confidence, seed)
    except ValueError:
        return None


def attach(table, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> None:
    """Fill every row's ``intervals`` (the value's interval) and ``vs_fp`` (value − FP, paired with the FP
    evaluation of the row's own jobs) for the metric columns whose jobs kept their per-sequence records; other
    cells stay ``None``."""
    for row in table.rows:
        row.intervals = [None] * len(table.columns)
        row.vs_fp = [None] * len(table.columns)
        if row.status != "ok" or not row.jobs:
            continue
        fp_row = row.group == "FP"
        for i, column in enumerate(table.columns):
            if column.kind != "metric":
                continue
            phases = ["fp"] if fp_row else ["quant", "fp"]
            boot = _bootstrap(_arms([row] * len(phases), column, phases), resamples, confidence, seed)
            if boot is None:
                continue
            row.intervals[i] = boot.estimate(column.task, column.metric, [1.0] + [0.0] * (len(phases) - 1))
            if not fp_row:
                row.vs_fp[i] = boot.estimate(column.task, column.metric, [1.0, -1.0])


def compare(mine, base, column, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Estimate | None:
    """``mine − base`` on ``column``, paired over sequences (both rows' seeds resampled), or ``None`` without
    records."""
    if column.kind != "metric" or mine.status != "ok" or base.status != "ok":
        return None
    boot = _bootstrap(_arms([mine, base], column, ["quant", "quant"]), resamples, confidence, seed)
    return boot.estimate(column.task, column.metric, [1.0, -1.0]) if boot is not None else None
