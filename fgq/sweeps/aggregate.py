"""Aggregate a sweep: ``python -m fgq.sweeps multirun/<date>/<time>_<task>`` (also run by the Hydra callback
``fgq.sweeps.callback.AggregateSweep`` at the end of every ``run.py -m``).

Reads the job directories (``fgq.sweeps.reading``), builds the tables (``fgq.sweeps.table``) and writes next to
them ``table.md``, ``table.csv`` (paper layout), ``table.tex``, ``results.csv`` (one line per job × metric),
``figures/`` and a self-contained ``report.html``. Never recomputes anything.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fgq.sweeps.figures import make_figures
from fgq.sweeps.intervals import attach
from fgq.sweeps.reading import Job, Sweep, load_sweep
from fgq.sweeps.render import render_latex, render_markdown, write_csv, write_html, write_text
from fgq.sweeps.table import Table, build_tables, grids, headline, long_rows


@dataclass
class Aggregate:
    sweep: Sweep
    tables: list[Table]
    files: dict[str, Path]
    markdown: str

    @property
    def problems(self) -> list[Job]:
        return [j for j in self.sweep.jobs if j.status != "ok"]


def environment_note(job_lists: Iterable[list[Job]]) -> str | None:
    """A warning when the finished jobs of one table ran in different environments (``metrics.json``
    ``environment``: torch/CUDA versions, device, precision, threads), which can move numbers by more than rounding."""
    seen: dict[str, set] = {}
    for jobs in job_lists:
        for job in jobs:
            for key, value in ((job.result or {}).get("environment") or {}).items():
                seen.setdefault(key, set()).add(str(value))
    differ = {k: sorted(v) for k, v in seen.items() if len(v) > 1}
    if not differ:
        return None
    return "warning: the jobs of this table ran in different environments (" + "; ".join(
        f"{k}: {', '.join(v)}" for k, v in differ.items()) + "); their numbers may differ beyond rounding"


def aggregate(root: str | Path, reference: dict | None = None, figures: bool = True) -> Aggregate:
    """Build every table of the sweep in ``root`` and write the files listed in the module doc."""
    sweep = load_sweep(root)
    tables = build_tables(sweep, reference)
    bootstrap = {"resamples": 1000, "confidence": 0.95, "seed": 0, **dict(sweep.report.get("bootstrap") or {})}
    for table in tables:
        table.bootstrap = bootstrap
        attach(table, **bootstrap)
        if any(ci is not None for row in table.rows for ci in row.intervals):
            table.notes.append(
                f"± half-width of the {100 * bootstrap['confidence']:.0f} % interval: paired bootstrap over the "
                f"evaluation sequences ({bootstrap['resamples']} resamples; pose per category where the protocol "
                "averages per category) and over each row's seeds; values are means over seeds; † differs from FP "
                "beyond noise; * in the improvement table: beyond noise")
        mixed = environment_note(row.jobs for row in table.rows)
        if mixed:
            table.notes.append(mixed)
    ours = str(sweep.report.get("ours") or "FGQ")
    title = str(sweep.report.get("title") or f"Sweep {sweep.path.name}")
    counts = sweep.counts()
    intro = [f"Sweep `{sweep.path}`: {len(sweep.jobs)} jobs, " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    sections = [(t.title, grids(t, ours), t.notes + headline(t, ours)) for t in tables]
    problems = [f"job {j.name} ({' '.join(f'{k}={v}' for k, v in j.overrides.items())}): {j.status} — {j.error}"
                + (f" ({j.path})" if j.path else "") for j in sweep.jobs if j.status != "ok"]
    root = sweep.path
    files = {"markdown": root / "table.md", "csv": root / "table.csv", "latex": root / "table.tex",
             "results": root / "results.csv", "html": root / "report.html"}
    markdown = render_markdown(title, intro, sections, problems)
    write_text(files["markdown"], markdown)
    write_text(files["latex"], render_latex(title, sections))
    write_csv(files["csv"], [(name, g[0]) for name, g, _ in sections])
    rows = long_rows(tables)
    write_csv(files["results"], [], records=rows)
    plots = make_figures(sweep, tables, root / "figures") if figures else []
    write_html(files["html"], title, intro, sections, problems, plots)
    return Aggregate(sweep, tables, {**files, **{f"figure:{p.name}": p.path for p in plots}}, markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fgq.sweeps", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a sweep directory (multirun/<date>/<time>_<task>)")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and figures to W&B")
    parser.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib)")
    args = parser.parse_args(argv)
    try:
        result = aggregate(args.sweep_dir, figures=not args.no_figures)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.markdown)
    print(f"written: {', '.join(str(p) for k, p in result.files.items() if not k.startswith('figure:'))}")
    if args.wandb:
        from fgq.sweeps.wandb_summary import log_to_wandb

        log_to_wandb(result)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
