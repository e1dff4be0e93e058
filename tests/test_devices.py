"""Device placement: every tensor a forward creates follows its inputs' device.

The audit runs each model and each quantized structure on the ``meta`` device: any tensor a forward made on the
CPU (a ``torch.zeros(...)`` without ``device=``) meets a meta tensor and raises. Parameters and buffers made in
``__init__`` follow ``module.to(device)``, so only what runs in a forward can leak; the static check below holds
every ``forward`` in ``fgq/models`` and ``fgq/quant`` to passing ``device=`` to tensor factories."""

import ast

import pytest
import torch
from conftest import ROOT
from helpers import fixture_pi3, fixture_vggt

from fgq.quant import FlatQuantConfig, GPTQConfig, QuantSpec, RTNConfig
from fgq.quant.flat_block import FlatQuantBlock
from fgq.quant.quantvggt import QuantVGGTConfig
from fgq.quant.quarot import QuaRotConfig
from fgq.quant.registry import _REBUILD

W4A4 = QuantSpec(w_bits=4, a_bits=4)
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "eye", "rand", "randn", "randint", "randperm", "linspace",
             "tensor", "as_tensor"}
MAKERS = {"vggt": fixture_vggt, "pi3": fixture_pi3}


def meta_forward(model: torch.nn.Module) -> dict:
    images = torch.rand(1, 2, 3, 112, 112, device="meta")
    with torch.no_grad():
        out = model.to("meta")(images)
    return {k: v for k, v in out.items() if torch.is_tensor(v)}


@pytest.mark.parametrize("family", MAKERS)
def test_fp_forward_creates_nothing_off_device(family):
    out = meta_forward(MAKERS[family]())
    assert out and all(v.device.type == "meta" for v in out.values())


@pytest.mark.parametrize("config", [RTNConfig(), GPTQConfig(), FlatQuantConfig(), QuaRotConfig(), QuantVGGTConfig()],
                         ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("family", MAKERS)
def test_quantized_forward_creates_nothing_off_device(family, config):
    model = MAKERS[family]().to("meta")
    # the quantizer's own structure-building code (what calibration installs too), on a model already on its device
    # as on CUDA, without the final ``model.to`` that ``rebuild`` adds: every new tensor must be born there
    _REBUILD[type(config)](model.quant_view(), config, W4A4)
    assert {t.device.type for t in (*model.parameters(), *model.buffers())} == {"meta"}
    out = meta_forward(model)
    assert all(v.device.type == "meta" for v in out.values())


def test_flatquant_calibration_forward_creates_nothing_off_device():
    """The training-mode block (transforms recomputed every forward, LWC/LAC, straight-through quantizers)."""
    model = fixture_vggt()
    view = model.quant_view()
    ref = view.blocks[1]  # a global block
    block = FlatQuantBlock(ref.module, W4A4, FlatQuantConfig(), torch.Generator().manual_seed(0)).to("meta")
    parent, _, child = ref.name.rpartition(".")
    setattr(model.get_submodule(parent), child, block)
    ref.module = block
    x = torch.rand(1, 2, view.patch_start + 64, view.channels, device="meta")
    pos = torch.zeros(1, 2, view.patch_start + 64, 2, dtype=torch.long, device="meta")
    assert view.run_block(ref, x, pos).device.type == "meta"


def test_forwards_pass_device_to_tensor_factories():
    leaks = []
    for path in sorted([*(ROOT / "fgq" / "models").glob("*.py"), *(ROOT / "fgq" / "quant").glob("*.py")]):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(fn, ast.FunctionDef) and fn.name == "forward"):
                continue
            for call in ast.walk(fn):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and isinstance(call.func.value, ast.Name) and call.func.value.id == "torch"
                        and call.func.attr in FACTORIES and not any(k.arg == "device" for k in call.keywords)):
                    leaks.append(f"{path.relative_to(ROOT)}:{call.lineno} torch.{call.func.attr}")
    assert not leaks, leaks
