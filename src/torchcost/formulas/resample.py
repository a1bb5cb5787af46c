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
(free); ``mode="area"`` lowers to adaptive average pooling (see :mod:`pool`).

**Anti-aliased** bilinear and bicubic (``antialias=True``: ``_upsample_bilinear2d_aa``, ``_upsample_bicubic2d_aa``;
timm's ViTs with ``dynamic_img_size``, transformers' DINOv2 with registers, SigLIP 2 and SAM 2 resampling
position embeddings or masks, torchvision's tensor resize) widen the filter when they shrink a
dimension: its support is 1 (bilinear) or 2 (bicubic) input pixels, times the scale in / out where that is above 1.
The number of taps of each output index is fixed by the sizes alone, and varies along the dimension (the filter is
clipped at the borders): :func:`aa_taps` works it out as torch's CPU kernel does (``_compute_indices_min_size_weights
_aa``, in the input dtype's precision: float64 for float64, float32 otherwise). The kernel is separable: it
resamples the width (when it changes) into N x C x H_in x W_out, then the height (when it changes) into the output;
each output of a pass with t taps costs t multiplies and t - 1 adds, 2t - 1. Equal sizes are a copy (free). The
weights are per output row and column and are not counted, as above. The backward
(``_upsample_bilinear2d_aa_backward``, ``_upsample_bicubic2d_aa_backward``) spreads each output-gradient element
over all the rows' and columns' taps together, ``wx * wy * g`` added in, 3 FLOPs a tap: 3 x N x C x (the rows' taps
summed) x (the columns' taps summed), also along a dimension whose size does not change (2 taps each there, 1 at
the far end, as the kernel computes them).

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
  differences), 12 a corner, 96). Nearest has no grid gradient.
* the bicubic backward (2-d): per location the forward's coordinate and coefficient work again; where the grid's
  gradient is asked, also the 4 coefficients' derivatives per axis (torch's ``get_cubic_coefficients_grad``, the
  constants folded: 5 + 4 + 4 + 5 = 18, 36 a location) and the 2 products by the unnormalisation's factor. Per
  element and tap (16): where the input's gradient is asked, the output's gradient times the tap's two coefficients,
  added into it (3: 48 an element); where the grid's is asked, for each of the 2 coordinates the tap's value times the
  output's gradient times a coefficient's derivative and the other axis's coefficient, subtracted from the sum (4: 8
  a tap, 128 an element). The kernel works the fraction x - floor(x) out twice (for the coefficients and their
  derivatives) and pads each tap's coordinates again per channel: like the forward, each is counted once a location.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from torchcost.errors import FormulaError
from torchcost.formulas._util import first_tensor, float32, is_floating
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


# -- anti-aliased interpolation -----------------------------------------------------------------------------------

AA_INTERP = {"bilinear": 2, "bicubic": 4}  # the filter's support, in input pixels, before it is widened


@functools.lru_cache(maxsize=1024)
def aa_taps(in_size: int, out_size: int, align_corners: bool, scale: float | None, interp: int,
            double: bool = False) -> tuple[int, ...]:
    """The taps of each output index of one anti-aliased pass from ``in_size`` to ``out_size`` elements, as torch's
    CPU kernel finds them (``area_pixel_compute_scale`` and ``_compute_indices_min_size_weights_aa``), in float32
    (``double``: float64) where the kernel computes in the input's dtype: ``interp`` 2 bilinear, 4 bicubic;
    ``scale`` the op's ``scales_h``/``scales_w`` argument (an output/input factor, or None)."""
    r = (lambda v: v) if double else float32
    if align_corners:
        ratio = r((in_size - 1) / (out_size - 1)) if out_size > 1 else 0.0
    else:
        ratio = r(1.0 / scale) if scale is not None and scale > 0 else r(r(in_size) / out_size)
    support = r(interp * 0.5 * ratio) if ratio >= 1.0 else interp * 0.5
    widest = math.ceil(support) * 2 + 1
    taps = []
    for i in range(out_size):
        center = r(ratio * (i + 0.5))
        low = max(int(r(center - support) + 0.5), 0)
        size = min(int(r(center + support) + 0.5), in_size) - low
        taps.append(min(max(size, 0), widest))
    return tuple(taps)


def _aa_sizes(call: OpCall, interp: int, backward: bool
              ) -> tuple[int, tuple[int, int], tuple[tuple[int, ...], tuple[int, ...]], tuple[int, int]]:
    """(batch x channels, the input's height and width, the taps of the height's and the width's output indices, the
    output's height and width) of an anti-aliased call or its backward."""
    first = call.args[0]
    h_out, w_out = (int(s) for s in call.arg("output_size"))
    n, c, h_in, w_in = (int(s) for s in (call.arg("input_size") if backward else first.shape))
    double = first.dtype == torch.float64
    align = bool(call.arg("align_corners"))
    scales = [None if v is None else float(v) for v in (call.arg("scales_h"), call.arg("scales_w"))]
    taps = (aa_taps(h_in, h_out, align, scales[0], interp, double), aa_taps(w_in, w_out, align, scales[1], interp,
                                                                              double))
    return n * c, (h_in, w_in), taps, (h_out, w_out)


def _aa_cost(interp: int) -> Formula:
    def cost(call: OpCall) -> Cost:
        """_upsample_bilinear2d_aa / _upsample_bicubic2d_aa(input, output_size, align_corners, scales_h,
        scales_w): the width's pass, then the height's (the module's docstring)."""
        if not is_floating(call.args[0]):
            return ZERO
        planes, (h_in, w_in), (rows, columns), (h_out, w_out) = _aa_sizes(call, interp, backward=False)
        flops = 0
        if w_out != w_in:
            flops += planes * h_in * sum(2 * max(t, 1) - 1 for t in columns)
        if h_out != h_in:
            flops += planes * w_out * sum(2 * max(t, 1) - 1 for t in rows)
        return Cost(other_flops=flops)

    return cost


def _aa_backward_cost(interp: int) -> Formula:
    def cost(call: OpCall) -> Cost:
        """_upsample_*_aa_backward(grad_output, output_size, input_size, align_corners, scales_h, scales_w): 3 FLOPs
        a tap of each output-gradient element, the rows' and columns' taps together."""
        if not is_floating(call.args[0]):
            return ZERO
        planes, _, (rows, columns), _ = _aa_sizes(call, interp, backward=True)
        return Cost(other_flops=3 * planes * sum(rows) * sum(columns))

    return cost


for _mode, _interp in AA_INTERP.items():
    register_many([f"aten::_upsample_{_mode}2d_aa"], _aa_cost(_interp))
    register_many([f"aten::_upsample_{_mode}2d_aa_backward"], _aa_backward_cost(_interp))


_UNNORMALISE = {True: 3, False: 4}  # per coordinate, by align_corners
_PADDING = (0, 2, 9)  # per coordinate, by padding_mode: zeros, border (clip), reflection (reflect 7, clip 2)
_BILINEAR, _NEAREST, _BICUBIC = 0, 1, 2
# per location (corners and weights) and per output element (the taps), bilinear by dimensions
_BILINEAR_COST = {2: (16, 7), 3: (46, 15)}
_GRID_INPUT_GRAD = {2: 8, 3: 16}  # per element: each corner's weight times the output's gradient, added
_GRID_GRAD = {2: 24, 3: 96}  # per element: each corner and coordinate's term of the grid's gradient
# bicubic backward: the 4 coefficients' derivatives of one axis (x = -1 - t, (c x - c') x - c'': 5; x = -t, (c x -
# c') x: 4; x = 1 - t: 4; x = 2 - t, (c x - c') x + c'': 5), and per element over the 16 taps: the input's gradient
# (the output's gradient times 2 coefficients, added: 3 a tap) and the grid's (2 coordinates, each the tap's value
# times the output's gradient times 2 coefficients, subtracted: 4 a coordinate, 8 a tap)
CUBIC_DERIVATIVES = 5 + 4 + 4 + 5
_BICUBIC_INPUT_GRAD = 16 * 3
_BICUBIC_GRID_GRAD = 16 * 2 * 4


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
    locations, dims, where, _ = _grid_costs(call, grid, grad_output.numel())
    input_grad, grid_grad = (bool(x) for x in call.arg("output_mask"))
    mode = int(call.arg("interpolation_mode"))
    per_element = 0
    if input_grad:
        per_element += 1 if mode == _NEAREST else _BICUBIC_INPUT_GRAD if mode == _BICUBIC else _GRID_INPUT_GRAD[dims]
    if grid_grad and mode != _NEAREST:
        per_element += _BICUBIC_GRID_GRAD if mode == _BICUBIC else _GRID_GRAD[dims]
        where += dims  # the grid's gradient times the unnormalisation's factor
        if mode == _BICUBIC:
            where += dims * CUBIC_DERIVATIVES
    return Cost(other_flops=locations * where + grad_output.numel() * per_element)


register_many(["aten::grid_sampler_2d", "aten::grid_sampler_3d"], grid_sample_cost)
register_many(["aten::grid_sampler_2d_backward", "aten::grid_sampler_3d_backward"], grid_sample_backward_cost)
