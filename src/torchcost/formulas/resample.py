"""Interpolation: linear, bilinear, trilinear and bicubic upsampling (``F.interpolate`` / ``nn.Upsample``).

Per *output* element, counting what the kernels compute: an interpolation along one dimension between 2 taps is
w0 * a + w1 * b = 3 FLOPs, and a d-linear interpolation nests d of them,
cost(d) = 2 * cost(d - 1) + 3, i.e. 3 * (2^d - 1):

=========================  ====  ==================================================================
mode                       cost  derivation
=========================  ====  ==================================================================
linear (1-d)               3     2 multiplies + 1 add
bilinear (2-d)             9     two 1-d interpolations (3 each) along W, then one along H (3)
trilinear (3-d)            21    two bilinear (9 each) along H, W, then one along D (3)
bicubic (2-d)              35    a 4-tap cubic is 4 multiplies + 3 adds = 7; 4 along W, 1 along H
=========================  ====  ==================================================================

``align_corners`` and the scale factors change the source coordinates, not the count. Source indices and weights are
computed once per output row and column (not per element) and are not counted. Nearest-neighbour modes only copy
(free); ``mode="area"`` lowers to adaptive average pooling (see :mod:`pool`). The anti-aliased kernels
(``antialias=True``) have data-size-dependent tap counts and no formula: they are reported as uncounted.
"""

from __future__ import annotations

from torchcost.formulas._util import first_tensor, is_floating
from torchcost.formulas.registry import ZERO, Cost, Formula, OpCall, register_many

LINEAR_1D = 3
CUBIC_TAPS = 7  # 4 multiplies + 3 adds


def d_linear(dims: int) -> int:
    corners: int = 2**dims  # typeshed types int ** int as Any (a negative exponent gives a float)
    return 3 * (corners - 1)


PER_OUTPUT = {
    "upsample_linear1d": d_linear(1),
    "upsample_bilinear2d": d_linear(2),
    "upsample_trilinear3d": d_linear(3),
    "upsample_bicubic2d": 5 * CUBIC_TAPS,
}


def _per_output(per: int) -> Formula:
    def cost(call: OpCall) -> Cost:
        out = first_tensor(call.out)
        return Cost(other_flops=per * out.numel()) if is_floating(out) else ZERO

    return cost


for _name, _per in PER_OUTPUT.items():
    register_many([f"aten::{_name}"], _per_output(_per))
