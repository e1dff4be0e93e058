"""The README's numbers on the shipped tiny models ("The embedded default model"), regenerated on the 16 held-out
synthetic scenes of the default evaluation, through the normal pipeline:

1. the table: FP metrics of both models and of the trivial predictors (``fgq.evaluation.trivial_geometry``), without
   ICP (``dataset.eval.synthetic.protocol.icp=false``, as ``tests/test_shipped_models.py``);
2. the RTN sentences: FP, W8A8 and W4A4 with the default protocol (``python run.py quantizer=rtn bits=…``).

    python experiments/readme_numbers.py          # prints both as markdown tables (2 CPU cores: about 3 min)

The numbers are deterministic for a given machine and thread count (README, "Running jobs and sweeps").
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from fgq import CONF_DIR
from fgq.evaluation import protocol_evaluator, trivial_geometry
from fgq.pipeline import build_data, run

METRICS = [("camera", "auc@30", "AUC@30"), ("camera", "auc@15", "AUC@15"), ("camera", "rta@30", "RTA@30"),
           ("camera", "rra@30", "RRA@30"), ("depth", "abs_rel", "AbsRel"), ("depth", "delta_1.25", "δ<1.25"),
           ("points", "acc_mean", "Acc"), ("points", "comp_mean", "Comp"), ("points", "nc_mean", "NC")]


NO_ICP = ["dataset.eval.synthetic.protocol.icp=false"]


def config(folder: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["logger=none", "trainer.enable_progress_bar=false",
                                            f"paths.cache_dir={folder / 'cache'}", *overrides])


def job(folder: Path, model: str, bits: str, *overrides: str) -> dict:
    out = folder / f"{model}-{bits}-{len(overrides)}"
    cfg = config(folder, f"model={model}", "quantizer=rtn", f"bits={bits}", f"paths.output_dir={out}", *overrides)
    return run(cfg, out, {"model": model, "quantizer": "rtn", "bits": bits})["fp" if bits == "w16a16" else "quant"]


def trivial(folder: Path) -> dict:
    cfg = config(folder, *NO_ICP)
    loaders, _ = build_data(cfg, with_calib=False)
    evaluator = protocol_evaluator("synthetic", dict(cfg.dataset.eval.synthetic.protocol))
    for batch in loaders["synthetic"]:
        evaluator.update(trivial_geometry(batch), batch)
    return {"synthetic": evaluator.compute()}


def row(name: str, metrics: dict) -> str:
    cells = [f"{metrics['synthetic'][t][m]:.{1 if m[:3] in ('rta', 'rra') else 3}f}" for t, m, _ in METRICS]
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    header = "| | " + " | ".join(label for *_, label in METRICS) + " |\n|---|" + "---|" * len(METRICS)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("The table (no ICP, every 2nd pixel):\n" + header)
        for model in ("pi3_tiny", "vggt_tiny"):
            print(row(f"`{model}`", job(folder, model, "w16a16", *NO_ICP)), flush=True)
        print(row("trivial", trivial(folder)))
        print("\nRTN (the default protocol, python run.py quantizer=rtn bits=…):\n" + header)
        for model in ("vggt_tiny", "pi3_tiny"):
            for bits in ("w16a16", "w8a8", "w4a4"):
                print(row(f"`{model}` {bits.upper() if bits != 'w16a16' else 'FP'}", job(folder, model, bits)),
                      flush=True)


if __name__ == "__main__":
    main()
