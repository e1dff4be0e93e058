"""The paper-layout tables of a sweep (built by ``fgq.sweeps.aggregate``; the figures and the W&B summary read
them too). Rows are grouped by bit setting as in the paper, an FP row first (from the jobs' FP evaluation);
failed, unfinished and never-started jobs stay in the table with their status. When the model and an evaluation
set are the paper's (``experiments/reference/paper_results.csv``), the paper's numbers stand beside ours with the
differences, and FGQ's relative improvement over each baseline (the paper's "up to 39 %") is computed for ours
and for the paper's numbers.

The layout comes from the experiment's ``report`` node (``experiments/*.yaml``): ``title``, ``table`` (paper
table ids), ``columns`` (``task/metric`` for every evaluation set that has it, ``cost/<name>``, or
``r/<task|pooled>/<pearson|spearman|...>`` for the Fisher validation), ``rows`` (the settings that name a row;
default ``[quantizer]``), ``labels`` (display name of a setting's value, also used to find the paper's row) and
``ours`` (the row whose improvement is reported; default ``FGQ``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from fgq.directions import higher_is_better
from fgq.sweeps import intervals
from fgq.sweeps.paper import PAPER_METRICS, PAPER_MODELS, load_reference, paper_value
from fgq.sweeps.reading import SECTION_KEYS, Job, Sweep
from fgq.sweeps.render import Grid

METHOD_NAMES = {"rtn": "RTN", "gptq": "GPTQ", "quarot": "QuaRot", "flatquant": "FlatQuant", "quantvggt": "QuantVGGT",
                "fgq": "FGQ", "load": "loaded"}
# Job-level cost columns: label and where the numbers are in metrics.json, summed (calib_s: the quantizer's
# calibration plus FGQ's Fisher pass, as the paper counts it); peak_mb: CUDA allocated if measured, else RSS.
# FGQ's quantize_s includes its Fisher pass (quantization.fisher_s); job dirs written before the Fisher moved into
# the quantizer kept that time apart in timings.fisher_s, so both are summed.
COSTS = {
    "calib_s": ("calibration s", (("quantization", "quantize_s"), ("timings", "fisher_s"))),
    "fisher_s": ("Fisher s", (("quantization", "fisher_s"), ("timings", "fisher_s"))),
    "peak_mb": ("peak MB", ()),
    "total_s": ("job s", (("timings", "total_s"),)),
}
DEFAULT_COLUMNS = ["camera/auc@30", "depth/abs_rel", "points/acc_mean"]  # the headline metric of each task
VALIDATION_COLUMNS = [f"r/{g}/{k}" for g in ("camera", "depth", "points", "pooled") for k in ("pearson", "spearman")]


def metric_label(metric: str) -> str:
    if metric in PAPER_METRICS:
        name, stat = PAPER_METRICS[metric]
        return name + (" med" if stat == "median" else "")
    return COSTS[metric][0] if metric in COSTS else metric


@dataclass
class Column:
    kind: str  # metric | cost | r
    metric: str
    eval_set: str | None = None
    task: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "r":
            return f"{self.task} {self.metric}"
        return f"{self.eval_set} {metric_label(self.metric)}" if self.eval_set else metric_label(self.metric)

    @property
    def higher(self) -> bool:
        return self.kind != "cost" and higher_is_better(self.metric)

    def value(self, result: dict | None, phase: str = "quant") -> float | None:
        if not result:
            return None
        if self.kind == "metric":
            value = (((result.get(phase) or {}).get(self.eval_set) or {}).get(self.task) or {}).get(self.metric)
        elif self.kind == "r":
            node = result.get("validation") or {}
            group = node.get("pooled") if self.task == "pooled" else (node.get("tasks") or {}).get(self.task)
            value = (group or {}).get(self.metric)
        elif phase != "quant":
            return None
        elif self.metric == "peak_mb":
            memory = result.get("peak_memory") or {}
            value = memory.get("cuda_max_allocated_mb", memory.get("cpu_max_rss_mb"))
        else:
            parts = [(result.get(first) or {}).get(second) for first, second in COSTS[self.metric][1]]
            if not isinstance(parts[0], (int, float)):  # the first part is the column's own number
                return None
            value = sum(p for p in parts if isinstance(p, (int, float)))
        return float(value) if isinstance(value, (int, float)) else None


@dataclass
class Row:
    group: str  # "FP" or the bits a job ran with (``bits_group``)
    label: str
    job: Job | None  # None for the FP row; else the row's first job (its first unfinished one, if any)
    values: list[float | None]  # per column: the mean over the row's finished jobs (its seeds)
    paper_method: str | None = None
    paper: list[float | None] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)  # every seed of the row (the FP row: the jobs it comes from)
    intervals: list = field(default_factory=list)  # per column: ``Estimate`` of the value, or None (no records)
    vs_fp: list = field(default_factory=list)  # per column: ``Estimate`` of value − FP, paired, or None

    @property
    def status(self) -> str:
        return "ok" if self.job is None else self.job.status


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[Row]
    paper_model: str | None = None
    notes: list[str] = field(default_factory=list)
    bootstrap: dict | None = None  # resamples, confidence, seed: set when intervals are computed (fgq.sweeps.intervals)
    comparisons: dict = field(default_factory=dict)  # (group, ours, baseline, column) → Estimate | None, computed once


def bits_label(bits: str | None) -> str:
    return "FP" if bits in (None, "FP", "w16a16") else str(bits).upper()


def bits_pair(bits: str | None) -> tuple[int, int] | None:
    match = re.fullmatch(r"w(\d+)a(\d+)", str(bits))
    return (int(match[1]), int(match[2])) if match else None


BIT_KEYS = ("bits.w_bits", "bits.a_bits")  # overrides the bits label already shows


def bits_group(sweep: Sweep, job: Job) -> str:
    """The bits a job ran with, ``w{W}a{A}``: its recorded spec; for a job that did not finish, its bits choice
    with any ``bits.w_bits``/``bits.a_bits`` override applied. Never the preset's name alone (``bits=w4a4
    bits.a_bits=3`` ran W4A3)."""
    spec = (job.result or {}).get("spec") or {}
    if "w_bits" in spec and "a_bits" in spec:
        return f"w{spec['w_bits']}a{spec['a_bits']}"
    choice = str(sweep.value(job, "bits"))
    pair = bits_pair(choice)
    if pair is None:
        return choice
    w, a = (sweep.value(job, key) for key in BIT_KEYS)
    return f"w{w if w is not None else pair[0]}a{a if a is not None else pair[1]}"


def _columns(spec: list[str], jobs: list[Job]) -> list[Column]:
    ok = [j.result for j in jobs if j.status == "ok" and j.result]
    eval_sets = list(dict.fromkeys(name for r in ok for name in (r.get("quant") or {})))
    columns = []
    for item in spec:
        kind, _, rest = str(item).partition("/")
        if kind == "cost":
            columns.append(Column("cost", rest))
        elif kind == "r":
            task, _, metric = rest.partition("/")
            columns.append(Column("r", metric, task=task))
        else:
            columns += [Column("metric", rest, name, kind) for name in eval_sets
                        if any(rest in ((r.get("quant") or {}).get(name) or {}).get(kind, {}) for r in ok)]
    if any(c.kind == "metric" for c in columns):  # the paper's layout: all metrics of one dataset side by side
        order = {name: i for i, name in enumerate(eval_sets)}
        columns.sort(key=lambda c: (c.kind != "metric", order.get(c.eval_set, 0)))
    return columns


def _row_label(sweep: Sweep, job: Job, row_keys: list[str], extra: list[str], labels: dict) -> str:
    parts = []
    for key in row_keys:
        value = sweep.value(job, key)
        parts.append(str(labels.get(value) or (METHOD_NAMES.get(value, value) if key == "quantizer" else value)))
    suffix = ", ".join(f"{k}={sweep.value(job, k)}" for k in extra)
    label = " ".join(parts) + (f" [{suffix}]" if suffix else "")
    return label or "default"  # nothing but the bit setting varies (e.g. a Fisher-validation sweep)


def _paper_row(row: Row, table: Table, bits: tuple[int, int] | None, paper_tables: list[str], reference: dict,
               on_co3d: bool) -> list[float | None]:
    return [paper_value(reference, paper_tables, table.paper_model, row.paper_method, bits, c.kind, c.eval_set,
                        c.metric, on_co3d) for c in table.columns]


def _fp_row(table: Table, ok: list[Job], paper_tables: list[str], reference: dict) -> Row | None:
    """The FP row from the jobs' own FP evaluations (identical across a sweep: one cached evaluation)."""
    fp_jobs = [j for j in ok if "fp" in j.result]
    if not fp_jobs or not any(c.kind == "metric" for c in table.columns):
        return None
    fp = Row("FP", "FP", None, [c.value(fp_jobs[0].result, "fp") for c in table.columns], "FP16", jobs=fp_jobs)
    fp.paper = _paper_row(fp, table, (16, 16), paper_tables, reference, False)
    if any([c.value(j.result, "fp") for c in table.columns] != fp.values for j in fp_jobs[1:]):
        table.notes.append(f"the jobs' FP evaluations differ; the FP row is job {fp_jobs[0].name}'s "
                           "(a swept setting changes the FP model or its evaluation)")
    return fp


def _mean_values(columns: list[Column], jobs: list[Job]) -> list[float | None]:
    """Per column, the mean over the finished jobs (a row's seeds) that have the value."""
    out = []
    for column in columns:
        values = [v for v in (column.value(j.result) for j in jobs if j.status == "ok") if v is not None]
        out.append(sum(values) / len(values) if values else None)
    return out


def build_tables(sweep: Sweep, reference: dict | None = None) -> list[Table]:
    """One table per (model, dataset) of the sweep, rows grouped by bit setting, FP first."""
    spec = sweep.report
    reference = load_reference() if reference is None else reference
    validation = spec.get("kind") == "validation" or any(
        (j.result or {}).get("job") == "fisher_validation" for j in sweep.jobs)
    column_spec = list(spec.get("columns") or (VALIDATION_COLUMNS if validation else DEFAULT_COLUMNS))
    row_keys = list(spec.get("rows") or ([] if validation else ["quantizer"]))
    labels = dict(spec.get("labels") or {})
    extra = [k for k in sweep.varying() if k not in (*row_keys, "bits", *BIT_KEYS, *SECTION_KEYS, "seed")]
    paper_tables = [str(t) for t in (spec["table"] if isinstance(spec.get("table"), list) else [spec.get("table")])
                    if t is not None]
    sections: dict[tuple, list[Job]] = {}
    for job in sweep.jobs:
        sections.setdefault(tuple(sweep.value(job, k) for k in SECTION_KEYS), []).append(job)
    order = list(METHOD_NAMES.values())
    tables = []
    for (model, dataset), jobs in sections.items():
        ok = [j for j in jobs if j.status == "ok" and j.result]
        checkpoint = next((j.result.get("checkpoint") for j in ok if j.result.get("checkpoint")), None)
        table = Table(f"{model} · {dataset}", _columns(column_spec, jobs), [],
                      PAPER_MODELS.get(str(model)) if checkpoint else None)
        on_co3d = "co3d" in str(dataset)  # the paper's costs were measured calibrating on Co3Dv2
        fp = _fp_row(table, ok, paper_tables, reference)
        table.rows += [fp] if fp else []
        for group in dict.fromkeys(bits_group(sweep, j) for j in jobs):
            seeds: dict[str, list[Job]] = {}  # the jobs of one row: the seeds of one setting
            for job in (j for j in jobs if bits_group(sweep, j) == group):
                seeds.setdefault(_row_label(sweep, job, row_keys, extra, labels), []).append(job)
            rows = []
            for label, row_jobs in seeds.items():
                first = next((j for j in row_jobs if j.status != "ok"), row_jobs[0])
                row = Row(group, label, first, _mean_values(table.columns, row_jobs),
                          paper_method=None if extra else label, jobs=row_jobs)  # extra settings: not the paper's
                row.paper = _paper_row(row, table, bits_pair(group), paper_tables, reference, on_co3d)
                rows.append(row)
            rows.sort(key=lambda r: order.index(r.label) if r.label in order else len(order))
            table.rows += rows
        tables.append(table)
    return tables


@dataclass
class Improvement:
    group: str
    baseline: str
    values: list[float | None]  # per column, relative improvement of ours (fraction; positive = ours better)
    # per column: True/False = ours better beyond noise or not (paired interval of ours − baseline excludes 0 in
    # ours' favour); None = no interval (no per-sequence records, or the paper's numbers)
    significant: list[bool | None] = field(default_factory=list)

    def best(self, columns: list[Column], significant_only: bool = False) -> tuple[float, str] | None:
        """The largest improvement in a quality column (costs are shown, but are not what "up to" means);
        ``significant_only``: among the improvements beyond noise."""
        flags = self.significant or [None] * len(self.values)
        pairs = [(v, c.label) for v, c, s in zip(self.values, columns, flags, strict=True)
                 if v is not None and c.kind != "cost" and (s or not significant_only)]
        return max(pairs) if pairs else None


def relative(ours: float | None, base: float | None, higher: bool) -> float | None:
    if ours is None or base is None or base == 0 or math.isnan(ours) or math.isnan(base):
        return None
    return (ours - base) / abs(base) if higher else (base - ours) / abs(base)


def improvements(table: Table, ours: str, paper: bool = False) -> list[Improvement]:
    """FGQ (``ours``) against every other finished row of the same bit setting, per column."""
    out = []
    for group in dict.fromkeys(r.group for r in table.rows if r.group != "FP"):
        rows = [r for r in table.rows if r.group == group and r.status == "ok"]
        mine = next((r for r in rows if r.label == ours), None)
        if mine is None:
            continue
        for base in rows:
            if base is mine:
                continue
            a, b = (mine.paper, base.paper) if paper else (mine.values, base.values)
            values = [relative(x, y, c.higher) for x, y, c in zip(a, b, table.columns, strict=True)]
            if any(v is not None for v in values):
                flags = [None] * len(values) if paper else [_better(table, mine, base, i) for i in range(len(values))]
                out.append(Improvement(group, base.label, values, flags))
    return out


def _better(table: Table, mine: Row, base: Row, i: int) -> bool | None:
    """Is ``mine`` better than ``base`` on column ``i`` beyond noise (paired bootstrap)? None: no interval."""
    if table.bootstrap is None:
        return None
    key = (mine.group, mine.label, base.label, i)
    if key not in table.comparisons:
        table.comparisons[key] = intervals.compare(mine, base, table.columns[i], **table.bootstrap)
    diff = table.comparisons[key]
    if diff is None:
        return None
    return diff.low > 0 if table.columns[i].higher else diff.high < 0


def _fmt(value: float | None, column: Column, interval=None, vs_fp=None) -> str:
    """The value; with its interval ``±`` its half-width, and ``†`` when it differs from FP beyond noise."""
    if value is None or math.isnan(value):
        return "–"
    text = f"{value:.1f}" if column.kind == "cost" else f"{value:.4f}"
    if interval is not None and math.isfinite(interval.half_width):
        text += f" ±{interval.half_width:.4f}"
    return text + (" †" if vs_fp is not None and vs_fp.significant else "")


def grids(table: Table, ours: str) -> list[Grid]:
    """The table (ours), the paper's numbers beside ours, and the relative improvements, as printable grids."""
    labels = [c.label for c in table.columns]
    main = Grid(f"{table.title}: ours", ["bits", "method", *labels, "status"])
    for row in table.rows:
        extras = zip(row.intervals or [None] * len(row.values), row.vs_fp or [None] * len(row.values), strict=True)
        cells = [_fmt(v, c, ci, d) if row.status == "ok" else row.status
                 for v, c, (ci, d) in zip(row.values, table.columns, extras, strict=True)]
        status = row.status if row.job is None or row.status == "ok" else f"{row.status}: {row.job.error}"
        main.add([bits_label(row.group), row.label, *cells, status], row.status)
    out = [main]
    if any(v is not None for row in table.rows for v in row.paper):
        paper = Grid(f"{table.title}: paper ({table.paper_model}) and ours − paper", ["bits", "method", *labels])
        for row in table.rows:
            cells = [f"{p:.4f} ({v - p:+.4f})" if p is not None and v is not None else
                     (f"{p:.4f}" if p is not None else "–") for v, p in zip(row.values, row.paper, strict=True)]
            paper.add([bits_label(row.group), row.label, *cells], row.status)
        out.append(paper)
    for use_paper in (False, True):
        found = improvements(table, ours, paper=use_paper)
        if not found:
            continue
        who = "paper" if use_paper else "ours"
        grid = Grid(f"{table.title}: relative improvement of {ours} ({who})", ["bits", "over", *labels, "up to"])
        for imp in found:
            best = imp.best(table.columns)
            flags = imp.significant or [None] * len(imp.values)
            cells = ["–" if v is None else f"{100 * v:+.1f} %" + (" *" if s else "")
                     for v, s in zip(imp.values, flags, strict=True)]
            grid.add([bits_label(imp.group), imp.baseline, *cells,
                      f"{100 * best[0]:+.1f} % ({best[1]})" if best else "–"])
        out.append(grid)
    return out


def headline(table: Table, ours: str) -> list[str]:
    """The paper-style sentences: "FGQ improves on X by up to Y % (column, bits)", one per baseline. With intervals
    only improvements beyond noise count, and the sentence says how many comparisons were made; the paper's
    numbers have no interval and are reported as single draws."""
    lines = []
    for use_paper, who in ((False, ""), (True, " [paper]")):
        found = improvements(table, ours, paper=use_paper)
        tested = not use_paper and any(s is not None for imp in found for s in imp.significant)
        best: dict[str, tuple[float, str]] = {}
        for imp in found:
            top = imp.best(table.columns, significant_only=tested)
            if top and (imp.baseline not in best or top[0] > best[imp.baseline][0]):
                best[imp.baseline] = (top[0], f"{top[1]}, {bits_label(imp.group)}")
        if tested:
            made = sum(s is not None for imp in found for s in imp.significant)
            wins = sum(bool(s) for imp in found for s in imp.significant)
            lines.append(f"{ours} vs each baseline: {wins} of {made} comparisons (bits × baseline × metric) are "
                         "improvements beyond noise (paired 95 % bootstrap interval excludes 0)")
            bases = dict.fromkeys(imp.baseline for imp in found)
            lines += [f"{ours} improves on {base} by up to {100 * best[base][0]:.1f} % ({best[base][1]}), beyond noise"
                      if base in best and best[base][0] > 0 else
                      f"{ours} does not improve on {base} beyond noise" for base in bases]
            continue
        lines += [f"{ours} improves on {base} by up to {100 * v:.1f} % ({where}){who}, a single draw (no interval)"
                  if v > 0 else f"{ours} does not improve on {base} (best {100 * v:+.1f} %: {where}){who}"
                  for base, (v, where) in best.items()]
    return lines


def long_rows(tables: list[Table]) -> list[dict]:
    """One line per (table, row, column): what ``results.csv`` and the W&B Table hold."""
    out = []
    for table in tables:
        for row in table.rows:
            for col, value, paper in zip(table.columns, row.values, row.paper or [None] * len(row.values),
                                         strict=True):
                i = table.columns.index(col)
                ci = row.intervals[i] if row.intervals else None
                vs_fp = row.vs_fp[i] if row.vs_fp else None
                out.append({"table": table.title, "bits": bits_label(row.group), "method": row.label,
                            "job": row.job.name if row.job else "", "status": row.status,
                            "seeds": sum(j.status == "ok" for j in row.jobs) if row.group != "FP" else 1,
                            "eval_set": col.eval_set or "", "task": col.task or col.kind, "metric": col.metric,
                            "value": value, "ci_low": ci.low if ci else None, "ci_high": ci.high if ci else None,
                            "vs_fp_low": vs_fp.low if vs_fp else None, "vs_fp_high": vs_fp.high if vs_fp else None,
                            "vs_fp_significant": vs_fp.significant if vs_fp else None, "paper": paper,
                            "delta": value - paper if value is not None and paper is not None else None,
                            "error": row.job.error if row.job else ""})
    return out
