"""Memory CUDA kernels allocate for themselves (collect/workspace_cuda.py), checked on the CPU: the entries against
sizes derived by hand from PyTorch's source, and the public path (a meta model analysed for "cuda") against the same
run without the entries, op by op. None of these figures has been compared with a GPU's allocator yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchcost
from torchcost.collect import workspace as ws
from torchcost.collect import workspace_cuda as wc
from torchcost.formulas.registry import OpCall
from torchcost.report import CostReport
from torchcost.timing.hardware import get_hardware

aten = torch.ops.aten
MiB = 2**20
CUBLAS_HOPPER = 4096 * 8 * 1024  # 33,554,432: CUBLAS_WORKSPACE_CONFIG's default ":4096:8" on compute capability 9-12
CUBLAS_AMPERE = 4096 * 1024 * 2 + 16 * 1024 * 8  # 8,519,680: ":4096:2:16:8" before Hopper


def _meta(*shape: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def _bhsd(b: int, s: int, h: int, d: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """(batch, heads, seq, dim) as attention layers make it: the transpose of a (batch, seq, heads, dim) tensor."""
    return _meta(b, s, h, d, dtype=dtype).transpose(1, 2)


def _call(op: Any, *args: Any, out: Any = None, **kwargs: Any) -> OpCall:
    return OpCall(op._schema.name, args, kwargs, out, op._schema)


@contextlib.contextmanager
def _without(table: dict[str, Any], keys: tuple[str, ...]) -> Iterator[None]:
    saved = {k: table.pop(k) for k in keys if k in table}
    try:
        yield
    finally:
        table.update(saved)


def _timelines(run: Callable[[], CostReport], table: dict[str, Any],
               keys: tuple[str, ...]) -> tuple[CostReport, CostReport]:
    """The report with the entries and the same run without them."""
    with_entries = run()
    with _without(table, keys):
        without = run()
    return with_entries, without


def _difference(a: CostReport, b: CostReport) -> list[int]:
    assert a.memory is not None and b.memory is not None
    assert a.memory.timeline.ops == b.memory.timeline.ops
    return [x - y for x, y in zip(a.memory.timeline.bytes, b.memory.timeline.bytes)]


# -- cuBLAS ----------------------------------------------------------------------------------------------------------

def test_cublas_workspace_size_follows_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    sizes = {(9, 0): CUBLAS_HOPPER, (10, 0): CUBLAS_HOPPER, (12, 0): CUBLAS_HOPPER, (8, 0): CUBLAS_AMPERE,
             (8, 9): CUBLAS_AMPERE, (7, 5): CUBLAS_AMPERE}
    for capability, size in sizes.items():
        with wc.target_gpu(wc.CudaDevice("x", capability, 100)):
            assert wc.cublas_workspace_size() == size, capability
    assert wc.cublas_workspace_size() == CUBLAS_HOPPER  # no hardware given: an H100 is assumed
    # CUBLAS_WORKSPACE_CONFIG: ":SIZE:COUNT" pairs, SIZE in KiB, summed; an unparsable value keeps the default
    for config, size in ((":4096:8", 32 * MiB), (":16:8", 16 * 1024 * 8), (":4096:2:16:8", CUBLAS_AMPERE),
                         ("garbage", CUBLAS_HOPPER)):
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", config)
        assert wc.cublas_workspace_size() == size, config


def test_cublas_entry_on_meta_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CUBLAS_WORKSPACE_CONFIG", "CUBLASLT_WORKSPACE_SIZE", "TORCH_CUBLASLT_UNIFIED_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)
    a, b = _meta(4, 8), _meta(8, 16)
    mm = _call(aten.mm.default, a, b, out=aten.mm.default(a, b))
    assert wc.cublas_workspace(mm, "cuda") == ("cublas", CUBLAS_HOPPER)
    assert wc.cublas_workspace(mm, "cpu") is None
    empty = _meta(4, 0)
    assert wc.cublas_workspace(_call(aten.mm.default, empty, _meta(0, 16), out=_meta(4, 16)), "cuda") is None
    with wc.target_gpu(wc.CudaDevice("MI300X", None)):  # hipBLAS: not described
        assert wc.cublas_workspace(mm, "cuda") is None
    # cuBLASLt shares cuBLAS's block unless TORCH_CUBLASLT_UNIFIED_WORKSPACE=0; then _scaled_mm has its own,
    # CUBLASLT_WORKSPACE_SIZE KiB (default 1024)
    x8, w8 = _meta(16, 32, dtype=torch.float8_e4m3fn), _meta(32, 16, dtype=torch.float8_e4m3fn).t().contiguous().t()
    scale = torch.empty((), device="meta")
    scaled = _call(aten._scaled_mm.default, x8, w8, scale, scale, out=_meta(16, 16, dtype=torch.bfloat16))
    assert wc.cublas_workspace(scaled, "cuda") == ("cublas", CUBLAS_HOPPER)
    monkeypatch.setenv("TORCH_CUBLASLT_UNIFIED_WORKSPACE", "0")
    assert wc.cublas_workspace(scaled, "cuda") == ("cublaslt", 1024 * 1024)
    monkeypatch.setenv("CUBLASLT_WORKSPACE_SIZE", "2048")
    assert wc.cublas_workspace(scaled, "cuda") == ("cublaslt", 2048 * 1024)
    assert wc.cublas_workspace(mm, "cuda") == ("cublas", CUBLAS_HOPPER)


def _linear() -> tuple[nn.Module, torch.Tensor]:
    with torch.device("meta"):
        model = nn.Linear(1000, 1000)
    return model, torch.empty(8, 1000, device="meta")


def test_cublas_workspace_counts_for_the_whole_run_that_uses_it() -> None:
    model, x = _linear()
    r = torchcost.analyze(model, x)
    assert r.memory is not None and r.memory.target == "cuda"
    # tests/memory/test_hand.py's 4,068,864 (W, b, x and the output in 512-byte blocks) + the 32 MiB workspace
    assert r.peak_memory == 4_068_864 + CUBLAS_HOPPER == 37_623_296
    assert r.memory.at_peak.workspace == CUBLAS_HOPPER and r.memory.peak_op == "aten::addmm"
    with_entries, without = _timelines(lambda: torchcost.analyze(model, x), ws.LIBRARY_WORKSPACES, wc.BLAS_OPS)
    # held from the start (a step of a loop has it from the process's first matmul on), at every op, to the end
    diff = _difference(with_entries, without)
    assert diff == [CUBLAS_HOPPER] * len(diff)
    assert with_entries.memory is not None and without.memory is not None
    assert with_entries.memory.start_bytes - without.memory.start_bytes == CUBLAS_HOPPER
    assert with_entries.memory.end_bytes - without.memory.end_bytes == CUBLAS_HOPPER
    # an A100's default (hardware=), and CUBLAS_WORKSPACE_CONFIG honoured
    a100 = torchcost.analyze(model, x, hardware="a100-80gb")
    assert a100.peak_memory == 4_068_864 + CUBLAS_AMPERE


def test_cublas_workspace_config_through_analyze(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _linear()
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert torchcost.analyze(model, x).peak_memory == 4_068_864 + 16 * 1024 * 8


def test_training_step_holds_a_second_workspace_for_autograds_thread() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    x = torch.empty(4, 256, device="meta")

    def run() -> CostReport:
        return torchcost.analyze(model, x, mode="train")

    with_entries, without = _timelines(run, ws.LIBRARY_WORKSPACES, wc.BLAS_OPS)
    diff = _difference(with_entries, without)
    # the calling thread's block and autograd's device thread's, both from the start of the step
    assert diff == [2 * CUBLAS_HOPPER] * len(diff)
    assert with_entries.peak_memory - without.peak_memory == 2 * CUBLAS_HOPPER  # the AdamW peak, after backward
    assert with_entries.memory.at_peak.workspace == 2 * CUBLAS_HOPPER  # type: ignore[union-attr]


def test_cpu_target_has_no_cublas_block() -> None:
    model, x = _linear()
    r = torchcost.analyze(model, x, target="cpu")
    assert r.memory is not None and r.memory.at_peak.workspace == 0
    # W 4,000,000 + b 4,000 + x 32,000 + the output 32,000, as tests/memory/test_hand.py
    assert r.peak_memory == 4_068_000
    with_entries, without = _timelines(lambda: torchcost.analyze(model, x, target="cpu"), ws.LIBRARY_WORKSPACES,
                                       wc.BLAS_OPS)
    assert _difference(with_entries, without) == [0] * len(with_entries.memory.timeline)  # type: ignore[union-attr]


def test_hardware_table_knows_the_gpus() -> None:
    assert get_hardware("h100-sxm").compute_capability == (9, 0) and get_hardware("h100-sxm").sm_count == 132
    assert get_hardware("a100-40gb").compute_capability == (8, 0) and get_hardware("a100-40gb").sm_count == 108
    assert get_hardware("mi300x").compute_capability is None
    assert wc.CudaDevice.of(None) == wc.ASSUMED_GPU
    assert wc.CudaDevice.of(get_hardware("l4")).capability == (8, 9)


# -- flash attention ---------------------------------------------------------------------------------------------

def _flash_backward(b: int, h: int, s: int, d: int, kv_heads: int | None = None, grad_out: Any = None,
                    dropout: float = 0.0) -> OpCall:
    q = _bhsd(b, s, h, d)
    k = v = _bhsd(b, s, kv_heads or h, d)
    out, lse, _, _, _, _, seed, offset, _ = aten._scaled_dot_product_flash_attention.default(q, k, v, dropout, True)
    go = _bhsd(b, s, h, d) if grad_out is None else grad_out
    return _call(aten._scaled_dot_product_flash_attention_backward.default, go, q, k, v, out, lse, None, None, s, s,
                 dropout, True, seed, offset)


def test_flash_backward_buffers() -> None:
    # B=2, H=4, S=100, d=64: S rounded to 128, d_r = 64 (d rounded up to 32)
    #   softmax_d 2*4*128*4 = 4,096; dq_accum 2*128*4*64*4 = 262,144 (float32)
    assert wc.flash_attention_backward_workspace(_flash_backward(2, 4, 100, 64), "cuda") == 4_096 + 262_144
    # a gradient that is contiguous as (B, H, S, D) is copied to (B, S, H, D): 2*100*4*64*2 = 102,400 more
    plain = _meta(2, 4, 100, 64)
    assert (wc.flash_attention_backward_workspace(_flash_backward(2, 4, 100, 64, grad_out=plain), "cuda")
            == 4_096 + 262_144 + 102_400)
    # d=80: d_r = 96; dq_accum 2*128*4*96*4 = 393,216
    assert wc.flash_attention_backward_workspace(_flash_backward(2, 4, 100, 80), "cuda") == 4_096 + 393_216
    # d=160: d_r = 192 (rounded up to 64 above 128); dq_accum 2*128*4*192*4 = 786,432
    assert wc.flash_attention_backward_workspace(_flash_backward(2, 4, 100, 160), "cuda") == 4_096 + 786_432
    # grouped heads, H=8, H_k=2: dk_expanded and dv_expanded, 2*100*8*64*2 = 204,800 bytes each;
    #   softmax_d 2*8*128*4 = 8,192; dq_accum 2*128*8*64*4 = 524,288
    gqa = _flash_backward(2, 8, 100, 64, kv_heads=2)
    assert wc.flash_attention_backward_workspace(gqa, "cuda") == 8_192 + 524_288 + 2 * 204_800
    # head dims not a multiple of 8 (SDPA pads them first), other targets: not claimed
    assert wc.flash_attention_backward_workspace(_flash_backward(2, 4, 100, 60), "cuda") is None
    assert wc.flash_attention_backward_workspace(_flash_backward(2, 4, 100, 64), "cpu") is None


def test_flash_backward_deterministic_splits_dq_accum() -> None:
    torch.use_deterministic_algorithms(True)
    try:
        # ceil(132 SMs / (B*H = 8)) = 17 copies of dq_accum (2*128*4*64*4 = 262,144 each)
        assert (wc.flash_attention_backward_workspace(_flash_backward(2, 4, 100, 64), "cuda")
                == 4_096 + 17 * 262_144)
        with wc.target_gpu(wc.CudaDevice.of(get_hardware("a100-80gb"))):  # ceil(108 / 8) = 14
            assert (wc.flash_attention_backward_workspace(_flash_backward(2, 4, 100, 64), "cuda")
                    == 4_096 + 14 * 262_144)
    finally:
        torch.use_deterministic_algorithms(False)


def test_flash_split_heuristic() -> None:
    # B*H*ceil(S_q/64) = 1*4*2 = 8 blocks, 2*132 = 264 SM slots, ceil(2048/256) = 8 key blocks: 8 splits
    #   (eligible 1, 2, 3, 4, 8; wave efficiency 8s/264, best at 8)
    assert wc.flash_num_splits(8, 264, 8) == 8
    assert wc.flash_num_splits(256, 264, 8) == 1  # 256 >= 0.8 * 264: the SMs are almost full
    assert wc.flash_num_splits(100, 264, 1) == 1  # one key block: nothing to split


def test_flash_forward_split_kv_buffers() -> None:
    fwd = aten._scaled_dot_product_flash_attention.default

    def call(b: int, h: int, sq: int, sk: int, d: int, dropout: float = 0.0, kv: int | None = None) -> OpCall:
        return _call(fwd, _bhsd(b, sq, h, d), _bhsd(b, sk, kv or h, d), _bhsd(b, sk, kv or h, d), dropout, True)

    # 8 splits (above): softmax_lse_accum 8*1*4*128*4 = 16,384 and out_accum 8*1*4*128*64*4 = 1,048,576
    assert wc.flash_attention_forward_workspace(call(1, 4, 128, 2048, 64), "cuda") == 16_384 + 1_048_576
    assert wc.flash_attention_forward_workspace(call(1, 4, 128, 2048, 64, dropout=0.1), "cuda") == 0
    assert wc.flash_attention_forward_workspace(call(8, 16, 1024, 1024, 64), "cuda") == 0  # 2048 blocks: 1 split
    # decoding with grouped heads: S_q = 1, H = 32, H_k = 8 is folded to S_q = 4, H = 8; one 4-query block x 8 heads
    #   = 8 blocks; S_k = 4096, d = 128: block_n 128, 32 key blocks; eligible splits among 1..32, best efficiency at
    #   32 (32 * 8 / 264 = 0.97 of a wave); out_accum 32*1*8*4*128*4 = 524,288, lse 32*1*8*4*4 = 4,096
    assert wc.flash_num_splits(8, 264, 32) == 32
    assert wc.flash_attention_forward_workspace(call(1, 32, 1, 4096, 128, kv=8), "cuda") == 4_096 + 524_288


class _Attention(nn.Module):
    """One Linear for q, k, v; causal SDPA; the heads put back with a transpose and a reshape (so the gradient that
    reaches the attention backward is contiguous as (B, S, H, D): no copy)."""

    def __init__(self, dim: int = 256, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, dim = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, dim // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           dropout_p=self.dropout)
        return y.transpose(1, 2).reshape(b, s, dim)


def _attention_step(dtype: torch.dtype, dropout: float = 0.0) -> Callable[[], CostReport]:
    """A training step of :class:`_Attention` (B=2, S=100, 4 heads of 64) on meta tensors, for "cuda": float16 takes
    flash attention, float32 memory-efficient attention."""
    with torch.device("meta"):
        model = _Attention(dropout=dropout).to(dtype)
    x = torch.empty(2, 100, 256, device="meta", dtype=dtype)
    return lambda: torchcost.analyze(model, x, mode="train")


def _at(report: CostReport, op: str, diff: list[int]) -> tuple[int, list[int]]:
    timeline = report.memory.timeline  # type: ignore[union-attr]
    index = timeline.ops.index(op)
    return diff[index], [d for i, d in enumerate(diff) if i != index]


def test_flash_backward_through_analyze() -> None:
    keys = ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_flash_attention_backward")
    with_entries, without = _timelines(_attention_step(torch.float16), ws.WORKSPACES, keys)
    diff = _difference(with_entries, without)
    # forward: B=2, H=4, S=100, d=64: 2*4*ceil(100/64) = 16 blocks, ceil(100/256) = 1 key block: 1 split, nothing
    # backward: softmax_d 2*4*128*4 = 4,096 + dq_accum 2*128*4*64*4 = 262,144, at that op only
    held, rest = _at(with_entries, "aten::_scaled_dot_product_flash_attention_backward", diff)
    assert held == 4_096 + 262_144 and not any(rest)


# -- memory-efficient attention -----------------------------------------------------------------------------------

def _efficient_backward(dtype: torch.dtype, d: int, b: int = 2, h: int = 4, s: int = 100,
                        grad_out: Any = None, dropout: float = 0.0) -> OpCall:
    q = _bhsd(b, s, h, d, dtype)
    lse = _meta(b, h, 128, dtype=torch.float32)
    seed = torch.empty((), device="meta", dtype=torch.int64)
    go = _bhsd(b, s, h, d, dtype) if grad_out is None else grad_out
    return _call(aten._scaled_dot_product_efficient_attention_backward.default, go, q, q, q, None, q, lse, seed, seed,
                 dropout, [True, True, True, False], True)


def test_efficient_backward_workspace() -> None:
    # B=2, H=4, M=100; delta 2*4*100*4 = 3,200 -> 3,584 (512-byte blocks)
    # float16, K=64: the 64x64 kernel; per (b, h) ceil(100/64)*ceil(64/64) = 2 dQ tiles of (4 + 64*64) floats:
    #   2*4*2*4100*4 = 262,400 -> 262,656
    assert wc.efficient_attention_backward_workspace(_efficient_backward(torch.float16, 64), "cuda") == 3_584 + 262_656
    # float16, K=128 on an H100: the 128x128 kernel; 1 tile of (4 + 128*128) floats: 2*4*16388*4 = 524,416 -> 524,800
    assert (wc.efficient_attention_backward_workspace(_efficient_backward(torch.float16, 128), "cuda")
            == 3_584 + 524_800)
    # float32, K=64: 64x64, the same workspace; delta computed: (grad_out * out) 2*100*4*64*4 = 204,800 and its sum
    #   3,200 -> 3,584 alive with delta: max(3,584 + 262,656, 204,800 + 3,584 + 3,584) = 266,240
    assert wc.efficient_attention_backward_workspace(_efficient_backward(torch.float32, 64), "cuda") == 266_240
    # float32, K=128 on an H100: the 128x64 kernel; ceil(100/128)*ceil(128/64) = 2 tiles of (4 + 8192) floats:
    #   2*4*2*8196*4 = 524,544 -> 524,800; the product 2*100*4*128*4 = 409,600 + 3,584 + 3,584 is less
    assert (wc.efficient_attention_backward_workspace(_efficient_backward(torch.float32, 128), "cuda")
            == 3_584 + 524_800)
    # a gradient contiguous as (B, H, M, K) is copied: 2*100*4*64*2 = 102,400 more
    plain = _meta(2, 4, 100, 64)
    assert (wc.efficient_attention_backward_workspace(_efficient_backward(torch.float16, 64, grad_out=plain), "cuda")
            == 102_400 + 3_584 + 262_656)
    # an L4 (compute capability 8.9, less shared memory): K=96 float16 takes the 128x64 k96 kernel, 1*2 tiles of
    #   (4 + 8192) floats = 524,544 -> 524,800; K=128 a kernel that stages dK/dV: not claimed
    with wc.target_gpu(wc.CudaDevice.of(get_hardware("l4"))):
        assert (wc.efficient_attention_backward_workspace(_efficient_backward(torch.float16, 96), "cuda")
                == 3_584 + 524_800)
        assert wc.efficient_attention_backward_workspace(_efficient_backward(torch.float16, 128), "cuda") is None
    # head dims above 128: the kernels stage dK/dV in the workspace (split-keys heuristic): not claimed
    assert wc.efficient_attention_backward_workspace(_efficient_backward(torch.float16, 256), "cuda") is None
    assert wc.efficient_attention_backward_workspace(_efficient_backward(torch.float16, 64), "cpu") is None


def test_efficient_forward_accumulator() -> None:
    fwd = aten._scaled_dot_product_efficient_attention.default

    def call(d: int, dtype: torch.dtype) -> OpCall:
        q = _bhsd(2, 100, 4, d, dtype)
        return _call(fwd, q, q, q, None, True, 0.0, True)

    assert wc.efficient_attention_forward_workspace(call(128, torch.float16), "cuda") == 0
    # K=256 float16: output_accum B*M*H*Kv*4 = 2*100*4*256*4 = 819,200 (float32)
    assert wc.efficient_attention_forward_workspace(call(256, torch.float16), "cuda") == 819_200
    assert wc.efficient_attention_forward_workspace(call(256, torch.float32), "cuda") == 0  # accumulates in place


def test_efficient_backward_through_analyze() -> None:
    keys = ("aten::_scaled_dot_product_efficient_attention_backward", "aten::_scaled_dot_product_efficient_attention")
    with_entries, without = _timelines(_attention_step(torch.float32), ws.WORKSPACES, keys)
    diff = _difference(with_entries, without)
    held, rest = _at(with_entries, "aten::_scaled_dot_product_efficient_attention_backward", diff)
    assert held == 266_240 and not any(rest)  # the float32, K=64 figure above


def test_efficient_attention_seed_and_offset_are_host_tensors() -> None:
    q = _bhsd(2, 100, 4, 64, torch.float32)
    out = aten._scaled_dot_product_efficient_attention.default(q, q, q, None, True, 0.1)
    key = "aten::_scaled_dot_product_efficient_attention"
    assert ws.true_output_bytes(key, (q, q, q, None, True, 0.1), {}, out, "cuda") == {2: 0, 3: 0}
    # without dropout too (kCPU outside a graph capture; an H200 showed no device bytes for them)
    assert ws.true_output_bytes(key, (q, q, q, None, True, 0.0), {}, out, "cuda") == {2: 0, 3: 0}
    assert ws.true_output_bytes(key, (q, q, q, None, True, 0.1), {}, out, "cpu") == {}
    with_entries, without = _timelines(_attention_step(torch.float32, dropout=0.1), ws.FIXED_CUDA_OUTPUTS, (key,))
    diff = _difference(with_entries, without)
    forward = with_entries.memory.timeline.ops.index(key)  # type: ignore[union-attr]
    # the meta kernel's two 8-byte meta tensors were 512-byte blocks, saved for backward; on CUDA they are host memory
    assert diff[forward] == -2 * 512
    backward = with_entries.memory.timeline.ops.index(key + "_backward")  # type: ignore[union-attr]
    assert all(d == -2 * 512 for d in diff[forward:backward])
    # the same without dropout: the H200's allocator rose by the output and the log-sum-exp alone
    with_entries, without = _timelines(_attention_step(torch.float32, dropout=0.0), ws.FIXED_CUDA_OUTPUTS, (key,))
    diff = _difference(with_entries, without)
    forward = with_entries.memory.timeline.ops.index(key)  # type: ignore[union-attr]
    backward = with_entries.memory.timeline.ops.index(key + "_backward")  # type: ignore[union-attr]
    assert all(d == -2 * 512 for d in diff[forward:backward])


# -- what is not covered ------------------------------------------------------------------------------------------

def test_cudnn_convolution_is_not_claimed() -> None:
    x, w = _meta(1, 3, 32, 32, dtype=torch.float32), _meta(8, 3, 3, 3, dtype=torch.float32)
    call = _call(aten.convolution.default, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                 out=_meta(1, 8, 32, 32, dtype=torch.float32))
    assert ws.WORKSPACES["aten::convolution"](call, "cuda") is None


def test_every_cuda_entry_is_documented() -> None:
    entries: Mapping[str, Any] = {**{k: v for k, v in ws.WORKSPACES.items() if v.__module__ == wc.__name__},
                                  **ws.LIBRARY_WORKSPACES}
    for key, fn in entries.items():
        doc = " ".join((fn.__doc__ or "").split())
        # each says where it was read and whether a GPU's allocator has confirmed it
        assert "aten/src/ATen" in doc, key
        assert "not yet compared with a GPU's allocator" in doc or "compared with an H200's allocator" in doc, key
