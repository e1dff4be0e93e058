"""Renderers of a sweep's tables: markdown, LaTeX (booktabs), CSV and a self-contained HTML report (inline CSS,
figures embedded as base64 PNG), so that people without W&B can read a sweep from one file."""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from fgq.io import atomic_write

STATUS_STYLE = {"failed": "failed", "incomplete": "unfinished", "missing": "unfinished"}


@dataclass
class Grid:
    """A printable table: a title, a header and rows of cell strings; ``status`` per row (for styling)."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    status: list[str] = field(default_factory=list)

    def add(self, cells: list[str], status: str = "ok") -> None:
        self.rows.append([str(c) for c in cells])
        self.status.append(status)


@dataclass
class Plot:
    name: str
    path: Path
    caption: str


Section = tuple[str, list[Grid], list[str]]  # (title, grids, notes)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_grid(grid: Grid) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in grid.header) + " |",
             "|" + "|".join("---" for _ in grid.header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in grid.rows]
    return "\n".join(lines)


def render_markdown(title: str, intro: list[str], sections: list[Section], problems: list[str]) -> str:
    out = [f"# {title}", "", *intro, ""]
    for name, grids, notes in sections:
        out += [f"## {name}", ""]
        for i, grid in enumerate(grids):
            if i:
                out += [f"### {grid.title}", ""]
            out += [markdown_grid(grid), ""]
        out += [f"- {note}" for note in notes] + ([""] if notes else [])
    if problems:
        out += ["## Jobs that did not finish", "", *[f"- {p}" for p in problems], ""]
    return "\n".join(out)


def _tex(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                          ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                          ("^", r"\textasciicircum{}"), ("−", "-"), ("–", "--"), ("·", r"\textperiodcentered{}"),
                          ("Δ", r"$\Delta$")):
        text = text.replace(char, escaped)
    return text


def latex_grid(grid: Grid) -> str:
    """A booktabs tabular; a rule between bit settings (the first column) as in the paper."""
    spec = "ll" + "r" * (len(grid.header) - 2)
    lines = [f"% {grid.title}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex(h) for h in grid.header) + r" \\", r"\midrule"]
    previous = None
    for row in grid.rows:
        if previous is not None and row[0] != previous:
            lines.append(r"\midrule")
        previous = row[0]
        lines.append(" & ".join(_tex(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def render_latex(title: str, sections: list[Section]) -> str:
    """Tabulars only (no preamble): ``\\input`` them into a document that loads booktabs."""
    out = [f"% {title} (needs \\usepackage{{booktabs}})"]
    for _, grids, _ in sections:
        out += [latex_grid(g) + "\n" for g in grids]
    return "\n".join(out)


def write_text(path: Path, text: str) -> Path:
    """Atomically (a sweep's outputs are never half-written, even when aggregation is interrupted)."""
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def write_csv(path: Path, grids: list[tuple[str, Grid]], records: list[dict] | None = None) -> Path:
    """``records``: one header, one line per record. Otherwise each grid in turn (its own header, prefixed by the
    table name), separated by an empty line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if records is not None:
        fields = list(records[0]) if records else ["table"]
        writer.writerow(fields)
        writer.writerows([["" if r[k] is None else r[k] for k in fields] for r in records])
    else:
        for i, (name, grid) in enumerate(grids):
            if i:
                writer.writerow([])
            writer.writerow(["table", *grid.header])
            writer.writerows([[name, *row] for row in grid.rows])
    return write_text(path, buffer.getvalue())


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: right; white-space: nowrap; }
th { background: #eef1f5; } td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
tr.failed td { background: #fde2e2; color: #8a1111; } tr.unfinished td { background: #eee; color: #666; }
ul.notes li { margin: .2em 0; } figure { display: inline-block; margin: .6em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { font-size: .85em; color: #555; }
"""


def html_grid(grid: Grid) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in grid.header)
    body = []
    for row, status in zip(grid.rows, grid.status, strict=True):
        cls = f' class="{STATUS_STYLE[status]}"' if status in STATUS_STYLE else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return (f"<table><caption>{html.escape(grid.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def write_html(path: Path, title: str, intro: list[str], sections: list[Section], problems: list[str],
               plots: list[Plot]) -> Path:
    parts = [f"<h1>{html.escape(title)}</h1>", *[f"<p>{html.escape(line)}</p>" for line in intro]]
    for name, grids, notes in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts += [html_grid(g) for g in grids]
        if notes:
            parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if problems:
        parts.append("<h2>Jobs that did not finish</h2><ul>" +
                     "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>")
    if plots:
        parts.append("<h2>Figures</h2>")
        for plot in plots:
            data = base64.b64encode(plot.path.read_bytes()).decode()
            parts.append(f'<figure><img alt="{html.escape(plot.name)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    return write_text(path, page)
