"""Accuracy: every tool on every model, normalised to parameters and MACs, compared with the analytic value where one
exists and with torchcost otherwise, with the evidence for each disagreement over 1%.

The evidence is computed, not written by hand:
  * an exact match: the difference equals, to the MAC, the MACs of one to three ops that torchcost priced (the tool
    misses them), or their non-MAC FLOPs (the tool counts bias adds, activations or normalisation as MACs);
  * where: for tools that report per-module figures, the difference summed by module type (``Conv3DSimple -38.1 G
    (15)``: the 15 modules of that type account for -38.1 G of it).
Why a tool does what it does (its mechanism, read from its source) is in ``CAUSES`` and printed once per tool.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from benchmarks.models import Case
from benchmarks.peers import TOOLS, Measured, Outcome, Tool, run_tool

__all__ = ["CAUSES", "CaseResult", "Row", "human", "run_accuracy"]

THRESHOLD = 0.01  # disagreements over 1% must get a reason
EVIDENCE = 0.0005  # evidence is looked for down to 0.05%


@dataclass
class Row:
    tool: str
    status: str
    unit: str
    params: int | None = None
    macs: int | None = None
    raw: float | None = None
    params_diff: float | None = None
    macs_diff: float | None = None
    exact: str = ""
    where: str = ""
    side_effects: list[str] = field(default_factory=list)
    error: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_op: dict[str, int] | None = None
    unsupported: dict[str, int] | None = None


@dataclass
class CaseResult:
    case: str
    group: str
    input: str
    reference: str  # "analytic" | "torchcost"
    ref_params: int | None
    ref_macs: int | None
    derivation: str
    published: tuple[int, int, str] | None  # torchvision's own (params, MACs)
    uncounted: dict[str, int]
    formula_errors: list[str]
    rows: list[Row]

    def row(self, tool: str) -> Row | None:
        return next((r for r in self.rows if r.tool == tool), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rel(value: int | None, ref: int | None) -> float | None:
    if value is None or ref is None:
        return None
    if ref == 0:
        return 0.0 if value == 0 else float("inf")
    return (value - ref) / ref


def human(n: float) -> str:
    sign = "-" if n < 0 else "+"
    a = abs(n)
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if a >= size:
            return f"{sign}{a / size:.3g} {unit}"
    return f"{sign}{a:.0f}"


def exact_match(diff: int, op_costs: Sequence[tuple[str, int, int]], *, over_counts: bool = True) -> str:
    """The smallest set (up to 3) of torchcost's per-op figures that sums to the difference exactly: ops the tool
    misses (their MACs), and, with ``over_counts``, ops whose non-MAC FLOPs it adds to its MACs. Over-counts are
    left out where per-module evidence exists: small element-wise figures coincide too easily (a bias add and a
    ReLU on the same tensor sum to what a 2-per-element BatchNorm costs)."""
    if diff == 0:
        return ""
    candidates: list[tuple[str, int]] = []
    for op, macs, other in op_costs:
        if macs:
            candidates.append((f"misses {op} ({human(-macs)})", -macs))
        if other and over_counts:
            candidates.append((f"counts the non-MAC FLOPs of {op} as MACs ({human(other)})", other))
    for size in (1, 2, 3):
        for combo in itertools.combinations(candidates, size):
            if sum(v for _, v in combo) == diff:
                return "; ".join(text for text, _ in combo) + " [exact]"
    return ""


def where(model: nn.Module, tool_self: dict[str, int], tc_self: dict[str, int], ref: int) -> str:
    """The difference of per-module figures, summed by module type; the largest parts first."""
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    by_type: dict[str, list[int]] = {}
    for name in set(tool_self) | set(tc_self):
        kind = types.get(name, name if name.startswith("(") else "(no module)")
        entry = by_type.setdefault(kind, [0, 0])
        entry[0] += tool_self.get(name, 0) - tc_self.get(name, 0)
        if tool_self.get(name, 0) != tc_self.get(name, 0):
            entry[1] += 1
    # the largest first, ties by name: the same text every run (the names come out of a set, in hash order)
    parts = sorted(((d, n, k) for k, (d, n) in by_type.items() if d), key=lambda t: (-abs(t[0]), t[2]))
    floor = max(abs(ref) * 0.002, 1)
    shown = [f"{k} {human(d)} ({n})" for d, n, k in parts if abs(d) >= floor][:4]
    return ", ".join(shown)


def _row(tool: Tool, outcome: Outcome, ref_params: int | None, ref_macs: int | None) -> Row:
    m = outcome.measured
    row = Row(tool.name, outcome.status, tool.unit, side_effects=outcome.side_effects, error=outcome.error,
              seconds=round(outcome.seconds, 4))
    if m is not None:
        row.params = m.params
        row.macs = m.macs
        row.raw = m.raw
        row.notes = m.notes
        row.per_op = m.per_op
        row.unsupported = m.unsupported
        row.params_diff = rel(m.params, ref_params)
        row.macs_diff = rel(m.macs, ref_macs)
    return row


def run_case(case: Case, tools: Sequence[Tool], log: Callable[[str], None]) -> CaseResult:
    try:
        pristine = case.build()
    except Exception as exc:
        log(f"  {case.name}: could not build: {type(exc).__name__}: {exc}")
        return CaseResult(case.name, case.group, case.input, "none", None, None, case.derivation, case.reference, {},
                          [f"build failed: {exc}"], [])
    outcomes = {tool.name: run_tool(tool, pristine) for tool in tools}
    tc_outcome = outcomes.get("torchcost")
    tc: Measured | None = tc_outcome.measured if tc_outcome else None
    if case.analytic:
        reference, ref_params, ref_macs = "analytic", case.params, case.macs
    else:
        reference = "torchcost"
        ref_params = tc.params if tc else None
        ref_macs = tc.macs if tc else None
    rows = []
    for tool in tools:
        outcome = outcomes[tool.name]
        row = _row(tool, outcome, ref_params, ref_macs)
        m = outcome.measured
        if (m is not None and tc is not None and m.macs is not None and tc.macs is not None and ref_macs
                and row.macs_diff is not None and abs(row.macs_diff) >= EVIDENCE):
            has_modules = m.self_macs is not None and tc.self_macs is not None
            row.exact = exact_match(m.macs - tc.macs, tc.op_costs or [], over_counts=not has_modules)
            if m.self_macs is not None and tc.self_macs is not None:
                row.where = where(pristine.model, m.self_macs, tc.self_macs, ref_macs)
        rows.append(row)
    uncounted = dict(tc.unsupported or {}) if tc else {}
    result = CaseResult(case.name, case.group, case.input, reference, ref_params, ref_macs, case.derivation,
                        case.reference, uncounted, [], rows)
    return result


def run_accuracy(cases: Sequence[Case], tools: Sequence[Tool] = TOOLS,
                 log: Callable[[str], None] = print) -> list[CaseResult]:
    torch.set_num_threads(1)
    results = []
    for case in cases:
        start = time.perf_counter()
        result = run_case(case, tools, log)
        results.append(result)
        tc = result.row("torchcost")
        flag = ""
        if tc is not None and tc.macs_diff:
            flag = f"  torchcost off by {tc.macs_diff:+.3%}"
        if result.uncounted:
            flag += f"  uncounted: {result.uncounted}"
        log(f"  {case.name:58s} {time.perf_counter() - start:6.1f}s{flag}")
    return results


# Why each tool disagrees: the mechanism, read from its source (file and function named), and seen in the analytic
# case in brackets. Printed once per tool in docs/benchmarks.md; the per-model evidence is computed (exact / where).
CAUSES: dict[str, list[str]] = {
    "FlopCounterMode": [
        "Counts only the aten ops it has formulas for (torch/utils/flop_counter.py: mm, addmm, bmm, baddbmm, "
        "convolution, the CUDA attention kernels). On CPU, F.scaled_dot_product_attention runs as "
        "aten::_scaled_dot_product_flash_attention_for_cpu, which has none: attention counts 0 "
        "[analytic:sdpa, sdpa_gqa; every transformer here].",
        "nn.LSTM on CPU runs as aten::mkldnn_rnn_layer, which has no formula: 0 [analytic:lstm]. nn.GRU decomposes "
        "into addmm/mm and is counted exactly [analytic:gru].",
        "nn.MultiheadAttention under no_grad in eval takes the fused aten::_native_multi_head_attention fast path, "
        "which has no formula: the whole layer counts 0, projections included [analytic:multihead_attention; "
        "torchvision:vit_b_16].",
        "On meta tensors attention decomposes into bmm and is counted (see the meta section).",
    ],
    "torchinfo": [
        "MACs come from parameter counts, not from ops (torchinfo/layer_info.py, calculate_macs): for a module "
        "whose class name contains 'Conv', params x output positions; for any other, params x output_size[0] "
        "only. So a Linear on (B, T, C) misses T [analytic:linear_3d; every transformer], GPT-2's Conv1D (a linear "
        "layer) is priced as a convolution, x2304 [hf:gpt2], an Embedding lookup counts params x batch, and bias, "
        "BatchNorm, LayerNorm and LSTM bias parameters count as MACs [analytic:conv1d_strided, lstm].",
        "A transposed convolution is priced per output position, x4 at stride 2 [analytic:conv_transpose2d].",
        "Only leaf modules are priced: functional calls (F.linear, @, einsum, bmm, SDPA) and modules whose weights "
        "are used functionally (MultiheadAttention, swin/maxvit attention) count 0 [analytic:functional_ops, "
        "multihead_attention].",
        "A weight shared by two modules is counted in each [analytic:tied_weights].",
    ],
    "torchsummary": [
        "Parameters only: for each module a forward hook saw, weight.numel() + bias.numel() (torchsummary.py, "
        "hook). Parameters held elsewhere (relative-position tables, layer-scale gammas, class tokens, LSTM "
        "weight_ih_l0) and modules that did not run (inception's AuxLogits in eval, swin's attention Linear layers "
        "whose weights are used through F.linear) are missed; a module called twice is counted twice "
        "[analytic:called_twice].",
        "It makes its own torch.rand(2, *input_size) inputs and reads output.size(): it cannot run models that take "
        "integer ids, several tensors or lists, and crashes on modules returning tuples (LSTM, densenet's "
        "concatenations) or None, and on models with no hooked submodule that has a weight (its total stays an int "
        "and .numpy() fails).",
    ],
    "thop": [
        "Counts leaf modules by per-type rules (thop/vision/basic_hooks.py) and adds them all to its 'MACs': "
        "BatchNorm 4 per element with affine (count_normalization), LayerNorm, activations, pooling "
        "[analytic:conv_bn_relu_pool].",
        "Functional products (F.*, torch.*, @, SDPA) are counted by a function counter (thop/profile.py, "
        "_FunctionCounter) when not inside a module that has a rule: correct for attention here; transformers' "
        "GPT-2 Conv1D (addmm inside a module without a rule) counts 0 [hf:gpt2].",
        "Its LSTM/GRU rules (thop/rnn_hooks.py) add the biases and the gates' element-wise products "
        "[analytic:lstm, gru]; its MultiheadAttention rule adds the softmax and scaling "
        "[analytic:multihead_attention].",
    ],
    "fvcore": [
        "Traces with torch.jit and prices ops by handlers (fvcore/nn/jit_handles.py). Ops without a handler are "
        "skipped (warned about, counted 0): aten::lstm, aten::gru, aten::scaled_dot_product_attention and the "
        "fused aten::_native_multi_head_attention [analytic:lstm, gru, sdpa, multihead_attention].",
        "Its default handlers also count batch_norm (2 per element in eval, with affine), layer_norm, group_norm, "
        "adaptive_avg_pool2d and upsampling in its 'flops', which are MACs elsewhere [analytic:conv_bn_relu_pool].",
        "einsum is priced from numpy's einsum_path FLOP estimate: one MAC short on analytic:functional_ops.",
    ],
    "ptflops-pytorch": [
        "Counts modules by exact type (ptflops/pytorch_engine.py, is_supported_instance: type(module) in "
        "MODULES_MAPPING): subclasses such as torchvision's Conv3DSimple / Conv3DNoTemporal (nn.Conv3d) count 0 "
        "[torchvision:r3d_18, mc3_18].",
        "Adds bias, BatchNorm (2 per element), activations and pooling to its MACs [analytic:conv1d_strided, "
        "conv_bn_relu_pool].",
        "Its rule for timm's Attention (pytorch_ops.py, timm_attention_counter_hook) stands for the whole module: "
        "the qkv and proj Linear layers inside are printed but not added to the total [timm:vit_tiny_patch16_224].",
        "Reports module counts per sample (divided by len(first input), pytorch_engine.py "
        "compute_average_flops_cost) but adds its functional counts undivided; normalised here by multiplying the "
        "module part back. Of the functions it patches (F.linear, torch.matmul/mm/bmm/addmm, mul/add), only "
        "24.6 K of the 213 K MACs of analytic:functional_ops are counted (@ and einsum are not patched); "
        "F.scaled_dot_product_attention is not patched: transformer attention counts 0.",
    ],
    "ptflops-aten": [
        "A TorchDispatchMode with formulas for mm, addmm, bmm and convolution only (ptflops/aten_ops.py): CPU "
        "attention (_scaled_dot_product_flash_attention_for_cpu), LSTM (mkldnn_rnn_layer) and the fused "
        "MultiheadAttention count 0; the bias of addmm and of convolution is added to the MACs "
        "[analytic:linear_3d, conv1d_strided, lstm, multihead_attention].",
        "Registers forward hooks on the model's top-level children and never removes them (aten_engine.py, "
        "FlopCounterMode.__init__).",
    ],
    "calflops": [
        "Patches torch.nn.functional (F.linear, conv, norms, activations, pooling, softmax) and torch.matmul / "
        "torch.einsum for the run (calflops/pytorch_ops.py, _patch_functionals, _patch_tensor_methods) and counts "
        "those calls into 'macs' only for linear, conv and matmul: @ on tensors, bmm (its patch is commented out), "
        "the einsum products here, F.scaled_dot_product_attention, LSTM/GRU and the fused MultiheadAttention count "
        "0 [analytic:functional_ops, lstm, gru, multihead_attention; torchvision:maxvit_t's einsum].",
        "Moves every input with .to(device): a list of images (detection) or a bool keyword input crashes it; a "
        "model with no parameters crashes it (next(model.parameters())); after an exception its patches of torch "
        "functions and its module attributes and hooks are left in place (see 'left model modified').",
    ],
    "torchprofile": [
        "Traces with torch.jit and prices aten ops by handlers (torchprofile/handlers.py): aten::gru has none (0) "
        "[analytic:gru]; a transposed convolution is priced per output position (x4 here) "
        "[analytic:conv_transpose2d]; norms with affine weights (1 per element), average pooling, mean and "
        "element-wise mul count as MACs [analytic:conv_bn_relu_pool].",
        "It refuses keyword inputs (run here through a wrapper that binds them), and its jit trace fails on "
        "nn.MultiheadAttention (torchvision:vit_b_16) and grouped-query SDPA.",
    ],
    "torchscan": [
        "Per-module formulas for leaf modules (torchscan/modules/); modules without one (LSTM, GRU, "
        "MultiheadAttention) and functional calls make its total 'partial': the known part is shown here "
        "[analytic:lstm, gru, multihead_attention, functional_ops; torchvision:swin_t's F.linear attention].",
        "A transposed convolution is priced per output position; BatchNorm (2 per element) and pooling add to its "
        "MACs [analytic:conv_transpose2d, conv_bn_relu_pool].",
    ],
}
