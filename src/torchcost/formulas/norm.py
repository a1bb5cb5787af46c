"""Normalisation layers: batch, layer, group, instance and RMS norm.

Per element: computing statistics from the data costs 4 (mean: 1 add; variance: subtract, square, add = 3);
normalising costs 2 (subtract the mean, multiply by 1/std); the affine transform 2 more (multiply by weight, add bias)
when present. So BatchNorm in eval (running statistics, affine) is 4 per element, the textbook figure, and in training
8; LayerNorm and GroupNorm (statistics always from the data, affine) 8; InstanceNorm lowers to batch norm on a
reshaped input and is priced as such. RMSNorm: square 1, add 1 (mean), scale 1, weight 1 -> 4 per element with a
weight, 3 without. Per-channel work that does not scale with the element count (1/sqrt(var + eps), updating running
statistics) is not counted.
"""

from __future__ import annotations

from torchcost.formulas._util import first_tensor
from torchcost.formulas.registry import Cost, OpCall, register_many

STATS = 4
NORMALISE = 2
AFFINE = 2


def _per_element(batch_stats: bool, affine: bool) -> int:
    return (STATS if batch_stats else 0) + NORMALISE + (AFFINE if affine else 0)


def _affine(weight: object, bias: object) -> bool:
    return weight is not None or bias is not None


def batch_norm_cost(call: OpCall) -> Cost:
    # native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps) and the
    # _batch_norm_with_update / _native_batch_norm_legit(training) family
    x = first_tensor(call.args[0])
    training = call.arg("training", None)
    if training is None:  # _batch_norm_with_update, _native_batch_norm_legit: statistics from the batch
        training = True
    return Cost(other_flops=_per_element(bool(training), _affine(call.arg("weight"), call.arg("bias"))) * x.numel())


def batch_norm_eval_cost(call: OpCall) -> Cost:
    # _native_batch_norm_legit_no_training / _batch_norm_no_update: running statistics
    x = first_tensor(call.args[0])
    return Cost(other_flops=_per_element(False, _affine(call.arg("weight"), call.arg("bias"))) * x.numel())


def layer_norm_cost(call: OpCall) -> Cost:
    x = first_tensor(call.args[0])
    return Cost(other_flops=_per_element(True, _affine(call.arg("weight"), call.arg("bias"))) * x.numel())


def rms_norm_cost(call: OpCall) -> Cost:
    x = first_tensor(call.args[0])
    per = 3 + (1 if call.arg("weight") is not None else 0)
    return Cost(other_flops=per * x.numel())


register_many(
    ["aten::native_batch_norm", "aten::_native_batch_norm_legit", "aten::_batch_norm_with_update",
     "aten::cudnn_batch_norm", "aten::miopen_batch_norm", "aten::_native_batch_norm_legit_functional"],
    batch_norm_cost,
)
register_many(["aten::_native_batch_norm_legit_no_training", "aten::_batch_norm_no_update"], batch_norm_eval_cost)
register_many(["aten::native_layer_norm", "aten::native_group_norm"], layer_norm_cost)
register_many(["aten::rms_norm", "aten::_fused_rms_norm"], rms_norm_cost)
