"""Aggregation of a sweep directory (fgq.sweeps) on job directories written here: statuses of failed, unfinished
and never-started jobs, the paper comparison and relative improvements, the renderers and the HTML report
(structure, and a screenshot when Chromium is installed)."""

import base64
import csv
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fgq.sweeps.aggregate import aggregate, main
from fgq.sweeps.paper import load_reference, method_key
from fgq.sweeps.reading import expected_jobs, load_sweep
from fgq.sweeps.table import relative

POSE = ("auc@30", "auc@15", "auc@5", "auc@3")


def write_sweep(root: Path, params: dict, task: list[str], report: dict, choices: dict | None = None) -> Path:
    master = {"hydra": {"sweeper": {"params": params}, "overrides": {"task": task},
                        "runtime": {"choices": {"model": "vggt", "dataset": "co3d", "quantizer": "fgq",
                                                "bits": "w4a4", **(choices or {})}}},
              "report": report, "logger": {}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump(master))
    return root


def write_job(root: Path, num: int, overrides: list[str], result: dict | None) -> Path:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if result is not None:
        (job / "metrics.json").write_text(json.dumps(result))
    return job


def pose_result(quantizer: str, bits: str, quant: dict, fp: dict, eval_set: str = "co3d",
                checkpoint: str | None = "/weights/vggt/model.pt") -> dict:
    def task(values: dict) -> dict:
        return {eval_set: {"camera": dict(values)}}

    degradation = {eval_set: {"camera": {"degradation(auc@30)": (fp["auc@30"] - quant["auc@30"]) / fp["auc@30"]}}}
    return {"status": "ok", "choices": {"model": "vggt", "dataset": "co3d", "quantizer": quantizer, "bits": bits},
            "checkpoint": checkpoint, "spec": {"w_bits": 4, "a_bits": int(bits[3:])}, "fp": task(fp),
            "quant": task(quant), "degradation": degradation, "quantization": {"quantize_s": 1.0}}


FP = {"auc@30": 0.9731, "auc@15": 0.9462, "auc@5": 0.8462, "auc@3": 0.7630}  # the paper's FP16 Co3Dv2 row
REPORT = {"title": "Table 1 test", "table": "1", "columns": [f"camera/{m}" for m in POSE]}


@pytest.fixture()
def mixed_sweep(tmp_path) -> Path:
    """quantizer rtn,fgq × bits w4a8,w4a4: job 0 ok, job 1 failed, job 2 killed (no metrics.json), job 3 never
    started (no directory)."""
    root = write_sweep(tmp_path / "sweep", {"quantizer": "rtn,fgq", "bits": "w4a8,w4a4"}, ["experiment=t"], REPORT)
    rtn = {"auc@30": 0.9619, "auc@15": 0.9238, "auc@5": 0.7822, "auc@3": 0.6691}
    write_job(root, 0, ["quantizer=rtn", "bits=w4a8", "experiment=t"], pose_result("rtn", "w4a8", rtn, FP))
    write_job(root, 1, ["quantizer=rtn", "bits=w4a4", "experiment=t"],
              {"status": "failed", "error": "RuntimeError: boom", "choices": {"quantizer": "rtn", "bits": "w4a4"}})
    write_job(root, 2, ["quantizer=fgq", "bits=w4a8", "experiment=t"], None)
    return root


def test_failed_unfinished_and_missing_jobs_stay_in_the_table(mixed_sweep):
    result = aggregate(mixed_sweep)
    statuses = {job.name: job.status for job in result.sweep.jobs}
    assert statuses == {"0": "ok", "1": "failed", "2": "incomplete", "(not started 0)": "missing"}
    md = result.markdown
    assert "4 jobs, 1 ok, 1 failed, 1 incomplete, 1 missing" in md
    assert "| W4A8 | RTN | 0.9619 | 0.9238 | 0.7822 | 0.6691 | ok |" in md
    assert "| W4A4 | RTN | failed | failed | failed | failed | failed: RuntimeError: boom |" in md
    assert "| W4A8 | FGQ | incomplete | incomplete | incomplete | incomplete | incomplete: no metrics.json" in md
    assert "| W4A4 | FGQ | missing | missing | missing | missing | missing: never started" in md
    assert md.count("\n- job ") == 3  # the list of jobs that did not finish
    assert len(result.problems) == 3
    with (mixed_sweep / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["status"] for r in rows} == {"ok", "failed", "incomplete", "missing"}
    assert {r["error"] for r in rows if r["status"] == "failed"} == {"RuntimeError: boom"}
    html = (mixed_sweep / "report.html").read_text()
    # styled rows in our table and in the paper-beside-ours table
    assert html.count('<tr class="failed">') == 2 and html.count('<tr class="unfinished">') == 4
    assert main([str(mixed_sweep), "--no-figures"]) == 1  # the CLI's exit status flags the problems


def test_grid_rebuilt_with_glob_and_command_line_axes(tmp_path):
    from omegaconf import OmegaConf

    master = OmegaConf.create({"hydra": {"sweeper": {"params": {"quantizer": "glob([rtn,fgq,nosuch])",
                                                                "bits": "w4a8,w4a4"}},
                                         "overrides": {"task": ["experiment=t", "bits=w8a8,w4a4", "seed=1"]}}})
    jobs = expected_jobs(master)
    # the glob keeps existing options only (conf/quantizer order); the command line replaces the bits axis
    assert jobs == [{"quantizer": q, "bits": b, "experiment": "t", "seed": "1"}
                    for q in ("fgq", "rtn") for b in ("w8a8", "w4a4")]


def test_paper_numbers_beside_ours_and_relative_improvement(tmp_path):
    root = write_sweep(tmp_path / "sweep", {"quantizer": "rtn,quantvggt,fgq", "bits": "w4a4"}, [], REPORT)
    values = {"rtn": {"auc@30": 0.5, "auc@15": 0.4, "auc@5": 0.2, "auc@3": 0.1},
              "quantvggt": {"auc@30": 0.7, "auc@15": 0.6, "auc@5": 0.4, "auc@3": 0.2},
              "fgq": {"auc@30": 0.8, "auc@15": 0.7, "auc@5": 0.5, "auc@3": 0.3}}
    for i, q in enumerate(values):
        write_job(root, i, [f"quantizer={q}", "bits=w4a4"], pose_result(q, "w4a4", values[q], FP))
    result = aggregate(root, figures=False)
    md = result.markdown
    reference = load_reference()
    paper_fgq = reference[("1", "VGGT-1B", "FGQ", 4, 4, "Co3Dv2", "AUC@30", "value")]
    assert f"{paper_fgq:.4f} ({0.8 - paper_fgq:+.4f})" in md  # paper value (ours − paper)
    assert "| FP | FP | 0.9731 (+0.0000) |" in md
    # ours: FGQ over RTN on AUC@3 = (0.3 − 0.1)/0.1 = +200 %, the largest of the four columns
    assert "FGQ improves on RTN by up to 200.0 % (co3d AUC@3, W4A4)" in md
    # the paper's own numbers give the same computation, independently recomputed here
    paper_gain = max(relative(reference[("1", "VGGT-1B", "FGQ", 4, 4, ds, m, "value")],
                              reference[("1", "VGGT-1B", "QuantVGGT", 4, 4, ds, m, "value")], True)
                     for ds in ("Co3Dv2",) for m in ("AUC@30", "AUC@15", "AUC@5", "AUC@3"))
    assert f"FGQ improves on QuantVGGT by up to {100 * paper_gain:.1f} %" in md and "[paper]" in md


def test_the_papers_39_percent_is_fgq_over_quantvggt_on_7scenes_comp_median(tmp_path):
    """Fed the paper's own W4A4 7-Scenes numbers, the improvement table finds the abstract's "up to 39 %"."""
    report = {"table": "2", "columns": ["points/comp_med", "points/comp_mean"]}
    root = write_sweep(tmp_path / "sweep", {"quantizer": "quantvggt,fgq", "bits": "w4a4"}, [], report,
                       {"dataset": "seven_scenes"})
    reference = load_reference()
    for i, (q, name) in enumerate((("quantvggt", "QuantVGGT"), ("fgq", "FGQ"))):
        points = {f"comp_{s}": reference[("2", "VGGT-1B", name, 4, 4, "7-Scenes", "Comp", stat)]
                  for s, stat in (("med", "median"), ("mean", "mean"))}
        result = {"status": "ok", "checkpoint": "/w/model.pt", "choices": {"quantizer": q, "bits": "w4a4"},
                  "fp": {"seven_scenes": {"points": points}}, "quant": {"seven_scenes": {"points": points}}}
        write_job(root, i, [f"quantizer={q}", "bits=w4a4"], result)
    md = aggregate(root, figures=False).markdown
    assert "FGQ improves on QuantVGGT by up to 39.0 % (seven_scenes Comp med, W4A4)" in md


def test_table5_labels_match_the_papers_rows_in_either_task_order():
    assert method_key("FGQ[Fisher=camera+depth+point]") == method_key("FGQ[Fisher=point+depth+camera]")
    assert method_key("FGQ") == "FGQ"


def test_latex_rows_have_one_cell_per_column(mixed_sweep):
    aggregate(mixed_sweep, figures=False)
    tex = (mixed_sweep / "table.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") >= 1
    for block in tex.split(r"\begin{tabular}")[1:]:
        spec, body = block.split("}", 1)[0].lstrip("{"), block.split(r"\end{tabular}")[0]
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        assert rows and all(line.count(" & ") == len(spec) - 1 for line in rows)


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.cells, self.links = [], [], []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "script") and "src" in attrs:
            self.srcs.append(attrs["src"])
        if tag == "link":
            self.links.append(attrs)
        self._in_cell = tag == "td"

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data)


def _report(tmp_path) -> Path:
    """A sweep with real figures: two quantizers at two bit settings, one failed job."""
    root = write_sweep(tmp_path / "sweep", {"quantizer": "rtn,fgq", "bits": "w4a8,w4a4"}, [], REPORT)
    for i, (q, b) in enumerate((("rtn", "w4a8"), ("fgq", "w4a8"), ("rtn", "w4a4"))):
        quant = {m: v * (0.97 if b == "w4a8" else 0.7) * (1.02 if q == "fgq" else 1) for m, v in FP.items()}
        write_job(root, i, [f"quantizer={q}", f"bits={b}"], pose_result(q, b, quant, FP, checkpoint=None))
    write_job(root, 3, ["quantizer=fgq", "bits=w4a4"], {"status": "failed", "error": "ValueError: nan loss"})
    aggregate(root)
    return root


def test_report_html_is_self_contained_with_tables_and_figures(tmp_path):
    root = _report(tmp_path)
    parser = _Collect()
    parser.feed((root / "report.html").read_text())
    assert not parser.links and parser.srcs  # no stylesheet or script fetched from anywhere
    assert all(src.startswith("data:image/png;base64,") for src in parser.srcs)
    for src in parser.srcs:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(parser.srcs) == 2  # metric vs bits, degradation (no FGQ job finished: no Fisher heatmap)
    assert f"{FP['auc@30'] * 0.97:.4f}" in parser.cells and "failed: ValueError: nan loss" in parser.cells


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    root = _report(tmp_path)
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,1400", (root / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1400, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables and plots, not a blank page
    # the failed row's background (#fde2e2) and the table header's (#eef1f5) were painted
    for colour in ((253, 226, 226), (238, 241, 245)):
        assert (pixels == colour).all(axis=-1).sum() > 500, colour


def test_load_sweep_of_a_single_run_directory(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(pose_result("rtn", "w4a4", FP, FP)))
    sweep = load_sweep(tmp_path)
    assert [j.status for j in sweep.jobs] == ["ok"]


def test_summary_run_logs_the_results_table_to_wandb_offline(mixed_sweep, monkeypatch):
    from wandb_reader import run_info

    from fgq.sweeps.wandb_summary import log_to_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")  # never reach a server from tests
    result = aggregate(mixed_sweep, figures=False)
    log_to_wandb(result, {"wandb": {"project": "fgq", "mode": "offline"}})
    import wandb

    wandb.teardown()  # the W&B service writes the run file asynchronously; a process exit also flushes it
    files = list(mixed_sweep.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    info = run_info(files[0])
    assert info["job_type"] == "aggregate" and info["group"] == "/".join(mixed_sweep.parts[-2:])
    assert "aggregate" in info["tags"] and {"results/_type", "tables/0_0/_type"} <= info["history"]
    table = json.loads(next(mixed_sweep.glob("wandb/offline-run-*/files/media/table/results_*.table.json"))
                       .read_text())
    status = table["columns"].index("status")
    assert {row[status] for row in table["data"]} == {"ok", "failed", "incomplete", "missing"}


def test_bits_label_comes_from_the_bits_a_job_ran_with(tmp_path):
    root = write_sweep(tmp_path / "sweep", {"quantizer": "rtn,fgq", "bits.a_bits": "4,3"}, [], REPORT)
    values = {"auc@30": 0.95, "auc@15": 0.9, "auc@5": 0.7, "auc@3": 0.6}
    write_job(root, 0, ["quantizer=rtn", "bits.a_bits=4"], pose_result("rtn", "w4a4", values, FP))
    write_job(root, 1, ["quantizer=rtn", "bits.a_bits=3"], pose_result("rtn", "w4a3", values, FP))
    write_job(root, 2, ["quantizer=fgq", "bits.a_bits=4"], pose_result("fgq", "w4a4", values, FP))
    write_job(root, 3, ["quantizer=fgq", "bits.a_bits=3"], None)  # unfinished: the choice with its override
    rows = [(r.group, r.label, r.status) for r in aggregate(root, figures=False).tables[0].rows if r.group != "FP"]
    assert rows == [("w4a4", "RTN", "ok"), ("w4a4", "FGQ", "ok"), ("w4a3", "RTN", "ok"), ("w4a3", "FGQ", "incomplete")]


def _points_job(quantizer: str, seed: int, shift: float, base: np.ndarray) -> dict:
    """A finished job whose point-map Acc is ``base + shift`` per sequence (lower is better), with its records."""
    from fgq.metrics.pointmap import METRIC_KEYS

    def rows(values):
        return [{"sequence": f"s{i}", **dict.fromkeys(METRIC_KEYS, float(v))} for i, v in enumerate(values)]

    def metrics(values):
        return {"synthetic": {"points": dict.fromkeys(METRIC_KEYS, float(np.mean(values)))}}

    quant = base + shift
    return {"status": "ok", "choices": {"model": "vggt_tiny", "dataset": "synthetic", "quantizer": quantizer,
                                        "bits": "w4a4"}, "checkpoint": None, "spec": {"w_bits": 4, "a_bits": 4},
            "fp": metrics(base), "quant": metrics(quant), "quantization": {"quantize_s": 1.0},
            "records": {"fp": {"synthetic": {"points": rows(base)}}, "quant": {"synthetic": {"points": rows(quant)}}},
            "protocols": {"synthetic": {"tasks": ["points"], "icp": False}}}


def test_intervals_seeds_and_significance_from_records(tmp_path):
    report = {"title": "intervals", "columns": ["points/acc_mean"], "bootstrap": {"resamples": 200}}
    root = write_sweep(tmp_path / "sweep", {"quantizer": "rtn,fgq", "seed": "0,1"}, [], report,
                       {"model": "vggt_tiny", "dataset": "synthetic"})
    base = np.random.default_rng(0).normal(1.0, 0.3, size=24)  # sequences of very different difficulty
    shifts = {("rtn", 0): 0.05, ("rtn", 1): 0.07, ("fgq", 0): 0.001, ("fgq", 1): 0.002}
    for num, ((quantizer, seed), shift) in enumerate(shifts.items()):
        write_job(root, num, [f"quantizer={quantizer}", f"seed={seed}"], _points_job(quantizer, seed, shift, base))
    result = aggregate(root, figures=False)
    rows = {r.label: r for r in result.tables[0].rows}
    assert set(rows) == {"FP", "RTN", "FGQ"} and len(rows["RTN"].jobs) == 2  # the seeds are one row
    assert rows["RTN"].values[0] == pytest.approx(float(np.mean(base)) + 0.06)  # the mean over seeds
    assert rows["RTN"].vs_fp[0].significant and rows["RTN"].vs_fp[0].low > 0  # worse than FP beyond noise
    assert rows["FP"].intervals[0].half_width > 0.05  # unpaired, the sequences' spread is large
    assert "±" in result.markdown and "†" in result.markdown
    assert "FGQ vs each baseline: 1 of 1 comparisons" in result.markdown
    assert "FGQ improves on RTN by up to" in result.markdown and "beyond noise" in result.markdown
    with (root / "results.csv").open() as f:
        line = next(r for r in csv.DictReader(f) if r["method"] == "RTN")
    assert line["seeds"] == "2" and float(line["ci_low"]) < float(line["value"]) < float(line["ci_high"])
    assert line["vs_fp_significant"] == "True"


def test_jobs_on_different_evaluation_sets_are_not_paired(tmp_path):
    report = {"title": "sizes", "columns": ["points/acc_mean"], "bootstrap": {"resamples": 50}}
    root = write_sweep(tmp_path / "sweep", {"quantizer": "rtn,fgq"}, [], report,
                       {"model": "vggt_tiny", "dataset": "synthetic"})
    rng = np.random.default_rng(1)
    write_job(root, 0, ["quantizer=rtn"], _points_job("rtn", 0, 0.05, rng.normal(1.0, 0.3, size=8)))
    write_job(root, 1, ["quantizer=fgq"], _points_job("fgq", 0, 0.0, rng.normal(1.0, 0.3, size=16)))
    result = aggregate(root, figures=False)  # FGQ vs RTN cannot be paired: no interval, no crash
    rows = {r.label: r for r in result.tables[0].rows}
    assert rows["RTN"].vs_fp[0] is not None and rows["FGQ"].vs_fp[0] is not None  # each with its own FP
    assert "single draw" in result.markdown
