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

from collections.abc import Callable
from typing import Any

import torch

from torchcost.formulas.registry import OpCall, op_key

__all__ = [
    "FIXED_OUTPUTS",
    "WORKSPACES",
    "WorkspaceFn",
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
