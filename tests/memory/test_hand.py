"""Memory of toy models, every figure derived by hand beside the assertion.

Conventions used in the derivations: float32 is 4 bytes, bfloat16 2; a training step is the steady-state one
(optimizer state exists before it, gradients start as None, output and loss referenced until the step ends); the
CPU target runs the optimizers' single-tensor code paths (torch's default on CPU).
"""

from __future__ import annotations

import torch
from torch import nn

import torchcost


def _linear() -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(1000, 1000), torch.randn(8, 1000)


def test_linear_inference() -> None:
    model, x = _linear()
    r = torchcost.analyze(model, x)
    m = r.memory
    assert m is not None
    # W 1000*1000*4 = 4,000,000 + b 1000*4 = 4,000
    assert m.at_peak.parameters == 4_004_000
    # x 8*1000*4 = 32,000; the output of addmm is another 8*1000*4 = 32,000
    assert m.at_peak.inputs == 32_000
    assert m.at_peak.temporaries == 32_000
    assert r.peak_memory == 4_004_000 + 32_000 + 32_000 == 4_068_000
    assert (m.peak_phase, m.peak_op, m.peak_module) == ("forward", "aten::addmm", "")
    assert m.start_bytes == 4_004_000 + 32_000
    assert r.root.activation_bytes == 32_000  # the output outlives the call
    assert r.root.param_bytes == 4_004_000
    assert m.method == "real" and m.target == "cpu"


def test_linear_adamw_step() -> None:
    model, x = _linear()
    r = torchcost.analyze(model, x, mode="train", optimizer="adamw")
    m = r.memory
    assert m is not None
    assert m.gradient_bytes == 4_004_000  # one gradient per parameter, same size: 4,000,000 + 4,000
    # exp_avg and exp_avg_sq for W and b: 2 * 4,004,000 = 8,008,000, plus two float32 step counters 2 * 4 = 8
    assert m.optimizer_state_bytes == 2 * 4_004_000 + 8 == 8_008_008
    # alive before the step: parameters 4,004,000 + input 32,000 + state 8,008,008 = 12,044,008
    assert m.start_bytes == 12_044_008
    # the peak: W's update computes denom = exp_avg_sq.sqrt() / bias_correction2_sqrt, two 4,000,000-byte
    # temporaries at once, while the output (32,000), the loss (4) and every gradient (4,004,000) are alive
    assert (m.peak_phase, m.peak_op) == ("optimizer", "aten::div")
    assert m.at_peak.gradients == 4_004_000
    assert m.at_peak.optimizer_state == 8_008_008
    assert m.at_peak.temporaries == 4_000_000 + 4_000_000 + 32_000 + 4 == 8_032_004
    assert m.at_peak.saved_activations == 0  # the graph is gone after backward; the output is a temporary now
    assert r.peak_memory == 12_044_008 + 32_000 + 4 + 4_004_000 + 8_000_000 == 24_080_012
    assert m.at_peak.total == r.peak_memory
    # after the step: parameters, input, state, gradients, the output and the loss
    assert m.end_bytes == 12_044_008 + 4_004_000 + 32_000 + 4
    assert r.flops == 2 * 8 * 1000 * 1000 + 8 * 1000  # still the forward only: 2 x MACs + the bias adds


def test_linear_sgd_momentum_step() -> None:
    model, x = _linear()
    r = torchcost.analyze(model, x, mode="train", optimizer="sgd")
    m = r.memory
    assert m is not None
    assert m.optimizer_state_bytes == 4_004_000  # one momentum buffer per parameter
    # before: parameters 4,004,000 + input 32,000 + momentum 4,004,000 = 8,040,000. SGD updates in place, so the
    # peak is in backward, at the bias gradient (aten::sum): + output 32,000 (saved by pow) + loss 4
    # + d loss 4 + d output 32,000 + dW 4,000,000 + db 4,000
    assert m.start_bytes == 8_040_000
    assert (m.peak_phase, m.peak_op) == ("backward", "aten::sum")
    assert m.at_peak.saved_activations == 32_000
    assert m.at_peak.gradients == 4_004_000
    assert r.peak_memory == 8_040_000 + 32_000 + 4 + 4 + 32_000 + 4_000_000 + 4_000 == 12_108_008


def test_inplace_and_view_add_nothing() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(1000, 10))
    x = torch.randn(8, 1000)
    r = torchcost.analyze(model, x)
    # parameters 4,004,000 + 1000*10*4 + 10*4 = 40,040; input 32,000; the first output 32,000 is still alive
    # (it is the second Linear's input) when the second one's 8*10*4 = 320 bytes are made
    assert r.peak_memory == 4_004_000 + 40_040 + 32_000 + 32_000 + 320 == 4_108_360
    assert r.memory is not None and r.memory.peak_module == "3"
    assert r.module("0").activation_bytes == 32_000
    assert r.module("1").activation_bytes == 0  # in place: the same storage
    assert r.module("2").activation_bytes == 0  # a view
    assert r.module("3").activation_bytes == 320
    assert r.module("1").output_bytes == 32_000  # the plain output size still counts the view
    assert r.module("3").peak_memory == r.peak_memory
    assert r.module("0").peak_memory == 4_004_000 + 40_040 + 32_000 + 32_000


def test_tied_weight_counted_once() -> None:
    torch.manual_seed(0)

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 16)
            self.head = nn.Linear(16, 100, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(ids))

    ids = torch.zeros(2, 5, dtype=torch.long)
    r = torchcost.analyze(Tied(), ids)
    assert r.memory is not None
    assert r.memory.at_peak.parameters == 100 * 16 * 4 == 6_400  # one storage, counted once
    assert r.memory.at_peak.inputs == 2 * 5 * 8 == 80  # int64 ids
    r = torchcost.analyze(Tied(), ids, mode="train", optimizer="adamw")
    assert r.memory is not None
    assert r.memory.gradient_bytes == 6_400  # one gradient for the shared weight


def test_bf16_model() -> None:
    model, x = _linear()
    model = model.to(torch.bfloat16)
    x = x.to(torch.bfloat16)
    r = torchcost.analyze(model, x)
    # everything at 2 bytes: parameters 2,002,000, input 16,000, output 16,000 (and oneDNN's bf16 matmul scratchpad,
    # which depends on the CPU and the thread count: the workspace entry or a probe, collect/probe.py)
    assert r.memory is not None
    assert r.peak_memory - r.memory.at_peak.workspace == 2_002_000 + 16_000 + 16_000
    r = torchcost.analyze(model, x, mode="train", optimizer="adamw")
    assert r.memory is not None
    assert r.memory.gradient_bytes == 2_002_000
    assert r.memory.optimizer_state_bytes == 2 * 2_002_000 + 8  # state in the parameters' dtype, float32 steps


def test_cuda_target_rounds_to_512_byte_blocks() -> None:
    with torch.device("meta"):
        model = nn.Linear(1000, 1000)
    x = torch.empty(8, 1000, device="meta")
    r = torchcost.analyze(model, x)
    assert r.memory is not None and r.memory.target == "cuda" and r.memory.round_to == 512
    # W 4,000,000 -> 7,813 blocks = 4,000,256; b 4,000 -> 4,096; x and the output 32,000 -> 63 blocks = 32,256;
    # addmm's cuBLAS workspace, 4096 * 8 * 1024 = 33,554,432 on the H100 assumed without hardware=
    # (tests/memory/test_workspace_cuda.py)
    assert r.peak_memory == 4_000_256 + 4_096 + 32_256 + 32_256 + 33_554_432 == 37_623_296
    assert r.memory.at_peak.workspace == 33_554_432
    r = torchcost.analyze(model, x, target="cpu")
    assert r.peak_memory == 4_068_000  # no rounding on the CPU


def test_cuda_target_uses_foreach_adamw() -> None:
    with torch.device("meta"):
        model = nn.Linear(1024, 1024)
    x = torch.empty(8, 1024, device="meta")
    r = torchcost.analyze(model, x, mode="train", optimizer="adamw")
    m = r.memory
    assert m is not None
    p = 1024 * 1024 * 4 + 1024 * 4  # 4,198,400 bytes of parameters (multiples of 512: no rounding)
    assert m.optimizer_state_bytes == 2 * p  # the step counters live on the CPU: not GPU memory
    # the foreach path computes sqrt(exp_avg_sq) for every parameter at once: one more parameter-sized temporary
    assert m.peak_op == "aten::_foreach_sqrt"
    assert (m.at_peak.parameters, m.at_peak.gradients, m.at_peak.optimizer_state) == (p, p, 2 * p)
    # + the output 8*1024*4 = 32,768 and the loss (4 bytes, one 512-byte block)
    assert m.at_peak.temporaries == p + 32_768 + 512


def test_worked_example_is_in_the_conventions() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "conventions.md").read_text()
    memory = doc[doc.index("## Memory"):]
    for figure in ("4,004,000", "4,068,000", "8,008,008", "12,044,008", "24,080,012"):
        assert figure in memory, figure
