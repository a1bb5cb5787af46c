"""A compiled model (``torch.compile(model)``, ``module.compile()``, a compiled function its forward calls) is
analysed as its eager module, with nothing compiled (run/checks.py ``uncompiled``, run/dynamo.py ``deferred``).

Before, ``analyze(torch.compile(resnet18()), x)`` compiled the model under torchcost's hooks and modes (9 s here,
with torch's warnings), named every layer ``_orig_mod.*``, and with ``mode="train"`` killed the process
(segmentation fault in the twin's compilation, torch 2.14.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import torchcost as tc
from tests.cli.conftest import python, torchcost

torch_dynamo = pytest.importorskip("torch._dynamo")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


# conv: 4 * 3*3*3 * 6*6 = 3,888 MACs; linear: 144 * 5 = 720 MACs; 4,608 in all
_MACS = 4 * 3 * 3 * 3 * 6 * 6 + 4 * 6 * 6 * 5


def _graphs() -> int:
    return sum(torch_dynamo.utils.counters["stats"].values())


def _same(a: tc.CostReport, b: tc.CostReport) -> None:
    left, right = a.to_dict(), b.to_dict()
    for d in (left, right):
        d.pop("model", None)  # (the class of the module given: the same here)
    assert left == right


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_torch_compile_wrapper_is_analysed_as_its_eager_module(mode: str) -> None:
    net = _net()
    compiled = torch.compile(net)
    x = torch.randn(1, 3, 8, 8)
    graphs = _graphs()
    report = tc.analyze(compiled, x, mode=mode)
    assert report.macs == _MACS
    assert [m.name for m in report.modules] == ["", "0", "1", "2", "3"]  # (no "_orig_mod." in front)
    _same(report, tc.analyze(net, x, mode=mode))
    assert _graphs() == graphs  # nothing was compiled
    assert compiled._orig_mod is net and net.training  # (as it came in: a new module trains)
    assert torch_dynamo.eval_frame._stance.stance == "default"  # the stance is put back


def test_in_place_compiled_module_runs_eagerly_in_a_training_step() -> None:
    net = _net()
    net.compile()
    x = torch.randn(1, 3, 8, 8)
    graphs = _graphs()
    report = tc.analyze(net, x, mode="train")
    assert report.macs == _MACS
    plain = _net()
    _same(report, tc.analyze(plain, x, mode="train"))
    assert _graphs() == graphs
    assert net._compiled_call_impl is not None  # still compiled for the user's own calls


def test_stance_is_put_back_when_the_forward_raises() -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("boom")

    with pytest.raises(tc.ModelError):
        tc.analyze(torch.compile(Bad()), torch.randn(2))
    assert torch_dynamo.eval_frame._stance.stance == "default"


def test_a_function_compiled_inside_the_forward_runs_eagerly_in_a_fresh_process() -> None:
    """In a fresh process nothing has imported ``torch._dynamo``: the run's stand-in gives way to the real package
    when the forward calls ``torch.compile``, and what is compiled from then on in the run takes its eager path."""
    run = python("""
import json, sys, torch, torchcost
from torch import nn
assert "torch._dynamo" not in sys.modules
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(8, 4)
    def forward(self, x):
        return torch.compile(lambda t: (t * 2).sin())(self.l(x))
out = {mode: [torchcost.analyze(M(), torch.randn(3, 8), mode=mode).macs,
              torchcost.analyze(M(), torch.randn(3, 8), mode=mode).flops] for mode in ("eval", "train")}
from torch._dynamo.utils import counters
import torch._dynamo.eval_frame as ef
out["graphs"] = sum(counters["stats"].values())
out["stance"] = ef._stance.stance
print(json.dumps(out))
""")
    assert run.rc == 0, run.err
    out: dict[str, Any] = json.loads(run.out.strip().splitlines()[-1])
    # linear 3*8*4 = 96 MACs, 2*96 + 12 bias adds = 204 FLOPs; then t * 2 and sin, 12 elements each: 228
    assert out["eval"] == out["train"] == [96, 228]
    assert out["graphs"] == 0
    assert out["stance"] == "default"


def test_the_command_analyses_a_factorys_compiled_model_as_its_eager_module(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def compiled():\n"
        "    return torch.compile(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5)))\n")
    run = torchcost(str(tmp_path / "net.py") + ":compiled", "--train", "--input-size", "1,3,8,8", "--no-progress",
                    cwd=tmp_path)
    assert run.rc == 0, run.err
    assert run.err_lines == []  # (no warning of torch's: nothing was compiled)
    assert run.out.splitlines()[0].endswith(":compiled (Sequential, compiled: its eager module)")
    assert f"MACs: {_MACS:,} " in run.out
