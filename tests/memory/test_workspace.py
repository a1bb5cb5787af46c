"""Kernel memory the twin's tensors do not show (collect/workspace.py).

The CPU LSTM's ``aten::mkldnn_rnn_layer`` returns a uint8 workspace (oneDNN's forward-training workspace) that
autograd keeps until backward; its fake/meta kernel returns an empty one. torchcost now gives it the real size,
from a formula fitted to the real op; and a registry of transient per-op workspaces adds a ``workspace`` category.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import torchcost
from tests.memory.truth import eval_truth, train_truth
from torchcost.collect import leaves, memory
from torchcost.collect import workspace as ws
from torchcost.collect.memory import CATEGORIES
from torchcost.collect.recording import MemorySettings, Recording
from torchcost.formulas.registry import FormulaRegistry, OpCall
from torchcost.report import MemoryBreakdown

_RNN = torch.ops.aten.mkldnn_rnn_layer.default


class _Workspaces(TorchDispatchMode):
    """Records the byte size of every mkldnn_rnn_layer workspace the real kernel returns."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func is _RNN and out[3] is not None:
            self.sizes.append(out[3].untyped_storage().nbytes())
        return out


class _Net(nn.Module):
    def __init__(self, i: int = 32, h: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.LSTM(i, h)
        self.head = nn.Linear(h, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.rnn(x)[0])
        return out


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# T=20, N=4, I=32, H=64; S = good_ld(max(32, 64)) = 64, good_ld(4H = 256) = 272 (a multiple of 256 gets 16 more);
# every part rounded up to a 4096-byte page:
#   gates   20*4*272*4 =  87,040 -> 90,112     hidden   20*4*64*4 = 20,480 -> 20,480
#   states, diff-layer, diff-iter: 2*21*4*64*4 = 43,008 -> 45,056 each (x3 = 135,168)
#   cell, diff-cell:               2*21*4*64*4 = 43,008 -> 45,056 each (x2 =  90,112)
# total 90,112 + 20,480 + 135,168 + 90,112 = 335,872
HAND_LSTM = 335_872


def test_lstm_workspace_formula_matches_the_real_op() -> None:
    assert ws.lstm_workspace_bytes(20, 4, 32, 64) == HAND_LSTM
    # the figure: T=50, N=8, I=128, H=256
    assert ws.lstm_workspace_bytes(50, 8, 128, 256) == 6_443_008
    for steps, batch, i, h in ((20, 4, 32, 64), (13, 5, 16, 100), (7, 3, 300, 21)):
        rec = _Workspaces()
        with rec:
            nn.LSTM(i, h)(torch.randn(steps, batch, i))
        assert rec.sizes == [ws.lstm_workspace_bytes(steps, batch, i, h)]


def _alive_after_rnn(fake: bool) -> int:
    """Bytes alive right after the forward's mkldnn_rnn_layer, with grad enabled (training), real or fake."""
    model, x = _Net(), torch.randn(20, 4, 32)
    if fake:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        with mode:
            model, x = _Net(), torch.empty(20, 4, 32)
    rec = Recording(model, FormulaRegistry(), memory=MemorySettings(), train=True)
    with rec, rec.phase("forward"):
        model(x)
    assert rec.memory is not None
    trace = rec.memory.trace()
    return trace.alive[trace.ops.index("aten::mkldnn_rnn_layer")] - trace.start_bytes


def test_fake_twin_holds_the_real_rnn_workspace() -> None:
    # before: the fake run was 335,872 B short at this op (its workspace was empty)
    assert _alive_after_rnn(fake=True) == _alive_after_rnn(fake=False)


def test_lstm_train_step_counts_the_workspace() -> None:
    model, x = _Net(), torch.randn(20, 4, 32)
    r = torchcost.analyze(model, x, mode="train", optimizer="sgd")
    assert r.memory is not None and r.memory.method == "fake"
    truth = train_truth(model, x, make_optimizer=lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9))
    # the workspace is saved for backward: alive at the backward peak
    assert r.memory.at_peak.saved_activations >= HAND_LSTM
    # measured here: 714,496 with the table alone against the allocator's 926,008 (-22.8 %; 378,624, -59 %, before
    # the workspace); the rest, oneDNN's scratchpad inside mkldnn_rnn_layer_backward (reordered weights, gate
    # gradients), is measured by a probe (tests/memory/test_probe.py)
    assert 0.98 * truth <= r.peak_memory <= 1.02 * truth


# -- the transient registry ------------------------------------------------------------------------------------------


def test_registered_workspace_counts_at_its_op_only() -> None:
    seen: list[str] = []

    def fn(call: OpCall, target: str) -> int:
        seen.append(target)
        return 1000 * call.inputs[0].shape[0]

    model, x = nn.Sequential(nn.Linear(8, 8)), torch.randn(4, 8)
    base = torchcost.analyze(model, x).memory
    builtin = ws.WORKSPACES["aten::addmm"]  # the bf16 matmul entry: 0 for this f32 addmm
    with pytest.raises(ValueError):
        ws.register_workspace(torch.ops.aten.addmm, fn)
    ws.register_workspace("aten::addmm", fn, replace=True)
    try:
        r = torchcost.analyze(model, x).memory
    finally:
        ws.register_workspace("aten::addmm", builtin, replace=True)
    assert base is not None and r is not None and seen == ["cpu"]
    i = r.timeline.ops.index("aten::addmm")
    # addmm(bias[8], x[4, 8], W^T): 1000 * bias.shape[0] = 8,000 B, at that op and nowhere else
    assert r.timeline.bytes[i] == base.timeline.bytes[i] + 8_000
    assert [b for j, b in enumerate(r.timeline.bytes) if j != i] == [
        b for j, b in enumerate(base.timeline.bytes) if j != i]
    assert r.end_bytes == base.end_bytes
    if r.peak_index == i:
        assert r.at_peak.workspace == 8_000 and r.at_peak.total == r.peak_bytes


def test_workspace_category() -> None:
    assert CATEGORIES[-1] == "workspace" and MemoryBreakdown().workspace == 0


# -- built-in: oneDNN's blocked copies in grouped and depthwise f32 convolutions (measured on AVX512, no AMX) -------

_AVX512 = ws._measured_isa(ws.GROUPED_CONV_ISA)


def _conv_call(n: int, c: int, hw: int, c_out: int, groups: int, k: int = 3) -> OpCall:
    x, w = torch.empty(n, c, hw, hw, device="meta"), torch.empty(c_out, c // groups, k, k, device="meta")
    out = torch.nn.functional.conv2d(x, w, None, 1, k // 2, 1, groups)
    args = (x, w, None, [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], groups)
    return OpCall("aten::convolution", args, {}, out, torch.ops.aten.convolution.default._schema)


@pytest.mark.skipif(not _AVX512, reason="measured on an AVX512 CPU without AMX; 0 elsewhere")
def test_grouped_conv_workspace_formula() -> None:
    # depthwise, x[2, 20, 15, 15], w[20, 1, 3, 3]: channels padded to 32
    #   blocked input 2*32*225*4 = 57,600, weight 32*9*4 = 1,152, blocked output 57,600; plain output 36,000
    #   max(57,600 + 1,152 + 57,600, 57,600 + 36,000) - 36,000 = 116,352 - 36,000 = 80,352 (the allocator: 80,352)
    assert ws.grouped_conv_workspace(_conv_call(2, 20, 15, 20, 20), "cpu") == 80_352
    # grouped, x[2, 64, 16, 16], 8 groups of 8 channels, w[64, 8, 3, 3]: plain sizes
    #   input 131,072 + weight 18,432 + blocked output 131,072 = 280,576, less the output 131,072 = 149,504
    assert ws.grouped_conv_workspace(_conv_call(2, 64, 16, 64, 8), "cpu") == 149_504
    # not claimed (None: a probe may measure them): other devices, 2 channels per group, 1x1 depthwise, groups = 1
    assert ws.grouped_conv_workspace(_conv_call(2, 20, 15, 20, 20), "cuda") is None
    assert ws.grouped_conv_workspace(_conv_call(2, 64, 16, 64, 32), "cpu") is None
    assert ws.grouped_conv_workspace(_conv_call(2, 64, 16, 64, 64, k=1), "cpu") is None
    assert ws.grouped_conv_workspace(_conv_call(2, 64, 16, 64, 1), "cpu") is None


@pytest.mark.skipif(not _AVX512, reason="measured on an AVX512 CPU without AMX; 0 elsewhere")
@pytest.mark.parametrize(("c", "groups"), [(20, 20), (64, 8)])
def test_grouped_conv_matches_the_allocator(c: int, groups: int) -> None:
    torch.manual_seed(0)
    model, x = nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False), torch.randn(2, c, 15, 15)
    r = torchcost.analyze(model, x)
    assert r.memory is not None and r.memory.at_peak.workspace > 0
    assert r.peak_memory == eval_truth(model, x)


# -- built-in: oneDNN's bf16 brgemm matmul scratchpad (measured on avx512_bf16, no AMX, one thread) ------------------

_BF16 = _AVX512 and "avx512_bf16" in ws._cpu_flags()


def _mm_call(m: int, k: int, n: int, *, addmm: bool = False, dtype: torch.dtype = torch.bfloat16,
             a_transposed: bool = False) -> OpCall:
    a = torch.empty(k, m, dtype=dtype, device="meta").t() if a_transposed else torch.empty(m, k, dtype=dtype,
                                                                                             device="meta")
    b = torch.empty(n, k, dtype=dtype, device="meta").t()
    if addmm:
        return OpCall("aten::addmm", (torch.empty(n, dtype=dtype, device="meta"), a, b), {}, None,
                      torch.ops.aten.addmm.default._schema)
    return OpCall("aten::mm", (a, b), {}, None, torch.ops.aten.mm.default._schema)


@pytest.mark.skipif(not _BF16, reason="measured on an avx512_bf16 CPU without AMX; 0 elsewhere")
def test_bf16_matmul_workspace_formula() -> None:
    # the GPT head, x[256, 64] @ W^T[64, 512]: K_blk = 64 (K up to 512, rounded to 32), M_blk = 256
    #   B copy 64*64*2 = 8,192 + f32 accumulator 256*64*4 = 65,536 + 1,024 = 74,752 (the allocator: 74,752)
    assert ws.bf16_matmul_workspace(_mm_call(256, 64, 512), "cpu") == 74_752
    assert ws.bf16_matmul_workspace(_mm_call(256, 64, 512, addmm=True), "cpu") == 74_752
    # x[1000, 1100] @ W^T[1100, 20]: K_blk = 1024 (K > 1024), M_blk = 250 (largest divisor of 1000 up to 256),
    #   N = 20 < 64: 1024*64*2 = 131,072 + 250*20*4 = 20,000 + 1,024 = 152,096
    assert ws.bf16_matmul_workspace(_mm_call(1000, 1100, 20), "cpu") == 152_096
    # known to hold nothing (0): f32, M*K*N <= 4096 (torch's own kernel); not claimed (None): a transposed A,
    # M = 257 (divisor 1), other devices
    assert ws.bf16_matmul_workspace(_mm_call(256, 64, 512, dtype=torch.float32), "cpu") == 0
    assert ws.bf16_matmul_workspace(_mm_call(16, 16, 16), "cpu") == 0
    assert ws.bf16_matmul_workspace(_mm_call(256, 64, 512, a_transposed=True), "cpu") is None
    assert ws.bf16_matmul_workspace(_mm_call(257, 64, 64), "cpu") is None
    assert ws.bf16_matmul_workspace(_mm_call(256, 64, 512), "cuda") is None


def test_an_f32_matmul_is_claimed_only_where_blas_takes_its_operands() -> None:
    # f32 goes to BLAS: nothing inside (0) for row- and column-major operands (B as nn.Linear's weight, W^T); an
    # operand of stride 2 (x[:, ::2]) is cloned by aten first: not claimed (None), a probe measures it
    assert ws.bf16_matmul_workspace(_mm_call(64, 48, 32, dtype=torch.float32), "cpu") == 0
    assert ws.bf16_matmul_workspace(_mm_call(64, 48, 32, dtype=torch.float32, a_transposed=True), "cpu") == 0
    b = torch.empty(48, 32, device="meta")
    strided = torch.empty(64, 96, device="meta")[:, ::2]
    call = OpCall("aten::mm", (strided, b), {}, None, torch.ops.aten.mm.default._schema)
    assert ws.bf16_matmul_workspace(call, "cpu") is None


@pytest.mark.skipif(not _BF16, reason="measured on an avx512_bf16 CPU without AMX; 0 elsewhere")
def test_bf16_linear_matches_the_allocator() -> None:
    torch.manual_seed(0)
    model, x = nn.Linear(1100, 20).to(torch.bfloat16), torch.randn(1000, 1100, dtype=torch.bfloat16)
    r = torchcost.analyze(model, x)
    # the addmm's scratchpad, 152,096 B (above), is at the peak beside its 40,000 B output
    assert r.memory is not None and r.memory.at_peak.workspace == 152_096
    assert r.peak_memory == eval_truth(model, x)



@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many calls the memory tracker keys by their metadata (a count: keeping the arguments would keep their
    tensors alive, and move the memory figures)."""
    count = [0]
    key = memory.metadata_key

    def counting(*args: Any) -> int | None:
        count[0] += 1
        return key(*args)

    monkeypatch.setattr(memory, "metadata_key", counting)
    return count


def test_matmul_entry_is_asked_without_keying_the_call(monkeypatch: pytest.MonkeyPatch, keyed: list[int]) -> None:
    """The matmul entry answers from two dtypes (float32: 0 bytes, nothing to probe), sooner than the call's metadata
    is keyed to look an answer up: the metadata is keyed for none of a float32 MLP's matmuls, and the report is the
    one the cached path gives."""
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)), torch.randn(4, 16)
    with leaves.off():  # (every op under the dispatch mode: a planned Linear's ops come keyed already)
        quick = torchcost.analyze(model, x).to_dict()
        assert keyed[0] == 0  # two addmm calls (one per Linear), neither keyed
        monkeypatch.setattr(memory, "QUICK_ENTRIES", frozenset())
        cached = torchcost.analyze(model, x).to_dict()
    assert keyed[0] == 2 and cached == quick
    # planned (the first analysis checks each Linear's plan, the second runs them past the modes): their ops come
    # with the call's key (collect/leaves.py), asked the entry once a run for each, and the report is the same
    assert torchcost.analyze(model, x).to_dict() == quick
    keyed[0] = 0
    assert torchcost.analyze(model, x).to_dict() == quick
    assert keyed[0] == 0


def test_cpu_entries_are_not_asked_for_a_cuda_target(monkeypatch: pytest.MonkeyPatch, keyed: list[int]) -> None:
    """The convolution and matmul entries claim CPU calls only: on a meta model (a "cuda" target) neither is asked
    nor is the call keyed for them, and the report is the one the keyed path gives."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    x = torch.empty(2, 3, 8, 8, device="meta")
    skipped = torchcost.analyze(model, x).to_dict()
    assert keyed[0] == 0  # the convolution and the addmm, neither keyed
    monkeypatch.setattr(memory, "CPU_ENTRIES", frozenset())
    monkeypatch.setattr(memory, "QUICK_ENTRIES", frozenset())
    keyed_path = torchcost.analyze(model, x).to_dict()
    assert keyed[0] == 2 and keyed_path == skipped


def _counting_entry(asked: list[int], per_row: int) -> ws.WorkspaceFn:
    """A matmul workspace entry of ``per_row`` bytes per row of the first operand that counts its calls."""
    def entry(call: OpCall, target: str) -> int:
        asked.append(1)
        first = call.arg("self" if call.key == "aten::mm" else "mat1")
        return per_row * first.shape[0]
    return entry


def _train_with_entry(monkeypatch: pytest.MonkeyPatch, entry: ws.WorkspaceFn, asked: list[int], own: bool
                      ) -> dict[str, Any]:
    """The second training-step analysis (the first teaches the fake shortcuts their answers) of three Linear(8, 8)
    on x[4, 8] with ``entry`` for mm and addmm (``asked``: its calls, counted in the second analysis); ``own``: the
    entry is one of torchcost's quick ones (its module says so), asked at the call rather than remembered by the
    call's metadata."""
    for key in ("aten::mm", "aten::addmm"):
        monkeypatch.setitem(ws.WORKSPACES, key, entry)
    if own:
        monkeypatch.setattr(entry, "__module__", "torchcost.collect.workspace")
        monkeypatch.setattr(memory, "QUICK_ENTRIES", frozenset({entry}))
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)), torch.randn(4, 8)
    torchcost.analyze(model, x, mode="train", optimizer="sgd")
    asked.clear()
    r = torchcost.analyze(model, x, mode="train", optimizer="sgd").memory
    assert r is not None and r.method == "fake"
    return r.to_dict()


@pytest.mark.parametrize("own", [True, False])
def test_a_twin_works_out_an_ops_kernel_memory_once_per_call_key(monkeypatch: pytest.MonkeyPatch, own: bool) -> None:
    """On a training step's fake twin an op's kernel memory is worked out once a run per price key (the fake
    shortcuts' key holds every argument's metadata and value): torchcost's own quick entry is asked once per key,
    a user's entry at every call, and every call is charged its bytes at its op either way."""
    asked: list[int] = []
    r = _train_with_entry(monkeypatch, _counting_entry(asked, 100), asked, own)
    ops = r["timeline"]["ops"]
    # forward: an addmm per Linear; backward: grad input mm(g[4, 8], W) for the 2nd and 3rd (the 1st's input x
    # needs none), grad weight mm(g^T[8, 4], input) for all three: 3 + 2 + 3 = 8 calls
    assert ops.count("aten::addmm") == 3 and ops.count("aten::mm") == 5
    # keys: addmm of x (no grad flag) and of h1, h2 (grad flag: one key); mm of g and W (one key), mm of g^T and
    # h1, h2 (one key), mm of g^T and x (no grad flag): 2 + 3 = 5
    assert len(asked) == (5 if own else 8)
    with monkeypatch.context() as m:  # the same run with every call worked out: the same report
        m.setattr(memory.MemoryTracker, "_own_entries", lambda self, key: False)
        assert _train_with_entry(m, _counting_entry(asked, 100), asked, own) == r
        assert len(asked) == 8
    base = _train_with_entry(monkeypatch, _counting_entry(asked, 0), asked, own)
    charged = [(ops[i], a - b) for i, (a, b) in enumerate(zip(r["timeline"]["bytes"], base["timeline"]["bytes"]))
               if a != b]
    # 100 B a row of the first operand, at its op only: addmm x[4, 8] or h[4, 8] 400 B; mm g[4, 8] 400 B; mm
    # g^T[8, 4] 800 B
    assert sorted(charged) == [("aten::addmm", 400)] * 3 + [("aten::mm", 400)] * 2 + [("aten::mm", 800)] * 3


# -- built-in: oneDNN's blocked copies in bf16 convolutions, groups = 1 (measured on avx512_bf16, no AMX) -------------


def _bf16_conv_call(n: int, c: int, hw: int, c_out: int, k: int, stride: int, pad: int) -> OpCall:
    x = torch.empty(n, c, hw, hw, dtype=torch.bfloat16, device="meta")
    w = torch.empty(c_out, c, k, k, dtype=torch.bfloat16, device="meta")
    out = torch.nn.functional.conv2d(x, w, None, stride, pad)
    args = (x, w, None, [stride, stride], [pad, pad], [1, 1], False, [0, 0], 1)
    return OpCall("aten::convolution", args, {}, out, torch.ops.aten.convolution.default._schema)


@pytest.mark.skipif(not _BF16, reason="measured on an avx512_bf16 CPU without AMX; 0 elsewhere")
def test_bf16_conv_workspace_formula() -> None:
    # x[2, 64, 16, 16], w[128, 64, 3, 3], stride 2: blocked input 2*64*256*2 = 65,536, weight 128*64*9*2 = 147,456,
    #   output 2*128*8*8*2 = 32,768: max(65,536 + 147,456 + 32,768, 2*32,768) - 32,768 = 212,992 (the allocator's)
    assert ws.bf16_conv_workspace(_bf16_conv_call(2, 64, 16, 128, 3, 2, 1), "cpu") == 212_992
    # a first conv, x[2, 3, 64, 64], w[64, 3, 7, 7], stride 2: input read as it is, weight 64*4*49*2 = 25,088,
    #   output 2*64*32*32*2 = 262,144: max(25,088 + 262,144, 2*262,144) - 262,144 = 262,144 (the allocator's)
    assert ws.bf16_conv_workspace(_bf16_conv_call(2, 3, 64, 64, 7, 2, 3), "cpu") == 262_144
    # the aten::convolution entry routes bf16 groups = 1 here
    assert ws.WORKSPACES["aten::convolution"](_bf16_conv_call(2, 64, 16, 128, 3, 2, 1), "cpu") == 212_992
    # not claimed (None): 1x1 kernels, channels not multiples of 16, other devices
    assert ws.bf16_conv_workspace(_bf16_conv_call(2, 64, 16, 128, 1, 1, 0), "cpu") is None
    assert ws.bf16_conv_workspace(_bf16_conv_call(2, 20, 16, 32, 3, 1, 1), "cpu") is None
    assert ws.bf16_conv_workspace(_bf16_conv_call(2, 64, 16, 128, 3, 2, 1), "cuda") is None


@pytest.mark.skipif(not _BF16, reason="measured on an avx512_bf16 CPU without AMX; 0 elsewhere")
def test_bf16_convnet_matches_the_allocator() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1)).to(torch.bfloat16)
    x = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)
    r = torchcost.analyze(model, x)
    # first conv: weight 16*4*9*2 = 1,152, output 2*16*32*32*2 = 65,536: holds max(66,688, 131,072) - 65,536 = 65,536
    # second conv: input 65,536, weight 32*16*9*2 = 9,216, output 2*32*32*32*2 = 131,072:
    #   max(65,536 + 9,216 + 131,072, 2*131,072) - 131,072 = 131,072, the peak's workspace
    assert r.memory is not None and r.memory.at_peak.workspace == 131_072
    assert r.peak_memory == eval_truth(model, x)


# -- built-in: torch's native Slow2d im2col buffer, f32 groups = 1 convolutions torch keeps from oneDNN ---------------


def _f32_conv_call(n: int, c: int, hw: int, c_out: int, k: int, stride: int, pad: int,
                   dilation: int = 1) -> OpCall:
    x, w = torch.empty(n, c, hw, hw, device="meta"), torch.empty(c_out, c, k, k, device="meta")
    out = torch.nn.functional.conv2d(x, w, None, stride, pad, dilation)
    args = (x, w, None, [stride, stride], [pad, pad], [dilation, dilation], False, [0, 0], 1)
    return OpCall("aten::convolution", args, {}, out, torch.ops.aten.convolution.default._schema)


@pytest.mark.skipif(not _AVX512, reason="measured on an AVX512 CPU without AMX; 0 elsewhere")
def test_slow_conv2d_workspace_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    # standard_conv, x[1, 3, 64, 64] (12,288 elements <= 20,480, batch 1, 3x3): Slow2d, im2col buffer
    #   1 * (3*3*3) * (64*64) * 4 = 442,368 (the allocator: 442,368)
    assert ws.slow_conv2d_workspace(_f32_conv_call(1, 3, 64, 4, 3, 1, 1), "cpu") == 442_368
    assert ws.WORKSPACES["aten::convolution"](_f32_conv_call(1, 3, 64, 4, 3, 1, 1), "cpu") == 442_368
    # x[2, 8, 10, 10], 1x1, padding 1, one thread: Slow2d; output 12x12: 2 * 8 * 144 * 4 = 9,216
    assert ws.slow_conv2d_workspace(_f32_conv_call(2, 8, 10, 4, 1, 1, 1), "cpu") == 9_216
    # 1x1 stride 1 no padding: no buffer (0). Not claimed (None): oneDNN's shapes (over 20,480 elements, batch 2
    #   with 3x3, a 5x5 kernel), dilation, other devices
    assert ws.slow_conv2d_workspace(_f32_conv_call(2, 8, 10, 4, 1, 1, 0), "cpu") == 0
    assert ws.slow_conv2d_workspace(_f32_conv_call(1, 3, 83, 4, 3, 1, 1), "cpu") is None
    assert ws.slow_conv2d_workspace(_f32_conv_call(2, 3, 64, 4, 3, 1, 1), "cpu") is None
    assert ws.slow_conv2d_workspace(_f32_conv_call(1, 3, 64, 4, 5, 1, 2), "cpu") is None
    assert ws.slow_conv2d_workspace(_f32_conv_call(1, 3, 64, 4, 3, 1, 2, dilation=2), "cpu") is None
    assert ws.slow_conv2d_workspace(_f32_conv_call(1, 3, 64, 4, 3, 1, 1), "cuda") is None
    assert ws.WORKSPACES["aten::convolution"](_f32_conv_call(2, 3, 64, 4, 3, 1, 1), "cpu") is None


@pytest.mark.skipif(not _AVX512, reason="measured on an AVX512 CPU without AMX; 0 elsewhere")
def test_standard_conv_matches_the_allocator() -> None:
    from torchcost.examples import build
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, (x,) = build("standard_conv")
        r = torchcost.analyze(model, x)
        # the 3x3 conv's im2col buffer, 442,368 B (above), is at the peak: 115,120 B without it
        assert r.memory is not None and r.memory.at_peak.workspace == 442_368
        assert r.peak_memory == eval_truth(model, x) == 557_488
    finally:
        torch.set_num_threads(threads)
