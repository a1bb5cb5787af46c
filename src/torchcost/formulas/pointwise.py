"""Element-wise arithmetic, activations and reductions.

The unit: one FLOP for each elementary operation on one element: + - * /, a comparison, min/max, and one evaluation
of an elementary function (exp, log, sqrt, rsqrt, tanh, erf, sin, cos, pow). Composite activations cost the sum of
their elementary steps (sigmoid = 1/(1+exp(-x)) = 4; GELU with erf = 0.5*x*(1+erf(x/sqrt(2))) = 5). Element-wise ops
are charged per *output* element. Ops whose output is not floating point (integer index arithmetic, boolean masks)
are free: they are not floating-point operations.

Reductions over n elements into one: sum, amax, amin, max, min, prod, argmax, argmin: n - 1 per output; mean: n
(n - 1 additions and one division); var/std: 4 per input element (mean: 1, deviation, square, accumulate: 3) plus
one per output for std's sqrt; softmax and log_softmax: 5 per element (max, subtract, exp, sum, divide / subtract
of the log-sum).
"""

from __future__ import annotations

import torch

from torchcost.formulas._util import first_tensor, is_floating
from torchcost.formulas.registry import ZERO, Cost, OpCall, register_many

# FLOPs per output element, by op name without namespace. Both ``name`` and the in-place ``name_`` are registered.
PER_ELEMENT: dict[str, int] = {
    # arithmetic
    "add": 1, "sub": 1, "rsub": 1, "mul": 1, "div": 1, "neg": 1, "reciprocal": 1, "abs": 1, "sign": 1, "sgn": 1,
    "remainder": 1, "fmod": 1, "floor_divide": 1, "floor": 1, "ceil": 1, "round": 1, "trunc": 1, "frac": 1,
    "square": 1, "maximum": 1, "minimum": 1, "fmax": 1, "fmin": 1, "clamp_min": 1, "clamp_max": 1,
    "copysign": 1, "heaviside": 1, "xlogy": 2,
    "addcmul": 3, "addcdiv": 3, "lerp": 3,  # x + v * (a op b) ; x + w * (y - x)
    # comparisons on floating inputs (the output is bool, so these are charged by input dtype, see _pointwise)
    "eq": 1, "ne": 1, "lt": 1, "le": 1, "gt": 1, "ge": 1, "isnan": 1, "isinf": 1, "isfinite": 1,
    # elementary functions
    "exp": 1, "exp2": 1, "expm1": 1, "log": 1, "log2": 1, "log10": 1, "log1p": 1, "sqrt": 1, "rsqrt": 1,
    "pow": 1, "float_power": 1, "tanh": 1, "erf": 1, "erfc": 1, "erfinv": 1, "sin": 1, "cos": 1, "tan": 1,
    "asin": 1, "acos": 1, "atan": 1, "atan2": 1, "sinh": 1, "cosh": 1, "asinh": 1, "acosh": 1, "atanh": 1,
    "lgamma": 1, "digamma": 1,
    # activations
    "relu": 1, "threshold": 1, "clamp": 2, "hardtanh": 2, "relu6": 2,
    "leaky_relu": 2,  # compare, multiply
    "rrelu_with_noise": 2, "_prelu_kernel": 2, "prelu": 2,
    "sigmoid": 4,  # neg, exp, add, divide
    "logit": 3,
    "silu": 5,  # x * sigmoid(x)
    "hardsigmoid": 4,  # add 3, clamp to [0, 6] (2), divide by 6
    "hardswish": 5,  # x * hardsigmoid(x)
    "elu": 4,  # compare, exp, subtract 1, multiply by alpha
    "celu": 5, "selu": 5,  # elu plus a scale (celu: a divide inside)
    "gelu": 5,  # erf form; the tanh form is priced in _gelu
    "softplus": 4,  # multiply by beta, exp, log1p, divide by beta
    "mish": 6,  # x * tanh(softplus(x)): softplus 4, tanh, multiply
    "log_sigmoid_forward": 5, "hardshrink": 2, "softshrink": 3, "tanhshrink": 2,
    "nan_to_num": 1,
    "native_dropout": 2,  # multiply by the mask, then by 1/(1-p); drawing the mask is free
    "_softmax": 5, "_log_softmax": 5, "_safe_softmax": 5, "softmax": 5, "log_softmax": 5,
}

# Comparisons produce bool outputs; whether they are FLOPs depends on their inputs.
_COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge", "isnan", "isinf", "isfinite", "maximum", "minimum"}


def _charged_dtype_tensor(call: OpCall, name: str) -> bool:
    if name in _COMPARISONS:
        return any(is_floating(t) for t in call.inputs)
    out = first_tensor(call.out)
    return is_floating(out)


def _pointwise(per_element: int, name: str) -> object:
    def cost(call: OpCall) -> Cost:
        if not _charged_dtype_tensor(call, name):
            return ZERO
        return Cost(other_flops=per_element * first_tensor(call.out).numel())

    cost.__name__ = f"pointwise_{name}"
    return cost


def _gelu(call: OpCall) -> Cost:
    out = first_tensor(call.out)
    if not is_floating(out):
        return ZERO
    # tanh form: 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))): x^3 (2), *c (1), +x (1), *k (1), tanh, +1, *x, *0.5
    per = 9 if call.arg("approximate", "none") == "tanh" else PER_ELEMENT["gelu"]
    return Cost(other_flops=per * out.numel())


def _reduced(call: OpCall) -> tuple[int, int]:
    """(input elements, output elements) of a reduction."""
    x = first_tensor(call.args[0])
    out = first_tensor(call.out)
    return x.numel(), out.numel()


def _reduce_minus_one(call: OpCall) -> Cost:
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    if len(call.args) > 1 and isinstance(call.args[1], torch.Tensor):  # max(a, b), min(a, b): element-wise
        return Cost(other_flops=first_tensor(call.out).numel())
    n_in, n_out = _reduced(call)
    return Cost(other_flops=max(n_in - n_out, 0))


def _mean(call: OpCall) -> Cost:
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    n_in, _ = _reduced(call)
    return Cost(other_flops=n_in)


def _var(call: OpCall, extra_per_output: int) -> Cost:
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    n_in, n_out = _reduced(call)
    return Cost(other_flops=4 * n_in + extra_per_output * n_out)


def _norm(call: OpCall) -> Cost:
    # vector p-norm over n elements: |x|^p (2 per element: abs/square and power), sum (n-1), root (1 per output)
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    n_in, n_out = _reduced(call)
    return Cost(other_flops=2 * n_in + (n_in - n_out) + n_out)


def _cumulative(call: OpCall) -> Cost:
    out = first_tensor(call.out)
    return Cost(other_flops=out.numel()) if is_floating(out) else ZERO


def _logsumexp(call: OpCall) -> Cost:
    # max (n-1), subtract (n), exp (n), sum (n-1), log (1), add back the max (1) per output
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    n_in, _n_out = _reduced(call)
    return Cost(other_flops=4 * n_in)


for _name, _per in PER_ELEMENT.items():
    if _name == "gelu":
        continue
    register_many([f"aten::{_name}", f"aten::{_name}_"], _pointwise(_per, _name))  # type: ignore[arg-type]
register_many(["aten::gelu", "aten::gelu_"], _gelu)
register_many(
    [f"aten::{n}" for n in ("sum", "amax", "amin", "max", "min", "prod", "argmax", "argmin", "nansum", "aminmax")],
    _reduce_minus_one,
)
register_many(["aten::mean", "aten::nanmean"], _mean)
register_many(["aten::var", "aten::var_mean"], lambda call: _var(call, 0))
register_many(["aten::std", "aten::std_mean"], lambda call: _var(call, 1))
register_many(["aten::linalg_vector_norm", "aten::norm"], _norm)
register_many(["aten::cumsum", "aten::cumsum_", "aten::cumprod", "aten::cumprod_"], _cumulative)
register_many(["aten::logsumexp"], _logsumexp)
