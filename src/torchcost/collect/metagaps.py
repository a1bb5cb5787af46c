"""Calls a twin's meta kernels refuse although the device the twin stands for runs them.

A fake or meta twin's ops run torch's meta kernels. A meta kernel written after one device's fast path can refuse
what the devices' kernels run: in torch 2.14 the meta kernel of ``aten::_grouped_mm``, the experts' product of
transformers' mixture-of-experts layers, follows CUDA's grouped-GEMM fast path and takes bfloat16 only (float16 with
cuBLASLt), while the kernels themselves take float32, float16 and bfloat16. The CPU kernel and the CUDA kernel share
their checks (``_grouped_mm_validate_inputs``: "Expected mat_a to be Float32, BFloat16 or Float16 matrix") and
their output (``create_grouped_gemm_output_tensor``); where CUDA's fast path does not apply (a dtype other than
bfloat16, or a GPU before sm90) CUDA runs ``_grouped_mm_fallback``, one matrix product per group, into that output,
as the CPU kernel does (both strings are in torch 2.14.1's libtorch_cpu.so and libtorch_cuda.so). A float32
mixture-of-experts model then failed its training step, an analysis on meta (whose target is CUDA by default) and a
serving analysis, where the eval run on the model itself went through.

:func:`answer` gives such a call's output where the run's tensors stand for the CPU or CUDA: the kernels' checks,
raised with their messages, then an empty tensor of the output's metadata by the rule the kernels share (the
sizes, and strides whose rows are padded to 16 bytes). It is asked only after the meta kernel refused the call
(collect/fakeops.py's ``FakeShortcuts.run``, for the collectors' dispatch mode and for ``TwinAnswers``' plain runs
alike), so every call a meta kernel takes is answered as before; anywhere else (another device, float64, another
op) it gives None and the meta kernel's error stands. tests/test_metagaps.py compares its answers with the CPU
kernel's outputs.

The second: ``aten::masked_fill`` with a 0-d tensor ``value`` on the CPU and ``self`` on meta. The CPU kernel takes a
CPU value (the same device) and CUDA's takes a CPU scalar too (torch's own decomposition allows one for CUDA, XPU,
MPS and HPU), but the meta kernel, the same decomposition, compares the devices and refuses "meta" against "cpu".
Models that build their fill value with ``torch.tensor(torch.finfo(dtype).min)``, on the default device, then ran
on the cpu and failed on meta (SEW-D's and DeBERTa-like ``XSoftmax``). Such a call is run again with the value as a
0-d meta tensor of its dtype: the output's metadata is the meta kernel's, and the value's number is never read.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["answer"]

_GROUPED_MM = torch.ops.aten._grouped_mm.default
_MASKED_FILL = (torch.ops.aten.masked_fill.Tensor, torch.ops.aten.masked_fill_.Tensor)
_NAMES = ("mat_a", "mat_b", "offs", "bias", "out_dtype")
# what the CPU kernel and CUDA's fallback take beside bfloat16, which the meta kernel takes
_FALLBACK_DTYPES = (torch.float32, torch.float16)
_DEVICES = ("cpu", "cuda")  # the devices whose kernels are known to share the checks and the output rule


def answer(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], target: str | None) -> Any:
    """The output of a call the meta kernel refused, as the ``target`` device's kernel makes it; None where the
    target's kernel refuses it too, or the op is not one of those above."""
    if target not in _DEVICES:
        return None
    if func in _MASKED_FILL:
        return _masked_fill(func, args, kwargs)
    if func is not _GROUPED_MM:
        return None
    bound = dict(zip(_NAMES, args))
    bound.update(kwargs)
    a, b, offs = bound.get("mat_a"), bound.get("mat_b"), bound.get("offs")
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.dtype not in _FALLBACK_DTYPES:
        return None
    size, stride = _grouped_mm_output(a, b, offs, bound.get("bias"), bound.get("out_dtype"))
    return torch.empty_strided(size, stride, dtype=a.dtype, device=a.device)


def _masked_fill(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``masked_fill`` of a meta ``self`` with a 0-d CPU ``value``, as the CPU's and CUDA's kernels take it; None for
    any other call (its error stands)."""
    bound = dict(zip(("self", "mask", "value"), args))
    bound.update(kwargs)
    a, value = bound.get("self"), bound.get("value")
    if not (isinstance(a, torch.Tensor) and isinstance(value, torch.Tensor) and a.device.type == "meta"
            and value.device.type == "cpu" and value.dim() == 0):
        return None
    bound["value"] = torch.empty((), dtype=value.dtype, device="meta")
    return func(**bound)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(message)


def _grouped_mm_output(a: torch.Tensor, b: torch.Tensor, offs: Any, bias: Any, out_dtype: Any
                       ) -> tuple[list[int], list[int]]:
    """The kernels' checks of a float32 or float16 ``_grouped_mm`` (the CPU kernel's messages, which CUDA's
    shares), and its output's sizes and strides."""
    _check(b.dtype == a.dtype, f"Expected mat_b dtype to match mat_a dtype, got mat_a.dtype={a.dtype} and "
                               f"mat_b.dtype={b.dtype}.")
    _check(a.dim() in (2, 3), "mat_a has to be 2 or 3d")
    _check(b.dim() in (2, 3), "mat_b has to be 2 or 3d")
    a_2d, b_2d = a.dim() == 2, b.dim() == 2
    if not a_2d or not b_2d:
        _check(a.size(-1) == b.size(-2), "contraction dimension of mat_a and mat_b must match")
    _check((offs is not None) == (a_2d or b_2d),
           "Have to provide offsets if there is a 2d matrix, or no offset if both matrices are 3d")
    if offs is not None:
        _check(isinstance(offs, torch.Tensor) and offs.dim() == 1, "offs has to be 1D")
        _check(offs.dtype == torch.int32, "Offsets have to be int32")
    _check(bias is None, "Bias not supported yet")
    _check(out_dtype is None or out_dtype == a.dtype, "Grouped gemm output dtype must match `mat_a` dtype")
    for t in (a, b):
        _check(_aligned(t), "strides should be multiple of 16 bytes")
    if a_2d:
        if b_2d:
            size = [offs.size(0), a.size(0), b.size(1)]
        else:
            _check(offs.size(0) == b.size(0), "matrix batch sizes have to match")
            size = [a.size(0), b.size(-1)]
    elif b_2d:
        _check(offs.size(0) == a.size(0), "matrix batch sizes have to match")
        size = [a.size(1), b.size(1)]
    else:
        _check(a.size(0) == b.size(0), "batched dimension has to match")
        size = [a.size(0), a.size(1), b.size(-1)]
    alignment = 16 // a.element_size()
    padded = -(-size[-1] // alignment) * alignment
    stride = [padded, 1] if a_2d != b_2d else [size[1] * padded, padded, 1]
    return size, stride


def _aligned(t: torch.Tensor) -> bool:
    """One of the last two dimensions has stride 1 and the other a stride of whole 16-byte rows (the kernels'
    ``check_valid_strides``)."""
    alignment = 16 // t.element_size()
    rows, cols = t.stride()[-2:]
    if rows == 1 and cols >= max(1, t.shape[-2]):
        return cols % alignment == 0
    if cols == 1 and rows >= max(1, t.shape[-1]):
        return rows % alignment == 0
    return False
