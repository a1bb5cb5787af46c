"""Scaled dot-product attention on meta with target "cpu": the ops a real CPU run dispatches, op for op.

A meta tensor has no kernel to choose, so collect/memory.py's MemoryMode asks the CPU's own selector (with CPU
stand-ins of the same shapes and dtypes) and runs what the CPU runs after it. The oracle here is the real CPU run
of the same call under a recording dispatch mode: same ops, same output shapes and dtypes, in the same order. Then
through whole analyses: a training step of a model with multi-query attention (one key/value head broadcast to the
query heads, as timm's MobileNetV5 and Gemma 3n's vision tower do) counts the same on the cpu and on meta (round
34: the meta run took the math path, whose backward does not compute the scores again, 0.17% fewer MACs).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import torchcost
from torchcost.collect.memory import MemoryMode


class _Ops(TorchDispatchMode):
    """Every aten op dispatched: (name, the shapes and dtypes of its tensor outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.seen.append((str(func), tuple((tuple(o.shape), o.dtype) for o in outs if isinstance(o, torch.Tensor))))
        return out


def _ops(device: str, shapes: tuple[tuple[int, ...], ...], dtype: torch.dtype, mask: tuple[Any, ...] | None,
         **kwargs: Any) -> list[tuple[str, tuple[Any, ...]]]:
    q, k, v = (torch.zeros(s, dtype=dtype, device=device) for s in shapes)
    if mask is not None:
        kwargs["attn_mask"] = torch.zeros(mask[0], dtype=mask[1], device=device)
    recorder = _Ops()
    if device == "meta":
        with MemoryMode(None, target="cpu"), recorder:
            F.scaled_dot_product_attention(q, k, v, **kwargs)
    else:
        with recorder:
            F.scaled_dot_product_attention(q, k, v, **kwargs)
    return recorder.seen


CASES = {
    "4-d": (((2, 4, 16, 8),) * 3, torch.float32, None, {}),
    "3-d": (((4, 16, 8),) * 3, torch.float32, None, {}),
    "3-d, 2-d bool mask": (((4, 16, 8),) * 3, torch.bfloat16, ((16, 16), torch.bool), {}),
    "3-d, 1-d float mask": (((4, 16, 8),) * 3, torch.float32, ((16,), torch.float32), {}),
    "broadcast key/value heads": (((2, 4, 16, 8), (2, 1, 16, 8), (2, 1, 16, 8)), torch.float32, None, {}),
    "gqa": (((2, 4, 16, 8), (2, 2, 16, 8), (2, 2, 16, 8)), torch.float32, None, {"enable_gqa": True}),
    "bool mask": (((2, 4, 16, 8),) * 3, torch.float32, ((16, 16), torch.bool), {}),
    "causal, scale": (((2, 4, 16, 8),) * 3, torch.float16, None, {"is_causal": True, "scale": 0.3}),
    "dropout (math)": (((2, 4, 16, 8),) * 3, torch.float32, None, {"dropout_p": 0.1}),
    "value head dim differs (math)": (((2, 4, 16, 8), (2, 4, 16, 8), (2, 4, 16, 4)), torch.float32, None, {}),
    "5-d (math)": (((2, 3, 4, 16, 8),) * 3, torch.float32, None, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_meta_runs_the_ops_the_cpu_runs(case: str) -> None:
    shapes, dtype, mask, kwargs = CASES[case]
    real = _ops("cpu", shapes, dtype, mask, **kwargs)
    meta = _ops("meta", shapes, dtype, mask, **kwargs)
    if "dropout" in case:  # (the random draws are made differently; the products and the softmax are the same)
        real = [op for op in real if "bernoulli" not in op[0] and "empty_like" not in op[0]]
        meta = [op for op in meta if "bernoulli" not in op[0] and "empty_like" not in op[0]]
    assert meta == real
    flash = any("flash" in name for name, _ in real)
    assert flash == ("math" not in case)


def test_the_cpu_selector_is_followed_when_flash_is_switched_off() -> None:
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        real = _ops("cpu", CASES["4-d"][0], torch.float32, None)
        meta = _ops("meta", CASES["4-d"][0], torch.float32, None)
    assert meta == real
    assert not any("flash" in name for name, _ in real)


class _MultiQuery(nn.Module):
    """Multi-query attention over a sequence: 4 query heads of width 8, one key/value head broadcast to them."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(32, 32)
        self.kv = nn.Linear(32, 16)
        self.out = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, 4, 8).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 1, 16).transpose(1, 2).split(8, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, 32))


def test_a_training_step_with_broadcast_heads_counts_the_same_on_meta() -> None:
    torch.manual_seed(0)
    model = _MultiQuery()
    cpu = torchcost.analyze(model, torch.zeros(2, 16, 32), mode="train")
    meta = torchcost.analyze(_MultiQuery().to("meta"), torch.zeros(2, 16, 32, device="meta"), mode="train",
                             target="cpu")
    backward = {p.name: p for p in cpu.phases}["backward"]
    ops = {o.op: o for o in backward.ops}
    # the CPU flash kernel's backward computes the scores again: R S E (Q K^T) + 2 R S E_v (dV, dP) + 2 R S E
    # (dQ, dK) with R = 2*4*16 query rows, S = 16 keys, E = E_v = 8: 128*16*8 * 5 = 81,920
    assert ops["aten::_scaled_dot_product_flash_attention_for_cpu_backward"].macs == 81_920
    assert (meta.step_macs, meta.step_flops) == (cpu.step_macs, cpu.step_flops)
    assert [(p.name, p.macs, p.flops) for p in meta.phases] == [(p.name, p.macs, p.flops) for p in cpu.phases]
