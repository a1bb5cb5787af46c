"""Memory kernels hold that the twin's tensors do not show: sized from shapes, as data, like the FLOP formulas.

Three kinds, all consulted by the :class:`~torchcost.collect.memory.MemoryTracker`:

* **Kernel-internal transient memory** (``register_workspace``): bytes an op allocates and frees inside itself
  (blocked copies, packed weights, scratch). ``fn(call, target) -> bytes`` gets the op's :class:`OpCall` and the
  target device type ("cpu", "cuda"); the bytes count in the timeline at that op only and as ``workspace`` in the
  breakdown when the peak is there.
* **Outputs the fake/meta kernel sizes wrongly** (``true_output_bytes``): a tensor the op returns whose storage on a
  meta or fake tensor is smaller than the real kernel's. ``aten::mkldnn_rnn_layer`` (CPU LSTM) returns an empty
  uint8 ``workspace`` on meta, while the real one is oneDNN's RNN workspace, saved by autograd until backward.
* **Library workspaces** (``register_library_workspace``): memory a library allocates at an op's first call and
  keeps for the rest of the process (cuBLAS's workspace). ``fn(call, target) -> (library, bytes)``; the tracker
  holds one block per library and thread for the whole run when an op of the run asks for it (a step of a loop
  finds it made: it counts from the start).

Every CPU entry here was measured against the allocator on the machine named in docs/conventions.md, "Memory". The
CUDA entries (collect/workspace_cuda.py, registered when it is imported) are read from PyTorch's source.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from torchcost.collect.ops import collective_bytes, collective_kind
from torchcost.collect.probe import blas_layout
from torchcost.formulas.registry import OpCall, op_key

__all__ = [
    "BF16_MATMUL_ISA",
    "CPU_ENTRIES",
    "FIXED_CUDA_OUTPUTS",
    "FIXED_OUTPUTS",
    "GROUPED_CONV_ISA",
    "LIBRARY_WORKSPACES",
    "QUICK_ENTRIES",
    "WORKSPACES",
    "LibraryWorkspaceFn",
    "WorkspaceFn",
    "bf16_conv_workspace",
    "bf16_matmul_workspace",
    "collective_workspace",
    "convolution_workspace",
    "grouped_conv_workspace",
    "library_workspace",
    "lstm_workspace_bytes",
    "register_library_workspace",
    "register_workspace",
    "slow_conv2d_workspace",
    "true_output_bytes",
    "workspace_bytes",
]

WorkspaceFn = Callable[[OpCall, str], "int | None"]
WORKSPACES: dict[str, WorkspaceFn] = {}  # "aten::name" -> fn(call, target) -> bytes held inside the op, None: unknown
_PAGE = 4096


def register_workspace(op: object, fn: WorkspaceFn, *, replace: bool = False) -> WorkspaceFn:
    """Say how many bytes ``op`` allocates and frees inside itself: ``fn(call, target) -> bytes`` (0: none; None:
    this entry does not know the call, so a probe may measure it on the CPU, collect/probe.py).

    ``op`` is an aten op or its name ("aten::mkldnn_convolution"); every overload shares the entry. The bytes are
    counted while the op runs (in the timeline at that op, and as ``workspace`` at the peak), never after it.
    """
    key = op_key(op)
    if key in WORKSPACES and not replace:
        raise ValueError(f"a workspace entry for {key} exists; pass replace=True to change it")
    WORKSPACES[key] = fn
    return fn


def workspace_bytes(key: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                    target: str) -> int | None:
    """The registered transient bytes of one call; None when the op has no entry or its entry does not claim the
    call (unknown: not measured for these shapes, this dtype or this CPU)."""
    fn = WORKSPACES.get(key)
    if fn is None:
        return None
    held = fn(OpCall(key, args, kwargs, out, getattr(func, "_schema", None)), target)
    return None if held is None else max(0, int(held))


LibraryWorkspaceFn = Callable[[OpCall, str], "tuple[str, int] | None"]
# "aten::name" -> fn(call, target) -> (library, bytes) the library keeps from this call on; None: none
LIBRARY_WORKSPACES: dict[str, LibraryWorkspaceFn] = {}


def register_library_workspace(op: object, fn: LibraryWorkspaceFn, *, replace: bool = False) -> LibraryWorkspaceFn:
    """Say that ``op`` makes a library allocate memory it keeps: ``fn(call, target) -> (library, bytes)`` (None:
    nothing for this call). The first op of a run that names a library (on its thread: the calling one, or in
    backward autograd's device thread) allocates ``bytes``; they stay alive to the end of the run, shown as
    ``workspace``. Later ops naming the same library add nothing."""
    key = op_key(op)
    if key in LIBRARY_WORKSPACES and not replace:
        raise ValueError(f"a library workspace entry for {key} exists; pass replace=True to change it")
    LIBRARY_WORKSPACES[key] = fn
    return fn


def library_workspace(key: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                      target: str) -> tuple[str, int] | None:
    """The (library, bytes) one call asks for; None when the op has no entry or its entry names none."""
    fn = LIBRARY_WORKSPACES.get(key)
    if fn is None:
        return None
    found = fn(OpCall(key, args, kwargs, out, getattr(func, "_schema", None)), target)
    return None if found is None else (found[0], max(0, int(found[1])))


# -- built-in transient workspaces (CPU, measured on the machine of docs/conventions.md, "Memory") -----------------

GROUPED_CONV_ISA = "AVX512"  # torch.backends.cpu.get_cpu_capability() the convolution entry was measured on


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[-1].split())


def _measured_isa(capability: str) -> bool:
    """True on a CPU like the one an entry was measured on: that torch CPU capability and no AMX."""
    return torch.backends.cpu.get_cpu_capability() == capability and "amx_tile" not in _cpu_flags()


def _pad16(c: int) -> int:
    return -(-c // 16) * 16


_ConvArgs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]  # input, weight, output, groups


def _conv_args(call: OpCall, target: str) -> _ConvArgs | None:
    """What every CPU convolution entry needs, read once per call: (input, weight, output, groups) of a plain 2-D
    convolution (not transposed, contiguous NCHW input and weight) on the CPU the entries were measured on (oneDNN
    available and enabled, the measured capability, no AMX); None for any other call."""
    x, w, out = call.arg("input"), call.arg("weight"), call.out
    if not (target == "cpu" and isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor)
            and isinstance(out, torch.Tensor) and x.dim() == 4 and w.dim() == 4 and not call.arg("transposed")
            and x.is_contiguous() and w.is_contiguous() and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and _measured_isa(GROUPED_CONV_ISA)):
        return None
    return x, w, out, int(call.arg("groups") or 1)


def grouped_conv_workspace(call: OpCall, target: str) -> int | None:
    """Bytes oneDNN holds inside an f32 grouped or depthwise 2-D convolution on CPU (AVX512, no AMX): it reorders the
    NCHW input, the weight and the output into channel-blocked copies, all alive at once, then writes the plain
    output while the blocked one is alive. With plain output bytes O, the blocked input I', weight W' and output O':
    depthwise (groups = C_in = C_out, kernel not 1x1) pads the channels to a multiple of 16 in all three; grouped
    (groups > 1, C_in/groups and C_out/groups multiples of 4, kernel not 1x1) keeps the plain sizes. The op holds
    max(I' + W' + O', O' + O) - O beyond its output. Other shapes (2 or 3 channels per group, a channel multiplier,
    1x1 depthwise, channels-last), other CPUs and groups = 1 take other kernels: None (not claimed)."""
    conv = _conv_args(call, target)
    return _grouped(*conv) if conv is not None else None


def _grouped(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, groups: int) -> int | None:
    if not (groups > 1 and x.dtype == torch.float32 and w.dtype == torch.float32 and tuple(w.shape[2:]) != (1, 1)):
        return None
    c_in, c_out = x.size(1), w.size(0)
    n, spatial_in, spatial_out = x.size(0), x.size(2) * x.size(3), out.size(2) * out.size(3)
    if groups == c_in == c_out:
        c_in = c_out = _pad16(c_in)
        blocked_w = c_out * w.size(2) * w.size(3) * 4
    elif (c_in // groups) % 4 == 0 and (c_out // groups) % 4 == 0:
        blocked_w = w.numel() * 4
    else:
        return None
    blocked_in, blocked_out, plain_out = n * c_in * spatial_in * 4, n * c_out * spatial_out * 4, out.numel() * 4
    return max(blocked_in + blocked_w + blocked_out, blocked_out + plain_out) - plain_out


def bf16_conv_workspace(call: OpCall, target: str) -> int | None:
    """Bytes oneDNN holds inside a bf16 2-D convolution (groups = 1) on a CPU with avx512_bf16 (AVX512, no AMX): it
    reorders the NCHW input and the weight into channel-blocked copies, computes a blocked output, then writes the
    plain output while the blocked one is alive. With plain output bytes O, blocked input I', weight W', output O'
    (O' = O): when C_in and C_out are multiples of 16, I' and W' are the plain sizes; when C_in = 3 (a first conv,
    C_out a multiple of 16) the input is read as it is (I' = 0) and W' pads C_in to 4. The op holds
    max(I' + W' + O', O' + O) - O beyond its output; bias, stride, padding, dilation, a non-square kernel and the
    thread count do not change it. Other channel counts, 1x1 kernels (another kernel, with more scratch) and other
    CPUs: None (not claimed)."""
    conv = _conv_args(call, target)
    return _bf16(*conv) if conv is not None else None


def _bf16(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, groups: int) -> int | None:
    if not (groups == 1 and x.dtype == torch.bfloat16 and w.dtype == torch.bfloat16
            and tuple(w.shape[2:]) != (1, 1) and "avx512_bf16" in _cpu_flags()):
        return None
    c_in, c_out, kernel = x.size(1), w.size(0), w.size(2) * w.size(3)
    if c_out % 16:
        return None
    if c_in % 16 == 0:
        blocked_in, blocked_w = x.numel() * 2, w.numel() * 2
    elif c_in == 3:
        blocked_in, blocked_w = 0, c_out * 4 * kernel * 2
    else:
        return None
    plain_out = out.numel() * 2
    return max(blocked_in + blocked_w + plain_out, 2 * plain_out) - plain_out


def _slow2d_chosen(n: int, c_in: int, h: int, w: int, kh: int, kw: int, strided: bool) -> bool:
    """True when torch's CPU backend selection (``use_mkldnn`` in aten's Convolution.cpp) leaves an f32, groups = 1,
    undilated 2-D convolution to its native ``Slow2d`` kernel instead of oneDNN. Checked against
    ``torch._C._select_conv_backend`` at 26,016 shapes (batch 1 to 16, one and two threads, channels-last too)."""
    mkldnn = ((strided or n >= 16 or kw != 1 or kh != 1 or torch.get_num_threads() > 1)
              and ((kw > 3 and kh > 3) or n > 1 or n * c_in * h * w > 20480))
    return not mkldnn


def slow_conv2d_workspace(call: OpCall, target: str) -> int | None:
    """Bytes torch's native ``Slow2d`` kernel (``_slow_conv2d_forward``) holds inside an f32, groups = 1 2-D
    convolution that torch does not send to oneDNN (small inputs: batch 1, a kernel up to 3 wide or tall, at most
    20,480 input elements; or an unstrided 1x1 kernel, batch under 16, one thread): the im2col buffer,
    N x (C_in*kh*kw) x (H_out*W_out) floats, unless the kernel is 1x1 with stride 1 and no padding (then 0). Not
    claimed (None): the convolutions torch sends to oneDNN, dilation (``SlowDilated2d``), channels-last input (a
    channels-last copy of the weight more), other CPUs."""
    conv = _conv_args(call, target)
    return _slow2d(call, *conv) if conv is not None else None


def _slow2d(call: OpCall, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, groups: int) -> int | None:
    if not (groups == 1 and x.dtype == torch.float32 and w.dtype == torch.float32):
        return None
    stride, padding = list(call.arg("stride") or [1, 1]), list(call.arg("padding") or [0, 0])
    dilation = list(call.arg("dilation") or [1, 1])
    stride, padding, dilation = (v * 2 if len(v) == 1 else v for v in (stride, padding, dilation))
    if any(int(d) != 1 for d in dilation):
        return None
    n, c_in, kh, kw = x.size(0), x.size(1), w.size(2), w.size(3)
    strided = any(int(s) != 1 for s in stride)
    if not _slow2d_chosen(n, c_in, x.size(2), x.size(3), kh, kw, strided):
        return None
    if (kh, kw) == (1, 1) and not strided and all(int(p) == 0 for p in padding):
        return 0
    return n * c_in * kh * kw * out.size(2) * out.size(3) * 4


def convolution_workspace(call: OpCall, target: str) -> int | None:
    """The ``aten::convolution`` entry: :func:`grouped_conv_workspace` (f32, groups > 1),
    :func:`slow_conv2d_workspace` (f32, groups = 1, torch's native kernel) or :func:`bf16_conv_workspace` (bf16,
    groups = 1); the three claim disjoint calls. None where none claims the call (oneDNN's f32 groups = 1
    convolutions, bf16 1x1, other CPUs...). The call's arguments are read once for the three."""
    conv = _conv_args(call, target)
    if conv is None:
        return None
    held = _grouped(*conv)
    if held is None:
        held = _slow2d(call, *conv)
    return held if held is not None else _bf16(*conv)


register_workspace("aten::convolution", convolution_workspace)


BF16_MATMUL_ISA = "AVX512"  # the capability the bf16 matmul entry was measured on (with avx512_bf16, no AMX)
_MKLDNN_GEMM_MIN = 16 * 16 * 16  # torch sends a bf16 mm to oneDNN only when M*K*N exceeds this (checksize)


def _m_block(m: int) -> int:
    """oneDNN's row block of a bf16 brgemm matmul (avx512_bf16, one thread): M itself up to 256, else the largest
    divisor of M up to 256 (measured: 300 -> 150, 511 -> 73, 777 -> 111, 1030 -> 206); 0 (not claimed) when that
    divisor is under 64, where another rule applies (257 -> 129)."""
    if m <= 256:
        return m
    d = next(d for d in range(256, 0, -1) if m % d == 0)
    return d if d >= 64 else 0


def bf16_matmul_workspace(call: OpCall, target: str) -> int | None:
    """Bytes of the scratchpad oneDNN's bf16 brgemm matmul allocates inside ``aten::mm`` / ``aten::addmm`` on a CPU
    with avx512_bf16 (no AMX), one thread: a VNNI copy of a block of B, K_blk x 64 bf16 (2 bytes), an f32
    accumulator of M_blk x min(N, 64), and 1,024 bytes more. K_blk is K rounded up to 32 up to K = 512, 512 up to
    K = 1024, then 1024; M_blk as :func:`_m_block`. Claimed when both operands are bf16 2-D, A is row-major
    (a transposed A adds a copy of A: not claimed) and M*K*N > 4096 (below, torch does not call oneDNN); the
    layout of B (plain or transposed) and the bias do not change it. f32 matmuls allocate nothing inside (0) when
    BLAS takes both operands as they are (:func:`~torchcost.collect.probe.blas_layout`). Not claimed (None): an f32
    operand aten clones first, a transposed A, M = 257 and the like, more than one thread (the scratchpad grows with the
    thread count, not proportionally), other dtypes, other CPUs."""
    a, b = call.arg("self" if call.key == "aten::mm" else "mat1"), call.arg("mat2")
    if not (target == "cpu" and isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return None
    if a.dtype == torch.float32 and b.dtype == torch.float32:  # (BLAS; an operand it cannot take is cloned first)
        return 0 if blas_layout(a.shape, a.stride()) and blas_layout(b.shape, b.stride()) else None
    if not (a.dim() == 2 and b.dim() == 2 and a.dtype == torch.bfloat16 and b.dtype == torch.bfloat16
            and a.stride(1) == 1 and torch.get_num_threads() == 1 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and "avx512_bf16" in _cpu_flags()
            and _measured_isa(BF16_MATMUL_ISA)):
        return None
    m, k, n = a.size(0), a.size(1), b.size(1)
    m_blk = _m_block(m)
    if m * k * n <= _MKLDNN_GEMM_MIN:
        return 0
    if m_blk == 0:
        return None
    k_blk = -(-k // 32) * 32 if k <= 512 else 512 if k <= 1024 else 1024
    return k_blk * 64 * 2 + m_blk * min(n, 64) * 4 + 1024


register_workspace("aten::mm", bf16_matmul_workspace)
register_workspace("aten::addmm", bf16_matmul_workspace)
# built-in entries that answer from a few attributes of the call, sooner than the call's metadata is keyed to look an
# answer up (collect/memory.py asks them each time: every Linear's matmul, in a CNN's head or a transformer's layers)
QUICK_ENTRIES: frozenset[WorkspaceFn] = frozenset({bf16_matmul_workspace})
# built-in entries that claim CPU calls only: a call for another target (a CUDA run, a meta model's "cuda" target)
# skips them, unkeyed
CPU_ENTRIES: frozenset[WorkspaceFn] = frozenset({convolution_workspace, bf16_matmul_workspace})


# -- collectives: the process group's own transient buffers (simulated ranks, parallel=) ------------------------------


def collective_workspace(call: OpCall, target: str) -> int | None:
    """Bytes the process group's backend holds inside a collective beyond the tensors it is given. The target says
    which backend a simulated rank stands for (MemoryTracker.stands_for): "cpu" is gloo, "cuda" NCCL.

    gloo (ProcessGroupGloo, measured with torch 2.14.1's profiler on 2- and 4-process runs, fp32 and bf16):
    reduce-scatter is an all-reduce of a clone of the whole input, whose chunk is then copied into the output, so it
    holds the input's bytes (``c10d::_reduce_scatter_base_``: FSDP2's reduce-scatter of a unit's flat gradients; the
    coalesced and functional ops likewise, one clone per input; the functional op's clone lives until its
    ``wait_tensor``, counted at the op); all-gather into a flat tensor gathers into a buffer of the output's size
    first (allocated in the calling thread, freed, then again in gloo's worker thread), so it holds the output's
    bytes (``c10d::_allgather_base_``: FSDP2's all-gather; the coalesced and functional ops likewise). All-reduce and
    broadcast work in place (0). NCCL works on the given buffers (its own are allocated with the communicator,
    outside the step): 0. Other targets: None (unknown)."""
    if target == "cuda":
        return 0
    if target != "cpu":
        return None
    kind = collective_kind(call.key)  # gloo's copy is the payload: the input it reduces, the output it gathers
    return collective_bytes(call.key, kind, call.args, call.out) if kind in ("reduce_scatter", "all_gather") else 0


for _op in ("c10d::_reduce_scatter_base_", "c10d::reduce_scatter_tensor_coalesced_", "c10d::_allgather_base_",
            "c10d::allgather_into_tensor_coalesced_", "_c10d_functional::reduce_scatter_tensor",
            "_c10d_functional::reduce_scatter_tensor_coalesced", "_c10d_functional::all_gather_into_tensor",
            "_c10d_functional::all_gather_into_tensor_coalesced"):
    register_workspace(_op, collective_workspace)


# -- outputs sized wrongly by the fake/meta kernels ----------------------------------------------------------------


def _good_ld(dim: int, itemsize: int = 4) -> int:
    """oneDNN's leading dimension for RNN buffers (``get_good_ld``): a multiple of 64 bytes' worth of elements, plus
    one such block more when it is a multiple of 256 (to avoid 4K aliasing)."""
    align = 64 // itemsize
    ld = -(-dim // align) * align
    return ld + align if ld % 256 == 0 else ld


def _page(nbytes: int) -> int:
    return -(-nbytes // _PAGE) * _PAGE


def lstm_workspace_bytes(steps: int, batch: int, input_size: int, hidden: int, itemsize: int = 4) -> int:
    """Bytes of the uint8 workspace ``aten::mkldnn_rnn_layer`` returns for one LSTM layer and direction in training
    (oneDNN's forward-training workspace; every part starts on a 4096-byte page). With T steps, N batch, I input,
    H hidden, m = max(I, H), b the element size of the layer's dtype (4 for float32, 2 for bfloat16), ld_b(x) =
    :func:`_good_ld` for elements of b bytes:

    gates T*N*ld_b(4H)*b, hidden states T*N*ld_b(H)*b, states 2(T+1)*N*ld_b(m)*b, cell states 2(T+1)*N*H*b, and the
    diff states of layer and iteration 2(T+1)*N*ld_4(m)*4 each and of the cell 2(T+1)*N*H*4, always float32 (2: the
    layer and the one after it). Fitted exactly to ``workspace.numel()`` of the real op at 34 float32 shapes and 14
    bfloat16 shapes (plain, batch_first, bidirectional 2-layer) on torch 2.14.1.
    """
    t, n, h, m, b = steps, batch, hidden, max(input_size, hidden), itemsize
    parts = (
        t * n * _good_ld(4 * h, b) * b, t * n * _good_ld(h, b) * b,
        2 * (t + 1) * n * _good_ld(m, b) * b, 2 * (t + 1) * n * h * b,
        2 * (t + 1) * n * _good_ld(m) * 4, 2 * (t + 1) * n * _good_ld(m) * 4, 2 * (t + 1) * n * h * 4,
    )
    return sum(_page(p) for p in parts)


_RNN_LAYER_ARGS = ("input", "weight0", "weight1", "weight2", "weight3", "hx_", "cx_", "reverse", "batch_sizes",
                   "mode", "hidden_size", "num_layers", "has_biases", "bidirectional", "batch_first", "train")


def _rnn_layer_outputs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> dict[int, int]:
    bound = dict(zip(_RNN_LAYER_ARGS, args))
    bound.update(kwargs)
    x = bound.get("input")
    if not (isinstance(x, torch.Tensor) and x.dim() == 3 and x.dtype in (torch.float32, torch.bfloat16)
            and bound.get("train") and not bound.get("batch_sizes") and isinstance(out, (tuple, list))
            and len(out) == 4):
        return {}
    # the input reaches the op time-major whatever batch_first says (torch transposes it before the call)
    return {3: lstm_workspace_bytes(x.size(0), x.size(1), x.size(2), int(bound["hidden_size"]), x.element_size())}


def _reduced_loss(reduction_at: int, tensors: tuple[str, ...]) -> Callable[..., dict[int, int]]:
    """A loss whose CPU kernel computes the element-wise loss and reduces it into the first element of that same
    storage: the scalar a "mean" or "sum" returns keeps the whole element-wise storage (broadcast shape x element
    size) alive for as long as the loss lives, through backward. Fake and meta kernels return one element. Checked
    at 342 calls (float32, bfloat16, float64; broadcast targets; weights)."""
    names = ("self", *tensors)

    def fn(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> dict[int, int]:
        bound = dict(zip(names, args))
        bound.update({k: v for k, v in kwargs.items() if k in names})
        reduction = args[reduction_at] if len(args) > reduction_at else kwargs.get("reduction", 1)
        if not (isinstance(bound.get("self"), torch.Tensor) and isinstance(out, torch.Tensor) and int(reduction)):
            return {}
        shape = torch.broadcast_shapes(*(t.shape for t in map(bound.get, names) if isinstance(t, torch.Tensor)))
        numel = math.prod(int(d) for d in shape)
        return {0: numel * out.element_size()} if numel > 1 else {}

    return fn


FIXED_OUTPUTS: dict[str, Callable[[tuple[Any, ...], dict[str, Any], Any], dict[int, int]]] = {
    "aten::mkldnn_rnn_layer": _rnn_layer_outputs,
    "aten::mse_loss": _reduced_loss(2, ("target",)),  # (self, target, reduction)
    "aten::smooth_l1_loss": _reduced_loss(2, ("target",)),  # (self, target, reduction, beta)
    "aten::soft_margin_loss": _reduced_loss(2, ("target",)),  # (self, target, reduction)
    "aten::binary_cross_entropy": _reduced_loss(3, ("target", "weight")),  # (self, target, weight, reduction)
}


# the same for CUDA kernels (filled by collect/workspace_cuda.py): outputs the meta kernel places or sizes wrongly
FIXED_CUDA_OUTPUTS: dict[str, Callable[[tuple[Any, ...], dict[str, Any], Any], dict[int, int]]] = {}


def true_output_bytes(key: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                      target: str | None) -> dict[int, int]:
    """{output index: device bytes the real kernel's output has} for outputs a meta/fake kernel sizes wrongly (0: the
    real output is a host tensor); {} for every other op. ``FIXED_OUTPUTS`` for "cpu", ``FIXED_CUDA_OUTPUTS`` for
    "cuda"."""
    table = FIXED_OUTPUTS if target == "cpu" else FIXED_CUDA_OUTPUTS if target == "cuda" else {}
    fn = table.get(key)
    return {} if fn is None else fn(args, kwargs, out)
