"""The scale check: VGGT-1B and π3 (random init, built on the device) through every costly path, in one command.

    PYTHONPATH=. python experiments/scale_check.py --out scale_check.json     # one CUDA GPU, ≤ 8 min on an H200
    python experiments/scale_check.py --tiny                                  # the same code path, tiny, on CPU (CI)

Per model: the FP forward at 518² with 4 and 24 frames (median time, peak memory, bf16-vs-fp32 output error); the
Fisher pass on N clips; FlatQuant and FGQ calibration of the first k blocks (one frame, one global) at the paper's
settings (64 clips × 4 frames, 2 clips per step, 15 epochs), per-block time and memory extrapolated to all blocks
and set against the paper's Table 6 (A100, W4A4: FlatQuant 52.53 min / 3.54 GB, FGQ 55.54 min / 3.62 GB); the RTN
and FlatQuant W4A4 forwards; save and strict reload of the quantized model (outputs must match bit for bit).

The calibration clips are random images: the weights are random, so only time, memory and finiteness mean
anything here (the metrics are measured on real weights by the jobs themselves). Each step is timed with the device
synchronised, runs under the job's precision (bf16 autocast on CUDA, heads fp32), and is skipped once ``--budget-s``
is spent; a failed step is recorded and the rest still run (exit 1 at the end). The JSON is rewritten after every
step, so a run stopped from outside keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fgq import CONF_DIR
from fgq.fisher.compute import compute_fisher, fisher_to_weights
from fgq.models import factory
from fgq.quant import FlatQuantConfig, LoadConfig, QuantSpec, RTNConfig, quantize, save_quantized
from fgq.quant.flatquant import flatquant_calibrate
from fgq.quant.registry import rebuild
from fgq.runtime import autocast, autocast_dtype

W4A4 = QuantSpec(w_bits=4, a_bits=4)
# The paper's Table 6 (A100 40 GB, W4A4, VGGT-1B): calibration time (min) and peak GPU memory (GB).
TABLE6 = {"flatquant": (52.53, 3.54), "fgq": (55.54, 3.62)}
FULL = dict(models=("vggt", "pi3"), frames=(4, 24), clips=64, calib_frames=4, fisher_clips=8, epochs=15, blocks=2,
            size=518)
TINY = dict(models=("vggt_tiny", "pi3_tiny"), frames=(2, 4), clips=4, calib_frames=2, fisher_clips=2, epochs=1,
            blocks=2, size=112)
FISHER_CLIPS_OFFICIAL = 32  # the official Fisher pass: the first 32 of the 64 calibration clips


class Check:
    """Steps, each timed, guarded by the budget, recorded in one JSON (rewritten after every step)."""

    def __init__(self, out: Path, budget_s: float, device: torch.device, header: dict) -> None:
        self.out, self.budget_s, self.device = out, budget_s, device
        self.start = time.perf_counter()
        self.report: dict = {"env": header, "models": {}}
        self.failed = False
        self.deadline_s = budget_s  # the current model's share of the budget (``main`` sets it per model)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, model: str, name: str, fn: Callable[[], dict]) -> dict | None:
        record = self.report["models"].setdefault(model, {})
        if self.elapsed() > self.deadline_s:
            record[name] = {"skipped": f"this model's share of the {self.budget_s:.0f} s budget is spent"}
            print(f"[{self.elapsed():6.1f}s] {model} {name}: skipped (budget)", flush=True)
            self.save()
            return None
        reset_peak(self.device)
        t = time.perf_counter()
        try:
            result = fn()
            result["wall_s"] = round(time.perf_counter() - t, 3)
        except Exception as err:  # recorded, and the remaining steps still run
            self.failed = True
            result = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}",
                      "traceback": traceback.format_exc(limit=6)}
        record[name] = result
        print(f"[{self.elapsed():6.1f}s] {model} {name}: {short(result)}", flush=True)
        self.save()
        return None if "error" in result else result

    def save(self) -> None:
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.report, indent=1, default=str))
        os.replace(tmp, self.out)


def short(result: dict) -> str:
    keys = [k for k in result if k != "traceback" and not isinstance(result[k], (dict, list))][:6]
    return ", ".join(f"{k}={result[k]}" for k in keys)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def resident_gb(device: torch.device) -> float | None:
    return round(torch.cuda.memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls after one warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def architecture(name: str) -> tuple[str, dict]:
    """The family and constructor knobs of ``fgq/conf/model/<name>.yaml`` (no checkpoint: random init)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        node = OmegaConf.to_container(compose("config", overrides=[f"model={name}"]).model, resolve=True)
    family = node.pop("_target_").rsplit(".", 1)[-1]
    for key in ("_convert_", "checkpoint", "init_seed"):
        node.pop(key, None)
    return family, node


def build(name: str, device: torch.device) -> torch.nn.Module:
    """Random init, parameters created directly on ``device`` (no host copy of a billion parameters)."""
    family, arch = architecture(name)
    with torch.device(device):
        return getattr(factory, family)(checkpoint=None, init_seed=0, **arch)


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def images(clips: int, frames: int, size: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(clips, frames, 3, size, size, generator=g).to(device)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def forward_step(model, frames: int, size: int, device, precision: str, repeats: int, compare: bool) -> dict:
    x = images(1, frames, size, device, seed=frames)

    def run():
        with torch.no_grad(), autocast(device, precision):
            return model(x)

    seconds, out = timed(run, device, repeats)
    result = {"frames": frames, "median_s": round(seconds, 4), "peak_gb": peak_gb(device),
              "finite": all(bool(torch.isfinite(v).all()) for v in out.values() if torch.is_tensor(v))}
    if compare and autocast_dtype(device, precision) is not None:
        with torch.no_grad():
            ref = model(x)  # fp32
        result["rel_error_vs_fp32"] = {k: round(relative_error(v, ref[k]), 5) for k, v in out.items()
                                       if torch.is_tensor(v) and k != "images"}
    return result


def calibration_clips(n: int, frames: int, size: int) -> list[dict]:
    """Random clips kept on the host, as calibration batches are (one clip per batch, as the paper's loader)."""
    return [{"images": images(1, frames, size, torch.device("cpu"), seed=1000 + i)} for i in range(n)]


def fisher_step(model, clips: list[dict], device, precision: str) -> tuple[dict, torch.Tensor]:
    amp = autocast_dtype(device, precision) is not None
    t = time.perf_counter()
    fisher = compute_fisher(model, clips, device=device, amp=amp)
    seconds = time.perf_counter() - t
    per_clip = seconds / len(clips)
    return {"clips": len(clips), "s": round(seconds, 2), "s_per_clip": round(per_clip, 3),
            "extrapolated_official_min": round(per_clip * FISHER_CLIPS_OFFICIAL / 60, 2), "peak_gb": peak_gb(device),
            "finite": bool(torch.isfinite(fisher).all()), "shape": list(fisher.shape)}, fisher


def activation_gb(view, ref, clips: list[dict], device, precision: str) -> float | None:
    """Memory one optimiser step's batch (2 clips) needs through the FP block with autograd: the activation term
    of the memory goal. Measured on the FP block before calibration replaces it."""
    if device.type != "cuda":
        return None
    with torch.no_grad(), autocast(device, precision):
        xs = [view.embed(c["images"].to(device)) for c in clips[:2]]
    x = torch.cat([a for a, _ in xs]).float().requires_grad_(True)
    pos = torch.cat([p for _, p in xs])
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.enable_grad(), autocast(device, precision):
        torch.autograd.grad(view.run_block(ref, x, pos).float().square().mean(), x)  # no parameter .grad left
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**30


def calibration_step(method: str, name: str, model, clips: list[dict], config: FlatQuantConfig, blocks: int,
                     device, precision: str, fisher: torch.Tensor | None) -> dict:
    view = model.quant_view()
    total_blocks = len(view.blocks)
    view.blocks = view.blocks[:blocks]  # the first k blocks: one frame and one global block
    act = activation_gb(view, view.blocks[0], clips, device, precision)
    weights = fisher_to_weights(fisher) if fisher is not None else None
    channel_weight = (lambda ref: weights[ref.index]) if weights is not None else None
    resident = resident_gb(device)
    sync(device)
    t = time.perf_counter()
    result = flatquant_calibrate(view, config, W4A4, clips, device, channel_weight=channel_weight,
                                 precision=precision)
    sync(device)
    seconds = time.perf_counter() - t
    per_block = [b["time_s"] for b in result["blocks"]]
    block_s = statistics.mean(per_block)
    capture_s = max(seconds - sum(per_block), 0.0)  # the embedding pass over all clips, done once
    extrapolated = (capture_s + block_s * total_blocks) / 60
    params = sum(p.numel() for p in view.blocks[0].module.parameters())
    trainable = sum(p.numel() for p in view.blocks[0].module.parameters() if p.requires_grad)
    peak = max((b["peak_device_mb"] or 0.0) for b in result["blocks"]) / 1024
    working = peak - resident if resident is not None else None
    out = {
        "blocks": [b["block"] for b in result["blocks"]], "block_s": [round(s, 2) for s in per_block],
        "steps_per_block": result["blocks"][0]["steps"], "capture_s": round(capture_s, 2),
        "s_per_step": round(block_s / max(result["blocks"][0]["steps"], 1), 5),
        "extrapolated_min": round(extrapolated, 2), "total_blocks": total_blocks,
        "loss_init": result["blocks"][0]["loss_init"], "loss_final": result["blocks"][0]["loss_final"],
        "peak_gb": round(peak, 3) if device.type == "cuda" else None, "resident_gb": resident,
        "working_gb": round(working, 3) if working is not None else None,
    }
    if act is not None:
        # the goal: peak ≤ 1.5 × (one block's weights + its optimiser state + one batch of activations), counted
        # over what calibration adds to the resident model (the official code keeps only the block on the GPU)
        bound = (params * 4 + trainable * 4 * 3) / 2**30 + act
        out.update(activation_gb=round(act, 3), bound_gb=round(bound, 3), working_over_bound=round(working / bound, 2))
    if name == "vggt":  # Table 6 is VGGT-1B's
        paper_min, paper_gb = TABLE6[method]
        out.update(paper_min=paper_min, paper_gb=paper_gb, speedup_vs_paper=round(paper_min / extrapolated, 1))
    return out


def quantized_forward_step(name: str, make, config, frames: int, size: int, device, precision: str,
                           repeats: int) -> dict:
    model = make()
    t = time.perf_counter()
    if isinstance(config, RTNConfig):
        quantize(model, config, W4A4, device=device)
    else:  # FlatQuant's reparameterised structure with its initial transforms: the forward cost, not the accuracy
        rebuild(model, config, W4A4)
        model.to(device)
    prepare = time.perf_counter() - t
    result = forward_step(model, frames, size, device, precision, repeats, compare=False)
    del model
    free(device)
    return {"quantizer": name, "prepare_s": round(prepare, 2), **result}


def save_reload_step(make, frames: int, size: int, device, precision: str, folder: Path) -> dict:
    model = make()
    config = FlatQuantConfig()
    rebuild(model, config, W4A4)
    model.to(device)
    t = time.perf_counter()
    path = save_quantized(model, config, W4A4, folder)
    save_s = time.perf_counter() - t
    x = images(1, frames, size, device, seed=7)
    with torch.no_grad(), autocast(device, precision):
        expected = model(x)
    del model
    free(device)
    fresh = make()
    t = time.perf_counter()
    quantize(fresh, LoadConfig(str(path)), W4A4, device=device)
    fresh.to(device)
    load_s = time.perf_counter() - t
    with torch.no_grad(), autocast(device, precision):
        got = fresh(x)
    identical = all(torch.equal(v, got[k]) for k, v in expected.items() if torch.is_tensor(v))
    max_diff = max(float((v.float() - got[k].float()).abs().max()) for k, v in expected.items() if torch.is_tensor(v))
    size_gb = path.stat().st_size / 2**30
    path.unlink()
    del fresh
    free(device)
    return {"save_s": round(save_s, 2), "load_s": round(load_s, 2), "file_gb": round(size_gb, 3),
            "identical_outputs": identical, "max_abs_diff": max_diff}


def check_model(check: Check, name: str, settings: dict, device: torch.device, precision: str, repeats: int,
                folder: Path) -> None:
    size, frames = settings["size"], settings["frames"][0]
    live: dict = {}  # the model under test, dropped (and the device memory freed) before the next is built

    def make():
        return build(name, device)

    def build_step() -> dict:
        t = time.perf_counter()
        live["model"] = make()
        sync(device)
        params = sum(p.numel() for p in live["model"].parameters())
        return {"build_s": round(time.perf_counter() - t, 2), "params_m": round(params / 1e6, 1),
                "blocks": len(live["model"].quant_view().blocks), "resident_gb": resident_gb(device)}

    def fisher_run() -> dict:
        result, live["fisher"] = fisher_step(live["model"], clips[:settings["fisher_clips"]], device, precision)
        return result

    def fgq_run() -> dict:
        live["model"] = make()
        return calibration_step("fgq", name, live.pop("model"), clips, config, settings["blocks"], device, precision,
                                live["fisher"])

    if check.step(name, "build", build_step) is None:
        return
    for i, count in enumerate(settings["frames"]):
        check.step(name, f"fp_forward_{count}f",
                   lambda f=count, c=(i == 0): forward_step(live["model"], f, size, device, precision, repeats, c))
    clips = calibration_clips(settings["clips"], settings["calib_frames"], size)
    check.step(name, "fisher", fisher_run)
    config = FlatQuantConfig(epochs=settings["epochs"])
    check.step(name, "calibrate_flatquant", lambda: calibration_step(
        "flatquant", name, live.pop("model"), clips, config, settings["blocks"], device, precision, None))
    live.pop("model", None)
    free(device)
    if "fisher" in live:
        check.step(name, "calibrate_fgq", fgq_run)
        free(device)
    check.step(name, "rtn_w4a4_forward",
               lambda: quantized_forward_step("rtn", make, RTNConfig(), frames, size, device, precision, repeats))
    check.step(name, "flatquant_w4a4_forward", lambda: quantized_forward_step(
        "flatquant", make, FlatQuantConfig(), frames, size, device, precision, repeats))
    check.step(name, "save_reload", lambda: save_reload_step(make, frames, size, device, precision, folder))


def table(report: dict) -> str:
    rows = [f"{'model':10s} {'step':24s} {'time':>10s} {'peak GB':>8s}  notes"]
    for model, steps in report["models"].items():
        for step, r in steps.items():
            if "error" in r or "skipped" in r:
                rows.append(f"{model:10s} {step:24s} {'':>10s} {'':>8s}  {r.get('error') or r.get('skipped')}")
                continue
            seconds = r.get("median_s", r.get("s", r.get("wall_s")))
            notes = ""
            if step.startswith("fp_forward"):
                notes = f"finite={r['finite']}"
                if "rel_error_vs_fp32" in r:
                    notes += f", max rel. error bf16 vs fp32 {max(r['rel_error_vs_fp32'].values()):.2e}"
            elif step == "fisher":
                notes = f"{r['s_per_clip']} s/clip → {r['extrapolated_official_min']} min for 32 clips"
            elif step.startswith("calibrate"):
                notes = (f"{r['s_per_step'] * 1e3:.1f} ms/step, blocks {r['block_s']} s → "
                         f"{r['extrapolated_min']} min for {r['total_blocks']} blocks")
                if "paper_min" in r:
                    notes += f" (paper A100: {r['paper_min']} min, ×{r['speedup_vs_paper']})"
                if "working_over_bound" in r:
                    notes += f"; working {r['working_gb']} GB = {r['working_over_bound']}× bound {r['bound_gb']} GB"
            elif step == "save_reload":
                notes = (f"save {r['save_s']} s, load {r['load_s']} s, {r['file_gb']} GB, "
                         f"identical={r['identical_outputs']}")
            elif step == "build":
                notes = f"{r['params_m']} M parameters, {r['blocks']} blocks"
            peak = r.get("peak_gb")
            rows.append(f"{model:10s} {step:24s} {seconds if seconds is not None else '':>10} "
                        f"{peak if peak is not None else '':>8}  {notes}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU: the CI path")
    parser.add_argument("--out", type=Path, default=Path("scale_check.json"))
    parser.add_argument("--device", default=None, help="default: cuda when visible (cpu with --tiny)")
    parser.add_argument("--precision", default="bf16-mixed", help="the autocast of every step (as on CUDA)")
    parser.add_argument("--models", default=None, help="comma-separated model configs (default: vggt,pi3)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--blocks", type=int, default=None, help="blocks to calibrate (first k)")
    parser.add_argument("--clips", type=int, default=None, help="calibration clips")
    parser.add_argument("--fisher-clips", type=int, default=None)
    parser.add_argument("--calib-frames", type=int, default=None)
    parser.add_argument("--size", type=int, default=None, help="image side (518 at full size)")
    parser.add_argument("--frames", default=None, help="comma-separated frame counts of the FP forwards")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip the remaining steps after this long")
    args = parser.parse_args(argv)
    settings = dict(TINY if args.tiny else FULL)
    for key in ("epochs", "blocks", "clips", "fisher_clips", "calib_frames", "size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.frames:
        settings["frames"] = tuple(int(f) for f in args.frames.split(","))
    if args.models:
        settings["models"] = tuple(args.models.split(","))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the bf16-vs-fp32 comparison)
    header = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "threads": torch.get_num_threads(), "precision": args.precision, "settings": settings,
              "command": " ".join(sys.argv)}
    print(json.dumps(header), flush=True)
    check = Check(args.out, args.budget_s, device, header)
    with tempfile.TemporaryDirectory() as folder:
        for i, name in enumerate(settings["models"]):
            # the first model (VGGT-1B, the paper's cost anchor) may use 60 % of the budget, the rest share what is left
            check.deadline_s = args.budget_s * (0.6 if i == 0 and len(settings["models"]) > 1 else 1.0)
            check_model(check, name, settings, device, args.precision, args.repeats, Path(folder))
            free(device)
    check.save()
    print(table(check.report))
    print(f"total {check.elapsed():.1f} s · {args.out}")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
