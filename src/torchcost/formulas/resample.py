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

**Grid sampling** (``F.grid_sample``: ``grid_sampler_2d``/``3d`` and their backward; RAFT's correlation lookup,
spatial transformers, deformable attention) reads a source position per output *location* (N x the output's spatial
size), so the coordinate work is counted per location and the taps per output element (x C), as the kernels compute
them:

* per location, per coordinate (2 or 3): unnormalising it, 3 FLOPs with ``align_corners`` ((g + 1) / 2 * (size -
  1)) else 4 (((g + 1) * size - 1) / 2); padding ``"border"`` clips it, 2 comparisons; ``"reflection"`` reflects
  (subtract the low end, abs, fmod, divide, floor, and add back: 7) then clips (2): 9; ``"zeros"`` nothing (taps
  outside read 0);
* bilinear, per location: the corners and weights, 2-d: 2 floors, 2 corner offsets (+1), 4 weights each a product
  of 2 differences (8 + 4): 16; 3-d: 3 + 3 + 8 weights of 3 differences and 2 products (40): 46. Per element: the
  weighted sum of the corners, 4 products + 3 sums = 7 (2-d), 8 + 7 = 15 (3-d);
* nearest, per location: rounding each coordinate (1); per element nothing (a copy);
* bicubic (2-d only), per location: floor and fraction per axis (2 each) and the 4 cubic coefficients per axis
  (torch's ``get_cubic_upsample_coefficients`` with A = -0.75: 7 + 5 + 1 + 5 + 7 = 25), 54; the padding is applied
  to each of the 16 taps' two coordinates (16 x 2 x the padding's count above); per element 4 cubics along W and 1
  along H, 5 x 7 = 35;
* the backward (bilinear and nearest): the coordinate and weight work again per location, plus the 2 products of
  the grid's gradient by the unnormalisation's factor; per element, where the input's gradient is asked, each
  corner's weight times the output's gradient added into it (2 a corner: 8 in 2-d, 16 in 3-d; nearest 1), and where
  the grid's is asked, for each corner and coordinate the corner's value times the other coordinates' differences
  times the output's gradient, accumulated (2-d: 3 a coordinate, 6 a corner, 24; 3-d: 4 a coordinate (two
  differences), 12 a corner, 96). Nearest has no grid gradient. The bicubic backward has no formula (uncounted).
"""

from __future__ import annotations

from typing import Any

from torchcost.errors import FormulaError
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


_UNNORMALISE = {True: 3, False: 4}  # per coordinate, by align_corners
_PADDING = (0, 2, 9)  # per coordinate, by padding_mode: zeros, border (clip), reflection (reflect 7, clip 2)
_BILINEAR, _NEAREST, _BICUBIC = 0, 1, 2
# per location (corners and weights) and per output element (the taps), bilinear by dimensions
_BILINEAR_COST = {2: (16, 7), 3: (46, 15)}
_GRID_INPUT_GRAD = {2: 8, 3: 16}  # per element: each corner's weight times the output's gradient, added
_GRID_GRAD = {2: 24, 3: 96}  # per element: each corner and coordinate's term of the grid's gradient


def _grid_costs(call: OpCall, grid: Any, elements: int) -> tuple[int, int, int, int]:
    """(locations, coordinates per location, the per-location FLOPs of the coordinates and weights, the per-element
    FLOPs of the taps) of a grid sampling call (:func:`grid_sample_cost`)."""
    dims = int(grid.shape[-1])
    locations = grid.numel() // dims
    mode, padding = int(call.arg("interpolation_mode")), int(call.arg("padding_mode"))
    per_coordinate = _UNNORMALISE[bool(call.arg("align_corners"))]
    if mode == _BILINEAR:
        where, taps = _BILINEAR_COST[dims]
        where += dims * _PADDING[padding]
    elif mode == _NEAREST:
        where, taps = dims * (1 + _PADDING[padding]), 0
    elif mode == _BICUBIC and dims == 2:
        where, taps = 54 + 16 * 2 * _PADDING[padding], 5 * CUBIC_TAPS
    else:
        raise FormulaError(f"grid sampling with interpolation_mode={mode} in {dims}-d has no formula")
    return locations, dims, dims * per_coordinate + where, taps


def grid_sample_cost(call: OpCall) -> Cost:
    """grid_sampler_2d/3d(input, grid, ...): see the module's docstring."""
    out = first_tensor(call.out)
    if not is_floating(out):
        return ZERO
    locations, _, where, taps = _grid_costs(call, call.args[1], out.numel())
    return Cost(other_flops=locations * where + out.numel() * taps)


def grid_sample_backward_cost(call: OpCall) -> Cost:
    """grid_sampler_2d/3d_backward(grad_output, input, grid, ..., output_mask): see the module's docstring."""
    grad_output, grid = call.args[0], call.args[2]
    if not is_floating(grad_output):
        return ZERO
    if int(call.arg("interpolation_mode")) == _BICUBIC:
        raise FormulaError("the bicubic grid sampling backward has no formula")
    locations, dims, where, _ = _grid_costs(call, grid, grad_output.numel())
    input_grad, grid_grad = (bool(x) for x in call.arg("output_mask"))
    nearest = int(call.arg("interpolation_mode")) == _NEAREST
    per_element = 0
    if input_grad:
        per_element += 1 if nearest else _GRID_INPUT_GRAD[dims]
    if grid_grad and not nearest:
        per_element += _GRID_GRAD[dims]
        where += dims  # the grid's gradient times the unnormalisation's factor
    return Cost(other_flops=locations * where + grad_output.numel() * per_element)


register_many(["aten::grid_sampler_2d", "aten::grid_sampler_3d"], grid_sample_cost)
register_many(["aten::grid_sampler_2d_backward", "aten::grid_sampler_3d_backward"], grid_sample_backward_cost)
