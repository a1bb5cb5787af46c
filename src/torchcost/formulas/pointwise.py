"""Element-wise arithmetic, activations and reductions.

The unit: one FLOP for each elementary operation on one element: + - * /, a comparison, min/max, and one evaluation
of an elementary function (exp, log, sqrt, rsqrt, tanh, erf, sin, cos, pow). Composite activations cost the sum of
their elementary steps (sigmoid = 1/(1+exp(-x)) = 4; GELU with erf = 0.5*x*(1+erf(x/sqrt(2))) = 5); the table
``PER_ELEMENT`` below gives every one with its derivation. Element-wise ops are charged per *output* element (a
broadcast ``a + b`` costs the size of the result). Some depend on their scalar arguments: ``add``/``sub``/``rsub``
with ``alpha != 1`` cost 2 (a + alpha * b); ``clamp`` costs one comparison per bound given; ``addcmul``/``addcdiv``
cost 3 (x + value * (a op b)), 2 when value is 1; ``elu`` costs 4, plus 1 each for ``scale`` and ``input_scale`` other
than 1 (so SELU, which torch runs as ``elu`` with a scale, costs 5). Ops whose output is not floating point (integer
index arithmetic, boolean masks) are free: they are not floating-point operations; comparisons (bool output) are
charged when their inputs are floating.

Reductions over n elements into one: sum, amax, amin, max, min, prod, argmax, argmin, nansum: n - 1 per output
(aminmax: 2 (n - 1)); mean: n (n - 1 additions and one division); var/std: 4 per input element (mean: n; deviation,
square, accumulate: 3n - 1; divide by n - correction: 1) plus one per output for std's sqrt; vector norms by order
(see ``_norm``: ord 2 is 2n); logsumexp 4n; cumsum/cumprod/cummax/cummin: L - 1 per line of length L;
logcumsumexp L - 1 log-add-exps (7 each).
softmax and log_softmax: 5 per element (max, subtract, exp, sum, divide / subtract of the log-sum).
Gather-and-reduce ops: ``embedding_bag`` like a reduction per bag (sum/max (n - B) * D, mean n * D, plus n * D with
per_sample_weights); scatter_add / index_add / scatter_reduce one per source element; col2im (``F.fold``) one add per
input element.
"""

from __future__ import annotations

import torch

from torchcost.formulas._util import first_tensor, is_floating
from torchcost.formulas.registry import ZERO, Cost, Formula, OpCall, register_many

# FLOPs per output element, by op name without namespace. Both ``name`` and the in-place ``name_`` are registered.
PER_ELEMENT: dict[str, int] = {
    # arithmetic
    "add": 1, "sub": 1, "rsub": 1,  # 2 with alpha != 1 (a + alpha * b), see _adjusted
    "mul": 1, "div": 1, "neg": 1, "reciprocal": 1, "abs": 1, "sign": 1, "sgn": 1,
    "remainder": 1, "fmod": 1, "floor_divide": 1, "floor": 1, "ceil": 1, "round": 1, "trunc": 1, "frac": 1,
    "square": 1, "maximum": 1, "minimum": 1, "fmax": 1, "fmin": 1, "clamp_min": 1, "clamp_max": 1,
    "copysign": 1, "heaviside": 1, "xlogy": 2,
    "addcmul": 3, "addcdiv": 3,  # x + v * (a op b); 2 when value == 1, see _adjusted
    "lerp": 3,  # x + w * (y - x)
    # comparisons on floating inputs (the output is bool, so these are charged by input dtype, see _pointwise)
    "eq": 1, "ne": 1, "lt": 1, "le": 1, "gt": 1, "ge": 1, "isnan": 1, "isinf": 1, "isfinite": 1,
    # elementary functions
    "exp": 1, "exp2": 1, "expm1": 1, "log": 1, "log2": 1, "log10": 1, "log1p": 1, "sqrt": 1, "rsqrt": 1,
    "pow": 1, "float_power": 1, "tanh": 1, "erf": 1, "erfc": 1, "erfinv": 1, "sin": 1, "cos": 1, "tan": 1,
    "asin": 1, "acos": 1, "atan": 1, "atan2": 1, "sinh": 1, "cosh": 1, "asinh": 1, "acosh": 1, "atanh": 1,
    "lgamma": 1, "digamma": 1,
    # special functions, each one evaluation (as erf and lgamma are): Bessel, incomplete gamma, polygamma, the
    # scaled complementary error function, the normal distribution's inverse and log
    "i0": 1, "special_i0e": 1, "special_i1": 1, "special_i1e": 1, "special_bessel_j0": 1, "special_bessel_j1": 1,
    "special_bessel_y0": 1, "special_bessel_y1": 1, "special_modified_bessel_i0": 1,
    "special_modified_bessel_i1": 1, "special_modified_bessel_k0": 1, "special_modified_bessel_k1": 1,
    "igamma": 1, "igammac": 1, "polygamma": 1, "special_erfcx": 1, "special_ndtri": 1, "special_log_ndtr": 1,
    "special_ndtr": 1,
    "logaddexp": 7,  # max(a, b) + log1p(exp(-|a - b|)): max, subtract, abs, negate, exp, log1p, add
    "logaddexp2": 8,  # the same in base 2: exp2, and a divide by ln 2 of the log1p
    "hypot": 4,  # sqrt(a^2 + b^2): two squares, add, sqrt
    "sinc": 3,  # sin(pi x) / (pi x): multiply, sin, divide
    "special_xlog1py": 2,  # x * log1p(y)
    "special_entr": 3,  # -x * log(x): log, multiply, negate
    "angle": 1,  # atan2(imag, real) of a complex element; of a real one, a comparison with 0 (pi or 0)
    "polar": 4,  # abs * cos(angle) + i * abs * sin(angle): cos, sin, two products (llama4's rotary table)
    # activations
    "relu": 1, "threshold": 1, "hardtanh": 2, "relu6": 2,
    "clamp": 2,  # one comparison per bound given (clamp(min=0) is 1), see _adjusted
    "leaky_relu": 2,  # compare, multiply
    "rrelu_with_noise": 2, "_prelu_kernel": 2, "prelu": 2,
    "sigmoid": 4,  # neg, exp, add, divide
    "logit": 3,
    "silu": 5,  # x * sigmoid(x)
    "hardsigmoid": 4,  # add 3, clamp to [0, 6] (2), divide by 6
    "hardswish": 5,  # x * hardsigmoid(x)
    "elu": 4,  # compare, exp, subtract 1, multiply by alpha; +1 each for scale and input_scale != 1
    "celu": 5,  # compare, divide by alpha, exp, subtract 1, multiply by alpha
    "selu": 5,  # elu with a scale (torch lowers selu to elu(alpha, scale), priced there)
    "gelu": 5,  # erf form; the tanh form is priced in _gelu
    "softplus": 4,  # multiply by beta, exp, log1p, divide by beta
    "mish": 6,  # x * tanh(softplus(x)): softplus 4, tanh, multiply
    "log_sigmoid_forward": 6,  # min(x, 0) - log1p(exp(-|x|)): min, abs, neg, exp, log1p, subtract
    "hardshrink": 2, "softshrink": 3, "tanhshrink": 2,
    "glu": 5,  # a * sigmoid(b), per output element
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


def _adjusted(name: str, base: int, call: OpCall) -> int:
    """The per-element cost of one call, where it depends on the call's scalar arguments."""
    if name in ("add", "sub", "rsub"):  # a + alpha * b: the scaling is one more multiply
        return base + (1 if call.arg("alpha", 1) != 1 else 0)
    if name == "clamp":  # one comparison per bound
        return sum(1 for bound in ("min", "max") if call.arg(bound) is not None)
    if name in ("addcmul", "addcdiv"):  # x + value * (a op b): no scaling multiply when value == 1
        return base - (1 if call.arg("value", 1) == 1 else 0)
    if name == "elu":  # scale * (x > 0 ? x : alpha * (exp(input_scale * x) - 1)); selu is elu with a scale
        return base + (1 if call.arg("scale", 1) != 1 else 0) + (1 if call.arg("input_scale", 1) != 1 else 0)
    return base


def _pointwise(per_element: int, name: str) -> Formula:
    def cost(call: OpCall) -> Cost:
        if not _charged_dtype_tensor(call, name):
            return ZERO
        return Cost(other_flops=_adjusted(name, per_element, call) * first_tensor(call.out).numel())

    cost.__name__ = f"pointwise_{name}"
    return cost


def _gelu(call: OpCall) -> Cost:
    out = first_tensor(call.out)
    if not is_floating(out):
        return ZERO
    # tanh form: 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))): x^3 (2), *c (1), +x (1), *k (1), tanh, +1, *x, *0.5
    per = GELU_TANH if call.arg("approximate", "none") == "tanh" else PER_ELEMENT["gelu"]
    return Cost(other_flops=per * out.numel())


GELU_TANH = 9


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


def _aminmax(call: OpCall) -> Cost:
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    n_in, n_out = _reduced(call)
    return Cost(other_flops=2 * max(n_in - n_out, 0))  # a min and a max reduction


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
    """Vector p-norm of n elements into one: ord 2: square n, sum n - 1, sqrt 1 = 2n; ord 1: |x| n, sum n - 1;
    ord +-inf: |x| n, max/min n - 1; ord 0: compare n, sum n - 1; any other p: |x| n, pow n, sum n - 1, root 1."""
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    n_in, n_out = _reduced(call)
    ord_ = call.arg("ord", None) if call.key == "aten::linalg_vector_norm" else call.arg("p", None)
    return Cost(other_flops=norm_flops(n_in, n_out, 2.0 if ord_ is None else float(ord_)))


def norm_flops(n_in: int, n_out: int, p: float) -> int:
    """FLOPs of n_out p-norms of n_in elements in all (:func:`_norm`)."""
    if p == 2:
        return 2 * n_in  # n squares + (n - 1) adds per output, + 1 sqrt per output
    if p in (1.0, 0.0, float("inf"), float("-inf")):
        return 2 * n_in - n_out
    return 3 * n_in  # 2n + (n - 1) + 1 per output


def _renorm(call: OpCall) -> Cost:
    """renorm(self, p, dim, maxnorm): each of the size(dim) slices' p-norm (as :func:`_norm`), its factor
    maxnorm / (norm + 1e-7) where the norm is above maxnorm (compare, add, divide: 3, the larger branch), and every
    element times its slice's factor (n)."""
    x = call.args[0]
    if not is_floating(x):
        return ZERO
    n = x.numel()
    slices = int(x.shape[int(call.arg("dim"))]) if x.dim() else 1
    return Cost(other_flops=norm_flops(n, slices, float(call.arg("p"))) + 3 * slices + n)


def _cumulative(call: OpCall) -> Cost:
    """cumsum/cumprod/cummax/cummin along a dimension of length L: L - 1 operations per line."""
    out = first_tensor(call.out)
    if not is_floating(out):
        return ZERO
    x = first_tensor(call.args[0])
    if x.dim() == 0:
        return ZERO
    length = int(x.shape[int(call.arg("dim", 0))])
    lines = out.numel() // length if length else 0
    return Cost(other_flops=lines * (length - 1))


def _mvlgamma(call: OpCall) -> Cost:
    """The multivariate log-gamma of order p, sum_i lgamma(x - i / 2) + a constant: per element p subtractions, p
    lgammas, p additions (p - 1 between them and the constant)."""
    out = first_tensor(call.out)
    return Cost(other_flops=3 * int(call.arg("p")) * out.numel()) if is_floating(out) else ZERO


def _logsumexp(call: OpCall) -> Cost:
    # max (n-1), subtract (n), exp (n), sum (n-1), log (1), add back the max (1) per output = 4n
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    n_in, _n_out = _reduced(call)
    return Cost(other_flops=4 * n_in)


def _embedding_bag(call: OpCall) -> Cost:
    """n looked-up rows of width D reduced into B bags, as the reductions are priced, assuming no bag is empty
    (the offsets are data, unknown on meta): sum and max (n - B) * D, mean n * D (sum, then a divide per output);
    per_sample_weights: one more multiply per looked-up element. Looking the rows up is free."""
    weight = call.arg("weight")
    indices = call.arg("indices")
    out = first_tensor(call.out)
    if not is_floating(weight):
        return ZERO
    width = int(weight.shape[-1])
    n, bags = int(indices.numel()), int(out.shape[0])
    mode = int(call.arg("mode", 0))
    flops = n * width if mode == 1 else max(n - bags, 0) * width
    if call.arg("per_sample_weights") is not None:
        flops += n * width
    return Cost(other_flops=flops)


def _scatter_accumulate(call: OpCall) -> Cost:
    """scatter_add / index_add / scatter_reduce: one operation per source element accumulated into the output
    (index_add with alpha != 1: one more multiply each; scatter_reduce 'mean': one divide per output element)."""
    out = first_tensor(call.out)
    if not is_floating(out):
        return ZERO
    source = call.arg("src") if call.arg("src") is not None else call.arg("source")
    flops = int(first_tensor(source).numel())
    if call.arg("alpha", 1) != 1:
        flops *= 2
    if call.arg("reduce") == "mean":
        flops += out.numel()
    return Cost(other_flops=flops)


def _col2im(call: OpCall) -> Cost:
    """col2im (F.fold): every column element is added into its place in the zero-initialised output."""
    x = first_tensor(call.args[0])
    return Cost(other_flops=x.numel()) if is_floating(x) else ZERO


for _name, _per in PER_ELEMENT.items():
    if _name == "gelu":
        continue
    register_many([f"aten::{_name}", f"aten::{_name}_"], _pointwise(_per, _name))
register_many(["aten::gelu", "aten::gelu_"], _gelu)
register_many(
    [f"aten::{n}" for n in ("sum", "amax", "amin", "max", "min", "prod", "argmax", "argmin", "nansum")],
    _reduce_minus_one,
)
register_many(["aten::aminmax"], _aminmax)
register_many(["aten::mean", "aten::nanmean"], _mean)
register_many(["aten::var", "aten::var_mean"], lambda call: _var(call, 0))
register_many(["aten::std", "aten::std_mean"], lambda call: _var(call, 1))
register_many(["aten::linalg_vector_norm", "aten::norm"], _norm)
register_many(["aten::renorm", "aten::renorm_"], _renorm)
register_many(["aten::cumsum", "aten::cumsum_", "aten::cumprod", "aten::cumprod_", "aten::cummax", "aten::cummin"],
              _cumulative)
register_many(["aten::logsumexp"], _logsumexp)
register_many(["aten::logcumsumexp"], lambda call: Cost(
    other_flops=PER_ELEMENT["logaddexp"] * _cumulative(call).other_flops))
register_many(["aten::mvlgamma", "aten::mvlgamma_"], _mvlgamma)
register_many(["aten::_embedding_bag", "aten::_embedding_bag_forward_only", "aten::embedding_bag"], _embedding_bag)
register_many(["aten::scatter_add", "aten::scatter_add_", "aten::index_add", "aten::index_add_",
               "aten::scatter_reduce", "aten::scatter_reduce_"], _scatter_accumulate)
register_many(["aten::col2im"], _col2im)


def _logical(call: OpCall) -> Cost:
    """logical_and/or/xor/not: each floating operand is tested against 0 per output element (a comparison, 1); the
    logic on the bools that gives is free. On bool or integer operands: free."""
    floating = sum(1 for t in call.inputs if is_floating(t))
    return Cost(other_flops=floating * first_tensor(call.out).numel()) if floating else ZERO


register_many([f"aten::logical_{n}{s}" for n in ("and", "or", "xor", "not") for s in ("", "_")], _logical)
