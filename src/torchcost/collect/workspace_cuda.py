"""Memory CUDA kernels allocate for themselves, read from PyTorch's own source (torch 2.14.1, the version installed).

Every entry here is **from source**; benchmarks/gpu_check.py compares them with a GPU's allocator. Its first run, on
an H200 with torch 2.11 (benchmarks/gpu_check.md), found the cuBLAS workspaces, flash attention (float16, head dim
64, equal and grouped heads) and memory-efficient attention (float32, head dim 64) equal to the allocator to the
byte, once the philox seed and offset were known to be host memory without dropout too; what it did not exercise
is still **not yet compared with a GPU's allocator**. Each function's docstring names the file and the function it
follows. Three kinds, as collect/workspace.py registers them:

* **Library workspaces** (``register_library_workspace``): cuBLAS/cuBLASLt keep one workspace per (handle, stream),
  allocated through the caching allocator at the first matmul and never freed. A "cuda" run with a matmul-family
  op holds it from its start to its end (a step of a loop finds it made), once on the calling thread and once on
  autograd's device thread (when a matmul runs in backward).
* **Transient workspaces** (``register_workspace``): flash-attention's forward split-KV buffers and its backward
  accumulators, memory-efficient attention's backward workspace and forward accumulator, the contiguous copies the
  attention backward makes of a strided gradient. Each buffer is rounded up to the caching allocator's 512-byte
  blocks, as the allocator hands it out.
* **Outputs the meta kernel places wrongly** (``FIXED_CUDA_OUTPUTS``): memory-efficient attention's philox seed and
  offset are host tensors on CUDA, not device memory.

Some sizes depend on the GPU (the cuBLAS default, the SM count of flash attention's split heuristic, the kernels
memory-efficient attention can pick): they follow :func:`cuda_device`, the GPU ``analyze(..., hardware=)`` names,
else :data:`ASSUMED_GPU`, an H100 SXM. Not covered: cuDNN convolution workspaces (their size is whatever cuDNN's
heuristics pick for the GPU and cuDNN version: not in PyTorch's source), cuDNN attention, NCCL's buffers, the CUDA
context, ROCm's libraries. docs/conventions.md, "Memory", "CUDA kernels".
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from torchcost.collect.workspace import FIXED_CUDA_OUTPUTS, register_library_workspace, register_workspace
from torchcost.formulas._util import float32
from torchcost.formulas.registry import OpCall

if TYPE_CHECKING:
    from torchcost.timing.hardware import Hardware

__all__ = [
    "ASSUMED_GPU",
    "BLAS_OPS",
    "CudaDevice",
    "cublas_workspace",
    "cublas_workspace_size",
    "cuda_device",
    "efficient_attention_backward_workspace",
    "efficient_attention_forward_workspace",
    "flash_attention_backward_workspace",
    "flash_attention_forward_workspace",
    "flash_num_splits",
    "target_gpu",
]


@dataclass(frozen=True)
class CudaDevice:
    """The GPU a "cuda" target's kernels run on: its compute capability ((major, minor); None: not an NVIDIA GPU,
    whose kernels nothing here describes) and its number of streaming multiprocessors."""

    name: str
    capability: tuple[int, int] | None
    sm_count: int = 0

    @classmethod
    def of(cls, hardware: Hardware | None) -> CudaDevice:
        """The device a hardware table entry stands for; :data:`ASSUMED_GPU` without one."""
        if hardware is None:
            return ASSUMED_GPU
        return cls(hardware.name, hardware.compute_capability, hardware.sm_count)


ASSUMED_GPU = CudaDevice("NVIDIA H100 SXM (assumed: no hardware= given)", (9, 0), 132)
_DEVICE: ContextVar[CudaDevice] = ContextVar("torchcost_cuda_device", default=ASSUMED_GPU)


def cuda_device() -> CudaDevice:
    """The GPU the CUDA entries size for (set by the memory tracker around each lookup: :func:`target_gpu`)."""
    return _DEVICE.get()


@contextlib.contextmanager
def target_gpu(device: CudaDevice) -> Iterator[None]:
    """Size the CUDA entries for ``device`` inside the block."""
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


_BLOCK = 512  # the caching allocator rounds every allocation up to a multiple of 512 bytes (kMinBlockSize)


def _block(nbytes: int) -> int:
    return -(-nbytes // _BLOCK) * _BLOCK


def _round(x: int, m: int) -> int:
    return -(-x // m) * m


def _capability() -> tuple[int, int] | None:
    return cuda_device().capability


# -- cuBLAS / cuBLASLt: one persistent workspace per (handle, stream) ---------------------------------------------

_CONFIG_PAIR = re.compile(r":([0-9]+):([0-9]+)")
_LEADING_INT = re.compile(r"\s*([+-]?[0-9]+)")


def cublas_workspace_size() -> int:
    """Bytes of the cuBLAS workspace, as aten/src/ATen/cuda/CublasHandlePool.cpp, ``parseChosenWorkspaceSize``,
    computes them: ``CUBLAS_WORKSPACE_CONFIG`` (":SIZE:COUNT" pairs, SIZE in KiB: the sum of SIZE * 1024 * COUNT;
    ":4096:8" is 32 MiB) when it is set and parses, else 32 MiB (4096 * 8 * 1024) on compute capability 9.x to 12.x
    (Hopper, Blackwell) and ":4096:2:16:8" (4096 * 1024 * 2 + 16 * 1024 * 8 = 8,519,680 B) before. The setter
    ``torch.backends.cuda.cublas_workspace_size(n)`` cannot be read without a GPU and is not followed."""
    capability = _capability()
    hopper_on = capability is not None and 9 <= capability[0] <= 12
    default = 4096 * 8 * 1024 if hopper_on else 4096 * 1024 * 2 + 16 * 1024 * 8
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    pairs = _CONFIG_PAIR.findall(config) if config is not None else []
    return sum(int(size) * 1024 * int(count) for size, count in pairs) if pairs else default


def _cublaslt_workspace_size() -> int:
    """Bytes of cuBLASLt's own workspace when it is not unified with cuBLAS's (CublasHandlePool.cpp,
    ``parseCUDABlasLtWorkspaceSize``): ``CUBLASLT_WORKSPACE_SIZE`` KiB (read as ``std::stoi`` reads), 1024 KiB
    by default."""
    found = _LEADING_INT.match(os.environ.get("CUBLASLT_WORKSPACE_SIZE", ""))
    return (int(found.group(1)) if found else 1024) * 1024


def _unified() -> bool:
    """``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` as ``c10::utils::check_env`` reads it: "0" turns the unified workspace
    off; unset (the default outside fbcode), "1" or anything else leaves it on."""
    return os.environ.get("TORCH_CUBLASLT_UNIFIED_WORKSPACE") != "0"


# aten ops whose CUDA kernels call cuBLAS or cuBLASLt through at::cuda::blas (aten/src/ATen/native/cuda/Blas.cpp);
# nn.Linear, matmul and einsum reach them as addmm, mm, bmm, mv or dot. The last two always take cuBLASLt.
BLAS_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::_addmm_activation",
            "aten::mv", "aten::addmv", "aten::dot", "aten::vdot", "aten::_scaled_mm", "aten::_int_mm")
_LT_ONLY = ("aten::_scaled_mm", "aten::_int_mm")


def cublas_workspace(call: OpCall, target: str) -> tuple[str, int] | None:
    """The cuBLAS workspace a matmul-family op needs on a "cuda" target: ("cublas", bytes of
    :func:`cublas_workspace_size`), or None (an empty operand or output: the kernel returns before calling cuBLAS;
    another target; a GPU that is not NVIDIA's, whose hipBLAS sizes are not described).

    From aten/src/ATen/cuda/CublasHandlePool.cpp (torch 2.14.1): ``getCurrentCUDABlasHandle`` calls
    ``setWorkspaceForHandle``, which allocates ``getChosenWorkspaceSize()`` bytes from the CUDA caching allocator
    (``CUDACachingAllocator::get()->allocate``, so the block is in ``torch.cuda.memory_allocated``) the first time a
    (handle, stream) pair is used, and keeps it in ``cublas_handle_stream_to_workspace()``, freed only by
    ``torch._C._cuda_clearCublasWorkspaces()`` or at exit. cuBLASLt (``getCUDABlasLtWorkspace``) takes the same
    block unless ``TORCH_CUBLASLT_UNIFIED_WORKSPACE=0``; then it keeps its own per (handle, stream), of
    ``CUBLASLT_WORKSPACE_SIZE`` KiB (default 1 MiB): ("cublaslt", bytes) for ``_scaled_mm`` and ``_int_mm``, which
    always take cuBLASLt (addmm's own choice of cuBLASLt is not followed: it is counted as cuBLAS). Handles come
    from a per-thread pool (aten/src/ATen/cuda/detail/DeviceThreadHandles.h), so the autograd engine's device
    thread (torch/csrc/autograd/engine.cpp, ``Engine::start_device_threads``: one worker per GPU), which runs
    backward's CUDA ops, gets a second handle and a second workspace (the tracker keeps one block per library and
    thread). From source; compared with an H200's allocator (torch 2.11, benchmarks/gpu_check.md): one workspace
    in an eval forward, two in a training step, equal to the byte."""
    if target != "cuda" or _capability() is None:
        return None
    tensors = [t for t in (*call.args, *call.kwargs.values(), call.out) if isinstance(t, torch.Tensor)]
    if not tensors or any(t.numel() == 0 for t in tensors):
        return None
    if not _unified() and call.key in _LT_ONLY:
        return "cublaslt", _cublaslt_workspace_size()
    return "cublas", cublas_workspace_size()


for _op in BLAS_OPS:
    register_library_workspace(_op, cublas_workspace)


# -- flash attention (FlashAttention-2 as vendored in aten/src/ATen/native/transformers/cuda/flash_attn) -----------


def flash_num_splits(batch_nheads_mblocks: int, num_sms: int, num_n_blocks: int, max_splits: int = 128) -> int:
    """``num_splits_heuristic`` of flash_api.cpp: 1 when the blocks almost fill the SMs (>= 0.8 of them), else the
    smallest eligible split count whose wave efficiency reaches 85 % of the best, up to min(max_splits, SMs,
    key blocks); a count is eligible when it changes ceil(key blocks / splits)."""
    if batch_nheads_mblocks >= float32(float32(0.8) * num_sms):
        return 1
    max_splits = min(max_splits, num_sms, num_n_blocks)

    def eligible(s: int) -> bool:
        return s == 1 or -(-num_n_blocks // s) != -(-num_n_blocks // (s - 1))

    efficiency = []
    for s in range(1, max_splits + 1):
        waves = float32(batch_nheads_mblocks * s / num_sms)
        efficiency.append(float32(waves / math.ceil(waves)) if eligible(s) else 0.0)
    best = max(efficiency, default=0.0)
    return next((s for s in range(1, max_splits + 1) if eligible(s) and efficiency[s - 1] >= 0.85 * best), 1)


def _flash_layout(call: OpCall, bhsd: bool) -> tuple[torch.Tensor, torch.Tensor, int, int, int, int, int] | None:
    """(q, k, batch, seqlen_q, heads, seqlen_k, kv heads) of a dense flash call, or None. The SDPA ops take
    (batch, heads, seq, dim) and hand the kernel the transposes; the raw ops take (batch, seq, heads, dim)."""
    q, k = call.arg("query"), call.arg("key")
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and q.dim() == 4 and k.dim() == 4
            and q.dtype in (torch.float16, torch.bfloat16) and q.size(-1) % 8 == 0 and q.size(-1) <= 256):
        return None
    if bhsd:
        return q, k, q.size(0), q.size(2), q.size(1), k.size(2), k.size(1)
    return q, k, q.size(0), q.size(1), q.size(2), k.size(1), k.size(2)


def _head_dim_rounded(d: int) -> int:
    return _round(d, 32 if d <= 128 else 64)


def flash_attention_forward_workspace(call: OpCall, target: str) -> int | None:
    """Bytes FlashAttention-2's forward holds inside itself on CUDA: the split-KV buffers. From
    aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp, ``mha_fwd`` and ``set_params_splitkv``
    (torch 2.14.1 asks for ``num_splits = 0``: the heuristic decides). Without dropout, with B batch, H heads, d the
    head dim, S_q and S_k the lengths (a single query with grouped heads is first folded: S_q = H / H_k, H = H_k),
    d_r = d rounded up to 32 (to 64 above 128), n = ceil(S_k / block_n) with block_n = 256 (d <= 64), 128 (d <= 128)
    or 64: splits = :func:`flash_num_splits`\\ (B * H * ceil(S_q / 64), 2 * SMs, n); above 1, ``softmax_lse_accum``
    splits * B * H * S_q * 4 and ``out_accum`` splits * B * H * S_q * d_r * 4 bytes (float32) are alive while the
    kernel runs. The SM count is :func:`cuda_device`'s. 0 with dropout (no split kernel) and for one split. Not
    claimed (None): varlen, paged KV, an explicit ``num_splits``, a head dim not a multiple of 8 (SDPA pads it first),
    an unknown SM count. From source, not yet compared with a GPU's allocator."""
    bhsd = call.key == "aten::_scaled_dot_product_flash_attention"
    found = _flash_layout(call, bhsd)
    device = cuda_device()
    if target != "cuda" or found is None or not device.sm_count or device.capability is None:
        return None
    if not bhsd and any(call.arg(name) is not None
                        for name in ("cum_seq_q", "block_table", "num_splits", "seqused_k", "alibi_slopes")):
        return None
    q, _, b, sq, h, sk, hk = found
    if float(call.arg("dropout_p") or 0.0) > 0.0:
        return 0
    if sq == 1 and h > hk and call.arg("window_size_left") is None and call.arg("window_size_right") is None:
        sq, h = h // hk, hk  # seqlenq_ngroups_swapped
    d = q.size(-1)
    block_n = 256 if d <= 64 else 128 if d <= 128 else 64
    splits = flash_num_splits(b * h * -(-sq // 64), 2 * device.sm_count, -(-sk // block_n))
    if splits <= 1 or sk == 0:
        return 0
    return _block(splits * b * h * sq * 4) + _block(splits * b * h * sq * _head_dim_rounded(d) * 4)


def _copy_bytes(t: Any, transpose: bool) -> int:
    """Bytes of ``t.contiguous()`` (the kernel's view of ``t``, transposed (1, 2) for the SDPA ops) when that is a
    copy; 0 when the view is contiguous already."""
    if not isinstance(t, torch.Tensor):
        return 0
    view = t.transpose(1, 2) if transpose else t
    return 0 if view.is_contiguous() else _block(t.numel() * t.element_size())


def flash_attention_backward_workspace(call: OpCall, target: str) -> int | None:
    """Bytes FlashAttention-2's backward holds inside itself on CUDA beyond the gradients it returns. From
    aten/src/ATen/native/transformers/cuda/attention_backward.cu, ``_flash_attention_backward`` (it makes
    ``grad_out`` and ``out`` contiguous: a copy each when they are not; the SDPA op hands it their (1, 2)
    transposes), and flash_attn/flash_api.cpp, ``mha_bwd``, which allocates, with B batch, H heads, H_k key/value
    heads, d the head dim, d_r = d rounded up to 32 (to 64 above 128), S_q and S_k the lengths and
    S_q' = S_q rounded up to 128: ``softmax_d`` B * H * S_q' * 4, ``dq_accum`` B * S_q' * H * d_r * 4 (float32; under
    ``torch.use_deterministic_algorithms(True)`` ceil(SMs / (B * H)) of them, zeroed), and for grouped or multi-query
    attention (H_k < H) ``dk_expanded`` and ``dv_expanded``, B * S_k * H * d elements each in the input's dtype,
    summed into dK and dV at the end. All are alive together while the kernel runs and freed when the op returns
    (``softmax_d`` is dropped). Not claimed (None): varlen (nested) calls, a head dim not a multiple of 8 or above
    256, other dtypes than float16/bfloat16. From source, not yet compared with a GPU's allocator."""
    bhsd = call.key == "aten::_scaled_dot_product_flash_attention_backward"
    found = _flash_layout(call, bhsd)
    device = cuda_device()
    if target != "cuda" or found is None or device.capability is None:
        return None
    cum_seq_q = call.arg("cum_seq_q")
    if isinstance(cum_seq_q, torch.Tensor) and cum_seq_q.numel() > 0 and not bhsd:
        return None
    q, _, b, sq, h, sk, hk = found
    if b == 0:
        return 0
    d, sq_r = q.size(-1), _round(sq, 128)
    copies = _copy_bytes(call.arg("grad_out"), bhsd) + _copy_bytes(call.arg("out"), bhsd)
    nsplits = 1
    if torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled():
        if not device.sm_count:
            return None
        nsplits = -(-device.sm_count // (b * h))
    expanded = 2 * _block(b * sk * h * d * q.element_size()) if hk != h else 0
    return (copies + _block(b * h * sq_r * 4) + _block(nsplits * b * sq_r * h * _head_dim_rounded(d) * 4)
            + expanded)


for _op in ("aten::_scaled_dot_product_flash_attention", "aten::_flash_attention_forward"):
    register_workspace(_op, flash_attention_forward_workspace)
for _op in ("aten::_scaled_dot_product_flash_attention_backward", "aten::_flash_attention_backward"):
    register_workspace(_op, flash_attention_backward_workspace)


# -- memory-efficient attention (xFormers' CUTLASS kernels in cuda/mem_eff_attention) -------------------------------


def _large_shared_memory() -> bool:
    """A GPU whose shared memory per block fits every kernel built for sm80 (A100: compute capability 8.0; H100,
    H200: 9.0; B200: 10.x). The 8.6/8.9/12.x parts have less, and the dispatch skips the larger kernels there."""
    capability = _capability()
    return capability is not None and (capability == (8, 0) or capability[0] in (9, 10))


def _mem_eff_backward_blocks(dtype: torch.dtype, max_k: int, dropout: bool) -> tuple[int, int] | None:
    """(kBlockSizeI, kBlockSizeJ) of the sm80 backward kernel ``dispatch_cutlassB`` launches
    (cuda/mem_eff_attention/kernels/cutlassB.h: the first kernel whose kMaxK covers max(K, Kv) and whose shared
    memory fits) when that kernel accumulates dK and dV in registers, so that its workspace is dQ's alone; None
    for the kernels that stage dK/dV in the workspace (their size depends on the split-keys heuristic) and for
    GPUs before compute capability 8.0."""
    capability = _capability()
    if capability is None or capability[0] < 8:
        return None
    half = dtype in (torch.float16, torch.bfloat16)
    if max_k <= 64:
        return 64, 64
    if max_k <= 128 and _large_shared_memory():
        return (128, 128) if half else (128, 64)
    if half and max_k <= 96 and not dropout and capability in ((8, 6), (8, 9)):
        return 128, 64  # fmha_cutlassB_*_aligned_128x64_k96_sm80, built for compute capability 8.6 and 8.9 only
    return None


def efficient_attention_backward_workspace(call: OpCall, target: str) -> int | None:
    """Bytes memory-efficient attention's backward holds inside itself on CUDA beyond the gradients it returns.
    From aten/src/ATen/native/transformers/cuda/attention_backward.cu, ``_efficient_attention_backward``, and
    cuda/mem_eff_attention/kernel_backward.h, ``Params::workspace_size``. With B batch, M queries, H heads, K the
    query/key head dim, Kv the value's, and the launched kernel's blocks I x J (:func:`_mem_eff_backward_blocks`):

    * ``grad_out.contiguous()``: a copy, B * M * H * Kv elements, when it is not contiguous (the SDPA op hands it
      the (1, 2) transpose of its ``grad_out``);
    * ``delta``, B * H * M * 4 bytes: allocated empty for float16/bfloat16 (``kKernelComputesDelta``); for float32
      computed as ``(grad_out * out).sum(-1).transpose(-2, -1).contiguous()``, whose product
      (B * M * H * Kv * 4) and sum (B * M * H * 4) are alive with it until the statement ends;
    * the workspace, B * H * (ceil(M / I) * ceil(K / J) * (4 + I * J)) * 4 bytes: one ``GradQTempStorage`` (16
      bytes of lock and counter, I * J float32 accumulators) per dQ tile, for the kernels whose dK/dV stay in
      registers (``kNeedsAccumGradK/V`` false), which is every kernel claimed.

    The op holds max(product + sum + delta, delta + workspace) + the copy. Claimed for float16, bfloat16 and float32
    on compute capability 8.0, 9.x and 10.x with max(K, Kv) <= 128, on other GPUs from 8.0 with max(K, Kv) <= 64
    (and 96 for half precision without dropout on 8.6/8.9); None for the rest (head dims above 128, whose kernels
    stage dK/dV in the workspace, nested inputs, more than 65,535 batches, older GPUs). From source; compared with
    an H200's allocator for float32 with K = Kv = 64 (torch 2.11, benchmarks/gpu_check.md: the step's peak equal
    to the byte), the other cases not yet compared with a GPU's allocator."""
    bhsd = call.key == "aten::_scaled_dot_product_efficient_attention_backward"
    q, v, grad_out = call.arg("query"), call.arg("value"), call.arg("grad_out_")
    if not (target == "cuda" and isinstance(q, torch.Tensor) and isinstance(v, torch.Tensor) and q.dim() == 4
            and v.dim() == 4 and q.dtype in (torch.float16, torch.bfloat16, torch.float32)):
        return None
    if not bhsd and (call.arg("cu_seqlens_q") is not None or call.arg("window_size") is not None
                     or call.arg("shared_storage_dqdkdv")):
        return None
    b, m, h, k = (q.size(0), q.size(2), q.size(1), q.size(3)) if bhsd else (q.size(0), q.size(1), q.size(2), q.size(3))
    kv = v.size(3)
    if k % 8 or kv % 8 or b > 65535:
        return None
    blocks = _mem_eff_backward_blocks(q.dtype, max(k, kv), float(call.arg("dropout_p") or 0.0) > 0.0)
    if blocks is None:
        return None
    if b * m * h == 0:
        return 0
    i, j = blocks
    delta = _block(b * h * m * 4)
    workspace = _block(b * h * -(-m // i) * -(-k // j) * (4 + i * j) * 4)
    held = delta + workspace
    if q.dtype == torch.float32:
        held = max(held, _block(b * m * h * kv * 4) + _block(b * m * h * 4) + delta)
    return _copy_bytes(grad_out, bhsd) + held


def efficient_attention_forward_workspace(call: OpCall, target: str) -> int | None:
    """Bytes memory-efficient attention's forward holds inside itself on CUDA: the float32 output accumulator
    (``output_accum``, B * M * H * Kv * 4 bytes) of the sm80 kernels that iterate over the value's head dim in
    global memory (``kNeedsOutputAccumulatorBuffer``: kMaxK above the 128 keys per block, output not float32):
    float16/bfloat16 with max(K, Kv) > 128. From aten/src/ATen/native/transformers/cuda/attention.cu,
    ``_efficient_attention_forward``, and cuda/mem_eff_attention/kernel_forward.h (``kSingleValueIteration``);
    0 otherwise, None before compute capability 8.0. From source, not yet compared with a GPU's allocator."""
    bhsd = call.key == "aten::_scaled_dot_product_efficient_attention"
    q, v = call.arg("query"), call.arg("value")
    capability = _capability()
    if not (target == "cuda" and capability is not None and capability[0] >= 8 and isinstance(q, torch.Tensor)
            and isinstance(v, torch.Tensor) and q.dim() == 4 and v.dim() == 4):
        return None
    if q.dtype not in (torch.float16, torch.bfloat16) or max(q.size(-1), v.size(-1)) <= 128:
        return 0
    b, m, h = (q.size(0), q.size(2), q.size(1)) if bhsd else (q.size(0), q.size(1), q.size(2))
    return _block(b * m * h * v.size(-1) * 4)


for _op in ("aten::_scaled_dot_product_efficient_attention", "aten::_efficient_attention_forward"):
    register_workspace(_op, efficient_attention_forward_workspace)
for _op in ("aten::_scaled_dot_product_efficient_attention_backward", "aten::_efficient_attention_backward"):
    register_workspace(_op, efficient_attention_backward_workspace)


def _host_seed_offset(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> dict[int, int]:
    """Memory-efficient attention's philox seed and offset (outputs 2 and 3): host tensors on CUDA, with dropout and
    without (attention.cu, ``_efficient_attention_forward``: ``device = in_capture_stream ? kCUDA : kCPU``; outside a
    CUDA graph capture, which torchcost does not model, the seed and offset are made on the CPU either way), so they
    take no device memory, where the meta kernel makes them on the meta device (8 bytes each, a 512-byte block on a
    "cuda" target, saved for backward). Measured on an H200 (torch 2.11): the allocator rises by the output and the
    log-sum-exp alone, dropout 0.0."""
    return {2: 0, 3: 0}


FIXED_CUDA_OUTPUTS.update({
    "aten::_scaled_dot_product_efficient_attention": _host_seed_offset,
    "aten::_efficient_attention_forward": _host_seed_offset,
})
