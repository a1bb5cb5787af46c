"""torchvision's detection ops: ``torchvision::nms``, ``torchvision::roi_align``, ``torchvision::ps_roi_align`` and
the two RoIAlign backward ops.

Keyed by name, so torchvision need not be imported for the registry to hold them. Comparisons of floating-point
values are FLOPs, as in :mod:`select`; on integer tensors the ops are free.

* ``nms(boxes (N, 4), scores (N,), iou_threshold)``: which boxes are suppressed is data, so the data-independent
  worst case is charged, an **upper bound** (every pair compared, as when nothing is suppressed):
  sort the scores, N * ceil(log2 N); the box areas, 3 per box (2 subtractions, 1 multiply); and the IoU test for each
  of the N (N - 1) / 2 pairs, 13 per pair: the intersection's corners 4 (2 max, 2 min), its width and height 2
  subtractions, 2 clamps at 0, its area 1 multiply, the union 2 (add the areas, subtract the intersection), 1 divide,
  1 compare with the threshold.
* ``roi_align(input (N, C, H, W), rois (K, 5), spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)``:
  each of the K * C * ph * pw output elements averages s * s bilinear samples, s = ``sampling_ratio``: 9 FLOPs a
  sample (the bilinear figure of :mod:`resample`), s * s - 1 adds and 1 divide: 10 * s * s per output element
  (40 for torchvision's detection heads, s = 2). The sample coordinates and weights are computed per box row and
  column, not per element, and are not counted (as in :mod:`resample`); ``aligned`` and ``spatial_scale`` change
  coordinates, not the count. With ``sampling_ratio <= 0`` the kernel picks ceil(box size / pooled size) samples
  per box, which depends on the boxes' values: the formula raises ``ValueError`` and the op is listed as uncounted
  with the reason in ``report.formula_errors``.
* ``ps_roi_align``: the same per output element (its output has C / (ph * pw) channels); same ``sampling_ratio`` rule.
* ``_roi_align_backward(grad, rois, ...)`` and ``_ps_roi_align_backward``: each element of ``grad`` (the output's
  gradient, K * C * ph * pw elements; C / (ph * pw) for the position-sensitive op) is spread back over its s * s
  samples' 4 corners: per corner its weight times the gradient, divided by the sample count, added into the input's
  gradient (3 FLOPs): 12 * s * s per element of ``grad`` (48 at s = 2). The corners and weights are worked out again
  for each sample and not counted, as in the forward; the same ``sampling_ratio`` rule. A sample outside the feature
  map adds nothing; which ones are outside is the boxes' values, so every sample is counted (the larger branch).

``roi_pool`` (and ``ps_roi_pool``) take a max over a window whose size depends on each box's values: no formula,
reported as uncounted.
"""

from __future__ import annotations

from torchcost.formulas._util import first_tensor, is_floating
from torchcost.formulas.registry import ZERO, Cost, OpCall, register_many
from torchcost.formulas.resample import d_linear
from torchcost.formulas.select import sort_comparisons

BOX_AREA = 3  # 2 subtractions, 1 multiply
# corners 4 (2 max, 2 min), width/height 2, clamps 2, area 1, union 2, divide 1, threshold compare 1
IOU_PAIR = 4 + 2 + 2 + 1 + 2 + 1 + 1
BILINEAR = d_linear(2)  # 9


def nms_cost(call: OpCall) -> Cost:
    boxes = call.args[0]
    if not is_floating(boxes):
        return ZERO
    n = int(boxes.shape[0])
    return Cost(other_flops=sort_comparisons(n) + BOX_AREA * n + IOU_PAIR * (n * (n - 1) // 2))


def roi_align_per_output(samples: int) -> int:
    """FLOPs per output element averaging ``samples`` (s * s) bilinear samples: the samples, s * s - 1 adds and 1
    divide."""
    return BILINEAR * samples + (samples - 1) + 1


CORNER_BACKWARD = 3  # the corner's weight times the gradient, divided by the sample count, added into the input's


def _samples(call: OpCall) -> int:
    """s * s, the samples each output element averages; refused where the kernel picks s from the boxes."""
    s = int(call.arg("sampling_ratio"))
    if s <= 0:
        raise ValueError(
            f"{call.key} with sampling_ratio={s} takes ceil(box size / pooled size) samples per box, which depends on "
            "the boxes' values; pass sampling_ratio > 0 to count it"
        )
    return s * s


def roi_align_cost(call: OpCall) -> Cost:
    out = first_tensor(call.out)
    if not is_floating(out):
        return ZERO
    return Cost(other_flops=roi_align_per_output(_samples(call)) * out.numel())


def roi_align_backward_cost(call: OpCall) -> Cost:
    """12 * s * s FLOPs per element of the output's gradient (the module's docstring)."""
    grad = call.args[0]
    if not is_floating(grad):
        return ZERO
    return Cost(other_flops=4 * CORNER_BACKWARD * _samples(call) * grad.numel())


register_many(["torchvision::nms"], nms_cost)
register_many(["torchvision::roi_align", "torchvision::ps_roi_align"], roi_align_cost)
register_many(["torchvision::_roi_align_backward", "torchvision::_ps_roi_align_backward"], roi_align_backward_cost)
