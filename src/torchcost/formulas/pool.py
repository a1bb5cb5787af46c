"""Pooling, 1-d to 3-d: max, average, adaptive max and adaptive average.

A window of k elements costs k - 1 comparisons for max pooling and k FLOPs for average pooling (k - 1 additions and
one division). Fixed-size pooling charges the full kernel volume k = prod(kernel_size) for every output element,
also where the window overhangs a padded border or, with ceil_mode, the input's end (the kernel runs over it);
dilation spreads the window without changing k. Adaptive pooling charges each output element its own window,
start = floor(i * L / O), end = ceil((i + 1) * L / O) along each dimension, summed exactly (7 -> 3: windows [0, 3),
[2, 5), [4, 7), 3 + 3 + 3 = 9 elements); a global average pool (output 1) lowers to ``mean``, which charges the same
k per output. Fractional max pooling charges k - 1 per output element like max pooling.
Why not the textbook's 1 per output element: a 2x2 max pool does 3 comparisons per output, and a global average pool
over 7x7 does 49 operations per channel; counting 1 would hide that work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torchcost.formulas._util import first_tensor
from torchcost.formulas.registry import Cost, Formula, OpCall, register_many


def per_dim(value: int | Sequence[int], dims: int) -> list[int]:
    """A kernel_size (stride, padding) argument as one int per dimension."""
    if isinstance(value, int):
        return [value] * dims
    values = [int(v) for v in value]
    return values * dims if len(values) == 1 else values


def _pool(dims: int, is_max: bool) -> Formula:
    def cost(call: OpCall) -> Cost:
        out = first_tensor(call.out)
        window = math.prod(per_dim(call.arg("kernel_size"), dims))
        per_output = window - 1 if is_max else window
        return Cost(other_flops=per_output * out.numel())

    return cost


def window_sum(length: int, out: int) -> int:
    """Sum over output positions of the adaptive window size along one dimension."""
    return sum(-(-((i + 1) * length) // out) - (i * length) // out for i in range(out))


def _adaptive(dims: int, is_max: bool) -> Formula:
    def cost(call: OpCall) -> Cost:
        x = first_tensor(call.args[0])
        out = first_tensor(call.out)
        in_sizes = [int(s) for s in x.shape[-dims:]]
        out_sizes = [int(s) for s in out.shape[-dims:]]
        planes = out.numel() // math.prod(out_sizes) if math.prod(out_sizes) else 0
        window_total = math.prod(window_sum(i, o) for i, o in zip(in_sizes, out_sizes))
        per_plane = window_total - math.prod(out_sizes) if is_max else window_total
        return Cost(other_flops=planes * per_plane)

    return cost


for _d in (1, 2, 3):
    register_many([f"aten::max_pool{_d}d", f"aten::max_pool{_d}d_with_indices", f"aten::mkldnn_max_pool{_d}d",
                   f"aten::quantized_max_pool{_d}d"], _pool(_d, True))
    register_many([f"aten::avg_pool{_d}d"], _pool(_d, False))
    register_many([f"aten::fractional_max_pool{_d}d"], _pool(_d, True))
    register_many([f"aten::adaptive_max_pool{_d}d"], _adaptive(_d, True))
    register_many([f"aten::adaptive_avg_pool{_d}d", f"aten::_adaptive_avg_pool{_d}d"],
                  _adaptive(_d, False))
