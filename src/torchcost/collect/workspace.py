"""Memory kernels hold that the twin's tensors do not show: sized from shapes, as data, like the FLOP formulas.

Two kinds, both consulted by the :class:`~torchcost.collect.memory.MemoryTracker`:

* **Kernel-internal transient memory** (``register_workspace``): bytes an op allocates and frees inside itself
  (blocked copies, packed weights, scratch). ``fn(call, target) -> bytes`` gets the op's :class:`OpCall` and the
  target device type ("cpu", "cuda"); the bytes count in the timeline at that op only and as ``workspace`` in the
  breakdown when the peak is there.
* **Outputs the fake/meta kernel sizes wrongly** (``true_output_bytes``): a tensor the op returns whose storage on a
  meta or fake tensor is smaller than the real kernel's. ``aten::mkldnn_rnn_layer`` (CPU LSTM) returns an empty
  uint8 ``workspace`` on meta, while the real one is oneDNN's RNN workspace, saved by autograd until backward.

Every entry was measured against the allocator on the machine named in docs/conventions.md, "Memory".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from torchcost.formulas.registry import OpCall, op_key

__all__ = [
    "FIXED_OUTPUTS",
    "GROUPED_CONV_ISA",
    "WORKSPACES",
    "WorkspaceFn",
    "grouped_conv_workspace",
    "lstm_workspace_bytes",
    "register_workspace",
    "true_output_bytes",
    "workspace_bytes",
]

WorkspaceFn = Callable[[OpCall, str], int]
WORKSPACES: dict[str, WorkspaceFn] = {}  # "aten::name" -> fn(call, target) -> bytes held inside the op
_PAGE = 4096


def register_workspace(op: object, fn: WorkspaceFn, *, replace: bool = False) -> WorkspaceFn:
    """Say how many bytes ``op`` allocates and frees inside itself: ``fn(call, target) -> bytes`` (0: none).

    ``op`` is an aten op or its name ("aten::mkldnn_convolution"); every overload shares the entry. The bytes are
    counted while the op runs (in the timeline at that op, and as ``workspace`` at the peak), never after it.
    """
    key = op_key(op)
    if key in WORKSPACES and not replace:
        raise ValueError(f"a workspace entry for {key} exists; pass replace=True to change it")
    WORKSPACES[key] = fn
    return fn


def workspace_bytes(key: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                    target: str) -> int:
    """The registered transient bytes of one call (0 when the op has no entry)."""
    fn = WORKSPACES.get(key)
    if fn is None:
        return 0
    return max(0, int(fn(OpCall(key, args, kwargs, out, getattr(func, "_schema", None)), target)))


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


def grouped_conv_workspace(call: OpCall, target: str) -> int:
    """Bytes oneDNN holds inside an f32 grouped or depthwise 2-D convolution on CPU (AVX512, no AMX): it reorders the
    NCHW input, the weight and the output into channel-blocked copies, all alive at once, then writes the plain
    output while the blocked one is alive. With plain output bytes O, the blocked input I', weight W' and output O':
    depthwise (groups = C_in = C_out, kernel not 1x1) pads the channels to a multiple of 16 in all three; grouped
    (groups > 1, C_in/groups and C_out/groups multiples of 4, kernel not 1x1) keeps the plain sizes. The op holds
    max(I' + W' + O', O' + O) - O beyond its output. Other shapes (2 or 3 channels per group, a channel multiplier,
    1x1 depthwise, channels-last) take other oneDNN kernels and get 0."""
    x, w, out = call.arg("input"), call.arg("weight"), call.out
    groups = int(call.arg("groups") or 1)
    if not (target == "cpu" and groups > 1 and isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor)
            and isinstance(out, torch.Tensor) and x.dim() == 4 and w.dim() == 4 and x.dtype == torch.float32
            and w.dtype == torch.float32 and not call.arg("transposed") and x.is_contiguous()
            and w.is_contiguous() and tuple(w.shape[2:]) != (1, 1) and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and _measured_isa(GROUPED_CONV_ISA)):
        return 0
    c_in, c_out = x.size(1), w.size(0)
    n, spatial_in, spatial_out = x.size(0), x.size(2) * x.size(3), out.size(2) * out.size(3)
    if groups == c_in == c_out:
        c_in = c_out = _pad16(c_in)
        blocked_w = c_out * w.size(2) * w.size(3) * 4
    elif (c_in // groups) % 4 == 0 and (c_out // groups) % 4 == 0:
        blocked_w = w.numel() * 4
    else:
        return 0
    blocked_in, blocked_out, plain_out = n * c_in * spatial_in * 4, n * c_out * spatial_out * 4, out.numel() * 4
    return max(blocked_in + blocked_w + blocked_out, blocked_out + plain_out) - plain_out


register_workspace("aten::convolution", grouped_conv_workspace)


# -- outputs sized wrongly by the fake/meta kernels ----------------------------------------------------------------


def _good_ld(dim: int) -> int:
    """oneDNN's leading dimension for f32 RNN buffers: a multiple of 16 floats (64 bytes), plus 16 more when it is a
    multiple of 256 (to avoid 4K aliasing)."""
    ld = -(-dim // 16) * 16
    return ld + 16 if ld % 256 == 0 else ld


def _page(nbytes: int) -> int:
    return -(-nbytes // _PAGE) * _PAGE


def lstm_workspace_bytes(steps: int, batch: int, input_size: int, hidden: int) -> int:
    """Bytes of the uint8 workspace ``aten::mkldnn_rnn_layer`` returns for one f32 LSTM layer and direction in
    training (oneDNN's forward-training workspace; every part starts on a 4096-byte page). With T steps, N batch,
    I input, H hidden, S = good_ld(max(I, H)), 4 bytes a float:

    gates T*N*good_ld(4H), hidden states T*N*good_ld(H), states (T+1)*2*N*S, cell states (T+1)*2*N*H, and the
    diff states of layer and iteration (T+1)*2*N*S each and of the cell (T+1)*2*N*H (2: the layer and the one
    after it). Fitted exactly to ``workspace.numel()`` of the real op at 34 shapes on torch 2.14.1.
    """
    t, n, s = steps, batch, _good_ld(max(input_size, hidden))
    parts = (
        t * n * _good_ld(4 * hidden), t * n * _good_ld(hidden),
        2 * (t + 1) * n * s, 2 * (t + 1) * n * hidden,
        2 * (t + 1) * n * s, 2 * (t + 1) * n * s, 2 * (t + 1) * n * hidden,
    )
    return sum(_page(4 * p) for p in parts)


def _rnn_layer_outputs(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> dict[int, int]:
    names = ("input", "weight0", "weight1", "weight2", "weight3", "hx_", "cx_", "reverse", "batch_sizes", "mode",
             "hidden_size", "num_layers", "has_biases", "bidirectional", "batch_first", "train")
    bound = dict(zip(names, args))
    bound.update(kwargs)
    x = bound.get("input")
    if not (isinstance(x, torch.Tensor) and x.dim() == 3 and x.dtype == torch.float32 and bound.get("train")
            and not bound.get("batch_sizes") and isinstance(out, (tuple, list)) and len(out) == 4):
        return {}
    steps, batch = (x.size(1), x.size(0)) if bound.get("batch_first") else (x.size(0), x.size(1))
    return {3: lstm_workspace_bytes(steps, batch, x.size(2), int(bound["hidden_size"]))}


FIXED_OUTPUTS: dict[str, Callable[[tuple[Any, ...], dict[str, Any], Any], dict[int, int]]] = {
    "aten::mkldnn_rnn_layer": _rnn_layer_outputs,
}


def true_output_bytes(key: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any,
                      target: str | None) -> dict[int, int]:
    """{output index: bytes the real kernel's output has} for outputs a meta/fake kernel sizes wrongly; {} for
    every other op. Only CPU kernels have entries."""
    fn = FIXED_OUTPUTS.get(key)
    if fn is None or target != "cpu":
        return {}
    return fn(args, kwargs, out)
