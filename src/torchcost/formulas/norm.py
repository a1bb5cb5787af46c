"""Normalisation layers: batch, layer, group, instance and RMS norm.

Per element of the input:

====================================  ====  ==========================================================
step                                  cost  when
====================================  ====  ==========================================================
statistics from the data              4     training-mode batch norm, batch norm without running
                                            statistics, layer/group/instance norm: mean 1 (add),
                                            variance 3 (subtract, square, add)
normalise                             2     always: subtract the mean, multiply by 1/std
weight (scale)                        1     when the layer has a weight
bias (shift)                          1     when the layer has a bias
====================================  ====  ==========================================================

So BatchNorm in eval (running statistics, affine) is 2 + 1 + 1 = 4 per element, the textbook figure, and in training
4 + 2 + 1 + 1 = 8; ``affine=False`` removes 2. LayerNorm and GroupNorm (statistics always from the data, affine) are 8,
LayerNorm(bias=False) 7, without elementwise_affine 6. InstanceNorm lowers to batch norm on a (1, N*C, ...) view and
is priced as such (6 without affine; with track_running_stats in eval, running statistics: 2 + affine).
Per-channel (per-row) work that does not scale with the element count, 1/sqrt(var + eps) and updating the running
statistics, is not counted.

RMSNorm has no kernel on CPU or meta: torch lowers it to pow, mean, add (eps), rsqrt, mul and mul (weight), each
priced by :mod:`pointwise`: square 1, mean 1 (the sum's n - 1 adds and one divide per row), normalise 1, weight 1 per
element, plus add eps and rsqrt once per row, i.e. (3 + weight) * numel + 2 * rows. The fused kernels
(``aten::_fused_rms_norm`` on CUDA, ``aten::rms_norm`` if it reaches the dispatcher) are priced by that same formula,
so every device counts RMSNorm the same.

Weight normalisation (``nn.utils.weight_norm``/``parametrizations.weight_norm`` over a tensor's first or last
dimension: ``_weight_norm_interface``, wav2vec2's and the audio codecs' convolutions) computes w = g * v / ||v|| with
the norm over every dimension but ``dim``, per slice of n elements: the norm 2n (n squares, n - 1 adds, a square
root), g / norm 1, and v times it n: 3 * numel + slices. Its backward (``_weight_norm_interface_backward``), per
slice: the dot product of the gradient and v 2n - 1, the gradient of g (divide by the norm) 1, the scale of v's
correction (dot / norm^2) 2 and g / norm 1, and per element grad_v = (g / norm) * (grad_w - v * scale) 3: 5 * numel +
3 * slices. (Over a middle dimension torch computes it op by op, each priced as such.)
"""

from __future__ import annotations

import math

from torchcost.formulas._util import first_tensor
from torchcost.formulas.registry import Cost, OpCall, register_many

STATS = 4
NORMALISE = 2
WEIGHT = 1
BIAS = 1


def per_element(batch_stats: bool, weight: bool, bias: bool) -> int:
    return (STATS if batch_stats else 0) + NORMALISE + (WEIGHT if weight else 0) + (BIAS if bias else 0)


def _affine(call: OpCall) -> tuple[bool, bool]:
    return call.arg("weight") is not None, call.arg("bias") is not None


def batch_norm_cost(call: OpCall) -> Cost:
    # native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps) and the
    # _batch_norm_with_update / _native_batch_norm_legit(training) family
    x = first_tensor(call.args[0])
    training = call.arg("training", None)
    if training is None:  # _batch_norm_with_update: statistics from the batch
        training = True
    return Cost(other_flops=per_element(bool(training), *_affine(call)) * x.numel())


def batch_norm_eval_cost(call: OpCall) -> Cost:
    # _native_batch_norm_legit_no_training / _batch_norm_no_update: running statistics
    x = first_tensor(call.args[0])
    return Cost(other_flops=per_element(False, *_affine(call)) * x.numel())


def layer_norm_cost(call: OpCall) -> Cost:
    # native_layer_norm(input, normalized_shape, weight, bias, eps); native_group_norm(input, weight, bias, N, C, ...)
    x = first_tensor(call.args[0])
    return Cost(other_flops=per_element(True, *_affine(call)) * x.numel())


RMS_PER_ELEMENT = 3  # square, mean, normalise
RMS_PER_ROW = 2  # add eps, rsqrt


def rms_norm_cost(call: OpCall) -> Cost:
    # rms_norm(input, normalized_shape, weight, eps); _fused_rms_norm(input, normalized_shape, weight, eps)
    x = first_tensor(call.args[0])
    row = math.prod(int(s) for s in call.arg("normalized_shape"))
    rows = x.numel() // row if row else 0
    per = RMS_PER_ELEMENT + (1 if call.arg("weight") is not None else 0)
    return Cost(other_flops=per * x.numel() + RMS_PER_ROW * rows)


register_many(
    ["aten::native_batch_norm", "aten::_native_batch_norm_legit", "aten::_batch_norm_with_update",
     "aten::cudnn_batch_norm", "aten::miopen_batch_norm", "aten::_native_batch_norm_legit_functional"],
    batch_norm_cost,
)
register_many(["aten::_native_batch_norm_legit_no_training", "aten::_batch_norm_no_update"], batch_norm_eval_cost)
register_many(["aten::native_layer_norm", "aten::native_group_norm"], layer_norm_cost)
register_many(["aten::rms_norm", "aten::_fused_rms_norm"], rms_norm_cost)


def _slices(v: object, dim: int) -> int:
    t = first_tensor(v)
    return 1 if dim == -1 and t.dim() == 0 else int(t.shape[dim])


def weight_norm_cost(call: OpCall) -> Cost:
    # _weight_norm_interface(v, g, dim=0) -> (w, norms)
    v = first_tensor(call.args[0])
    return Cost(other_flops=3 * v.numel() + _slices(v, int(call.arg("dim", 0))))


def weight_norm_backward_cost(call: OpCall) -> Cost:
    # _weight_norm_interface_backward(grad_w, saved_v, saved_g, saved_norms, dim) -> (grad_v, grad_g)
    v = first_tensor(call.args[1])
    return Cost(other_flops=5 * v.numel() + 3 * _slices(v, int(call.arg("dim"))))


register_many(["aten::_weight_norm_interface"], weight_norm_cost)
register_many(["aten::_weight_norm_interface_backward"], weight_norm_backward_cost)
