"""The optimizer's foreach ops (``torch._foreach_*``): the element-wise op of :mod:`pointwise` applied to every tensor
of a list, so one FLOP per element per elementary step, summed over the list's tensors (the first list argument).
``_foreach_add``/``_sub`` with alpha != 1: 2; ``_foreach_addcmul``/``_addcdiv``: 3, 2 with a scalar value of 1;
``_foreach_lerp``: 3; ``_foreach_norm`` (gradient clipping): 2 per element (square, accumulate), as ``norm`` ord 2.
The single-tensor optimizer path (torch's default on CPU and meta) runs the plain ops, priced in :mod:`pointwise`.
The collector splits each foreach call per tensor, so its FLOPs go to each parameter's module.
"""

from __future__ import annotations

from torchcost.formulas._util import is_floating
from torchcost.formulas.pointwise import PER_ELEMENT
from torchcost.formulas.registry import Cost, Formula, OpCall, register_many

_OPS = ("add", "sub", "mul", "div", "addcmul", "addcdiv", "lerp", "sqrt", "rsqrt", "neg", "reciprocal", "abs",
        "exp", "log", "sign", "pow", "maximum", "minimum", "clamp_min", "clamp_max", "sigmoid", "tanh", "square")


def _foreach(name: str) -> Formula:
    base = PER_ELEMENT[name]

    def cost(call: OpCall) -> Cost:
        per = base
        if name in ("add", "sub") and call.arg("alpha", 1) != 1:
            per += 1
        if name in ("addcmul", "addcdiv") and call.arg("value", None) == 1:
            per -= 1
        n = sum(t.numel() for t in call.args[0] if is_floating(t))
        return Cost(other_flops=per * n)

    cost.__name__ = f"foreach_{name}"
    return cost


def _foreach_norm(call: OpCall) -> Cost:
    return Cost(other_flops=2 * sum(t.numel() for t in call.args[0] if is_floating(t)))


for _name in _OPS:
    register_many([f"aten::_foreach_{_name}", f"aten::_foreach_{_name}_"], _foreach(_name))
register_many(["aten::_foreach_norm"], _foreach_norm)
