"""The backward ops of a training step (docs/conventions.md, "Training step", writes each out with its derivation).

The backward of a matrix product is matrix products (mm, bmm, addmm: priced in :mod:`matmul`), and many backward
formulas are element-wise ops priced in :mod:`pointwise`. The fused backward kernels are priced here:

* ``convolution_backward``: ``output_mask`` says which gradients are computed. The input gradient is a transposed
  convolution and the weight gradient a convolution of the input with the output gradient; each costs the forward's
  MACs (weight elements x positions). The bias gradient sums the output gradient per channel: grad_output.numel() -
  C_out additions.
* activations: ``threshold_backward`` (ReLU) 1 per element (the comparison); ``gelu_backward`` 11 (erf form), 19
  (tanh form); ``sigmoid_backward`` 3, ``tanh_backward`` 3, ``silu_backward`` 8, ``hardtanh_backward`` 2,
  ``leaky_relu_backward`` 2, ``native_dropout_backward`` 2.
* ``_softmax_backward_data`` 4 per element (y * (g - sum(g * y))), ``_log_softmax_backward_data`` 4
  (g - exp(y) * sum(g)).
* norms: ``native_batch_norm_backward`` and ``native_layer_norm_backward`` / ``native_group_norm_backward`` per
  element: x-hat again 2 (if the input or weight gradient is computed), input gradient from batch statistics 7
  (+1 for LayerNorm's weight), from running statistics 1, weight gradient 2, bias gradient 1.
* ``max_pool2d/3d_with_indices_backward``: one addition per element of the output gradient.
* ``embedding_dense_backward``: one addition per element of the output gradient (+1 with scale_grad_by_freq).
* fused attention backward (``_scaled_dot_product_flash_attention_for_cpu_backward``, flash, efficient, cudnn):
  the kernels keep no attention matrix, so they compute it again: MACs = 3 R S E + 2 R S E_v (Q K^T again, dV, dP,
  dQ, dK); other FLOPs per score 6 (scale, subtract log-sum-exp, exp, dP - D, times P, scale) + 1 with a mask + 2 with
  dropout, plus 2 per output element (D = rowsum(dO * O)).

``GRAD_SPLITS`` splits a kernel's MACs into input-gradient and weight-gradient parts (convolution_backward here,
the CPU LSTM's mkldnn_rnn_layer_backward in :mod:`rnn`); matrix products are split by their node (collect/ops.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torchcost.formulas._util import first_tensor, is_floating
from torchcost.formulas.registry import ZERO, Cost, Formula, OpCall, register_many

GradSplit = Callable[[OpCall], tuple[int, int]]
# Backward kernels whose MACs split into input-gradient and weight-gradient parts, read from the call itself
# (matrix products are split by the autograd node that runs them: collect/ops.py)
GRAD_SPLITS: dict[str, GradSplit] = {}


def _mask(call: OpCall, n: int = 3) -> list[bool]:
    mask = call.arg("output_mask")
    return [bool(m) for m in mask] if mask is not None else [True] * n


def _conv_forward_macs(call: OpCall) -> int:
    # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
    # output_padding, groups, output_mask)
    grad_out, x, weight = call.arg("grad_output"), call.arg("input"), call.arg("weight")
    positions = x.numel() if bool(call.arg("transposed", False)) else grad_out.numel()
    return int(positions * (weight.numel() // weight.size(0)))  # the forward's MACs (formulas/conv.py)


def convolution_backward_split(call: OpCall) -> tuple[int, int]:
    """(input-gradient, weight-gradient) MACs of a convolution_backward call, by its output_mask."""
    forward_macs = _conv_forward_macs(call)
    want_input, want_weight, _ = _mask(call)
    return forward_macs * int(want_input), forward_macs * int(want_weight)


def convolution_backward_cost(call: OpCall) -> Cost:
    grad_out = call.arg("grad_output")
    want_input, want_weight, want_bias = _mask(call)
    macs = _conv_forward_macs(call) * (int(want_input) + int(want_weight))
    channels = int(grad_out.shape[1]) if grad_out.dim() > 1 else 1
    bias = grad_out.numel() - channels if want_bias and call.arg("bias_sizes") is not None else 0
    return Cost(macs=macs, other_flops=bias)


def _per_element(per: int, tensor_arg: int = 0) -> Formula:
    def cost(call: OpCall) -> Cost:
        t = first_tensor(call.args[tensor_arg])
        return Cost(other_flops=per * t.numel()) if is_floating(t) else ZERO

    return cost


GELU_BACKWARD = 11  # Phi(x): x/sqrt2, erf, +1, *0.5 = 4; phi(x): square, *-0.5, exp, *1/sqrt(2pi) = 4; x*phi, +, *g
GELU_TANH_BACKWARD = 19  # u 5, tanh 1, 0.5(1+t) 2, 1-t^2 2, du/dx 4, 0.5x*sech^2*du 3, sum 1, *g 1


def gelu_backward_cost(call: OpCall) -> Cost:
    g = first_tensor(call.args[0])
    per = GELU_TANH_BACKWARD if call.arg("approximate", "none") == "tanh" else GELU_BACKWARD
    return Cost(other_flops=per * g.numel())


XHAT = 2  # subtract the mean, multiply by 1/std
INPUT_FROM_BATCH = 7  # sum g, g * xhat, sum, g - mean g, xhat * mean(g xhat), subtract, times the per-row scale
INPUT_FROM_RUNNING = 1  # g times the per-channel weight / std
WEIGHT_GRAD = 2  # g * xhat, accumulate
BIAS_GRAD = 1  # accumulate g


def _norm_backward(n: int, mask: list[bool], *, batch_stats: bool, weight_scale: bool) -> Cost:
    want_input, want_weight, want_bias = mask
    per = XHAT if (want_input and batch_stats) or want_weight else 0
    if want_input:
        per += INPUT_FROM_BATCH + int(weight_scale) if batch_stats else INPUT_FROM_RUNNING
    per += WEIGHT_GRAD * int(want_weight) + BIAS_GRAD * int(want_bias)
    return Cost(other_flops=per * n)


def batch_norm_backward_cost(call: OpCall) -> Cost:
    # native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train,
    # eps, output_mask); the weight's scale folds into the per-channel factor
    x = call.arg("input")
    mask = _mask(call)
    if call.arg("weight") is None:
        mask[1] = mask[2] = False
    return _norm_backward(x.numel(), mask, batch_stats=bool(call.arg("train", True)), weight_scale=False)


def layer_norm_backward_cost(call: OpCall) -> Cost:
    # native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask);
    # native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group, output_mask)
    x = call.arg("input")
    weight = call.arg("weight") is not None
    mask = _mask(call)
    mask[1] = mask[1] and weight
    if call.key == "aten::native_layer_norm_backward":
        mask[2] = mask[2] and call.arg("bias") is not None
    else:
        mask[2] = mask[2] and weight
    return _norm_backward(x.numel(), mask, batch_stats=True, weight_scale=weight)


def embedding_backward_cost(call: OpCall) -> Cost:
    g = first_tensor(call.args[0])
    per = 2 if bool(call.arg("scale_grad_by_freq", False)) else 1
    return Cost(other_flops=per * g.numel())


SDPA_BACKWARD_PER_SCORE = 6


def sdpa_backward_cost(call: OpCall) -> Cost:
    """Fused attention backward, heads first: (grad_out, query, key, value, ...)."""
    q, k, v = call.args[1], call.args[2], call.args[3]
    rows = math.prod(int(s) for s in q.shape[:-1])
    s_len, e, e_v = int(k.shape[-2]), int(q.shape[-1]), int(v.shape[-1])
    scores = rows * s_len
    masked = bool(call.arg("is_causal", False)) or any(
        call.arg(n) is not None for n in ("attn_mask", "attn_bias"))
    dropout = float(call.arg("dropout_p", 0.0) or 0.0) > 0
    per_score = SDPA_BACKWARD_PER_SCORE + int(masked) + 2 * int(dropout)
    return Cost(macs=3 * scores * e + 2 * scores * e_v, other_flops=per_score * scores + 2 * rows * e_v)


register_many(["aten::convolution_backward"], convolution_backward_cost)
register_many(["aten::threshold_backward"], _per_element(1))
register_many(["aten::gelu_backward"], gelu_backward_cost)
register_many(["aten::sigmoid_backward", "aten::tanh_backward"], _per_element(3))
register_many(["aten::silu_backward"], _per_element(8))
register_many(["aten::hardtanh_backward", "aten::leaky_relu_backward", "aten::native_dropout_backward"],
              _per_element(2))
register_many(["aten::_softmax_backward_data", "aten::_log_softmax_backward_data"], _per_element(4))
register_many(["aten::native_batch_norm_backward"], batch_norm_backward_cost)
register_many(["aten::native_layer_norm_backward", "aten::native_group_norm_backward"], layer_norm_backward_cost)
register_many(["aten::embedding_dense_backward"], embedding_backward_cost)
# max pooling: each output gradient is added into the input position its index names
register_many(["aten::max_pool2d_with_indices_backward", "aten::max_pool3d_with_indices_backward"], _per_element(1))
register_many(["aten::_scaled_dot_product_flash_attention_for_cpu_backward",
               "aten::_scaled_dot_product_flash_attention_backward",
               "aten::_scaled_dot_product_efficient_attention_backward",
               "aten::_scaled_dot_product_cudnn_attention_backward"], sdpa_backward_cost)
GRAD_SPLITS["aten::convolution_backward"] = convolution_backward_split
