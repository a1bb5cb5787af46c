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
* pooling, interpolation and padding backward, the transpose of their forward: the kernels zero the input gradient
  and accumulate every contribution into it, one addition each (an op that writes each gradient once into zeros is
  free). Per output-gradient element: ``avg_pool2d/3d_backward`` k + 1 (one divide, k accumulations; full k as the
  forward); ``_adaptive_avg_pool2d/3d_backward`` its window + 1; ``adaptive_max_pool``/``fractional_max_pool``
  backward 1; ``upsample_nearest*``/``_upsample_nearest_exact*``, ``reflection_pad*``/``replication_pad*`` and
  ``unfold_backward`` 1; linear, bilinear, trilinear, bicubic the forward's count + 1 (the same multiplies, one
  accumulation per tap where the forward adds taps - 1): 4, 10, 22, 36.
* more activations, the larger branch: ``elu_backward`` 4 (3 from the result, +1 with input_scale != 1),
  ``softplus_backward`` 6, ``hardswish_backward`` 5, ``hardsigmoid_backward`` 3, ``mish_backward`` 13,
  ``log_sigmoid_backward`` 6 (9 without the forward's buffer), ``_prelu_kernel_backward`` 3,
  ``rrelu_with_noise_backward`` 1 (training) or 2, ``softshrink/hardshrink_backward`` 2, ``glu_backward`` 9 per
  output-gradient element.
* losses, per element: ``mse_loss_backward`` 3, ``smooth_l1_loss_backward`` 6, ``huber_loss_backward`` 5,
  ``soft_margin_loss_backward`` 8, ``binary_cross_entropy_backward`` 6 (+1 weight, +1 "mean");
  ``nll_loss(2d)_backward``: "mean" 2 and "sum" 1 in all, "none" 1 per target, + 1 per target with weight (the
  scatter into zeros is free); ``multi_margin_loss_backward``, as its CPU kernel, the larger branch: the scale g
  once (1), per sample and other class z again (2), compare (1), 2 g z at p = 2 (2), times the weight (1), taken
  from the target's gradient (1), then every element times the output's gradient: 1 + N (C - 1) (4 + 2 [p = 2] +
  [weight]) + N C.
* ``_embedding_bag_backward``: n D accumulations (sum), 2 n D with a per-index scale (mean, per-sample weights,
  scale_grad_by_freq), B D for max, no accumulation when sparse; ``_embedding_bag_per_sample_weights_backward``
  n D MACs.
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
from torchcost.formulas.loss import MEAN, NONE, margin_terms
from torchcost.formulas.pool import per_dim, window_sum
from torchcost.formulas.registry import ZERO, Cost, Formula, OpCall, register_many
from torchcost.formulas.resample import PER_OUTPUT

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


# -- pooling, interpolation, padding: the transpose of a linear map. The kernels zero the input gradient and
# accumulate (+=) every contribution into it; each accumulation is one addition (the first, into zero, too: which
# one is first is not known from shapes, and max pooling's backward counts its one the same way).


def _grad_elements(call: OpCall) -> int:
    """The elements of the op's first argument (the output gradient); 0 when it is not floating point."""
    g = first_tensor(call.args[0])
    return g.numel() if is_floating(g) else 0


def _avg_pool_backward(dims: int) -> Formula:
    # avg_pool2d_backward(grad_output, self, kernel_size, stride, padding, ceil_mode, count_include_pad,
    # divisor_override): each output gradient is divided once by its divisor and added into each of the k
    # positions of its window: k + 1 per output-gradient element (the forward's k - 1 additions and one divide,
    # transposed: the divide stays, the k - 1 additions become k accumulations). Full k, as the forward charges.
    def cost(call: OpCall) -> Cost:
        window = math.prod(per_dim(call.arg("kernel_size"), dims))
        return Cost(other_flops=(window + 1) * _grad_elements(call))

    return cost


def _adaptive_avg_pool_backward(dims: int) -> Formula:
    # _adaptive_avg_pool2d_backward(grad_output, self): each output gradient is divided by its own window's size
    # and added into each element of that window: per plane, the windows' sum (as the forward) + one divide per
    # output
    def cost(call: OpCall) -> Cost:
        g, x = call.args[0], call.args[1]
        if not is_floating(g):
            return ZERO
        in_sizes = [int(s) for s in x.shape[-dims:]]
        out_sizes = [int(s) for s in g.shape[-dims:]]
        outputs = math.prod(out_sizes)
        planes = g.numel() // outputs if outputs else 0
        window_total = math.prod(window_sum(i, o) for i, o in zip(in_sizes, out_sizes))
        return Cost(other_flops=planes * (window_total + outputs))

    return cost


def _interpolation_backward(per_output: int) -> Formula:
    # upsample_*_backward(grad_output, output_size, input_size, ...): the forward's nested 1-d interpolations,
    # transposed: the same multiplies by the per-row and per-column weights, and one accumulation per tap where the
    # forward had taps - 1 additions: the forward's per-output count + 1 per output-gradient element (nearest: 0 + 1)
    def cost(call: OpCall) -> Cost:
        return Cost(other_flops=(per_output + 1) * _grad_elements(call))

    return cost


# -- activations: the larger branch of each, counted as pointwise counts (compare, + - * /, exp, ...); selecting the
# gradient or zero is free


def elu_backward_cost(call: OpCall) -> Cost:
    # elu_backward(grad_output, alpha, scale, input_scale, is_result, self_or_result); for x <= 0:
    # from the input: compare, exp(input_scale * x), times the constant alpha * scale * input_scale, times g = 4;
    # from the result (in-place elu): compare, y + alpha * scale, times g = 3; + 1 for input_scale != 1 (CELU)
    per = (3 if bool(call.arg("is_result", False)) else 4) + int(call.arg("input_scale", 1) != 1)
    return Cost(other_flops=per * _grad_elements(call))


def rrelu_backward_cost(call: OpCall) -> Cost:
    # rrelu_with_noise_backward(grad_output, self, noise, lower, upper, training, self_is_result): training: g times
    # the drawn slope (the noise, 1 where x > 0), 1; eval: leaky_relu_backward with the mean slope, 2
    training = bool(call.arg("training", False))
    spread = float(call.arg("upper", 1 / 3)) - float(call.arg("lower", 1 / 8)) > 1e-6
    return Cost(other_flops=(1 if training and spread else 2) * _grad_elements(call))


def log_sigmoid_backward_cost(call: OpCall) -> Cost:
    # log_sigmoid_backward(grad_output, self, buffer), buffer z = exp(-|x|) saved by the forward (CPU):
    # g * (max_deriv - sign * z / (1 + z)): compare, 1 + z, divide, times sign, subtract, times g = 6; with an empty
    # buffer (CUDA) z is computed again: abs, neg, exp = 3 more
    buffer = call.arg("buffer")
    per = 6 + (3 if buffer is not None and buffer.numel() == 0 else 0)
    return Cost(other_flops=per * _grad_elements(call))


SOFTPLUS_BACKWARD = 6  # beta * x, compare with the threshold, z = exp, g * z, z + 1, divide
HARDSWISH_BACKWARD = 5  # two compares, x / 3, + 0.5, times g
HARDSIGMOID_BACKWARD = 3  # two compares, g / 6
MISH_BACKWARD = 13  # tanh(softplus): exp, log1p, tanh 3; sigmoid 4; x * s, t * t, 1 - t^2, product, + t, times g 6
PRELU_BACKWARD = 3  # compare; input gradient w * g; weight gradient x * g (its sum over the broadcast is a sum op)
SHRINK_BACKWARD = 2  # -lambda <= x <= lambda: two compares; g or 0 is selected
GLU_BACKWARD = 9  # per output element: s = sigmoid(b) 4; grad a = s * g 1; grad b = (1 - s) * s * a * g 4


# -- losses: per element of the loss's input, the larger branch; writing a gradient into zeros is free


def _loss_elements(call: OpCall) -> int:
    x = call.arg("self")
    target = call.arg("target")
    if not is_floating(x):
        return 0
    return max(int(x.numel()), int(target.numel()) if target is not None else 0)


def _loss_backward(per: int) -> Formula:
    def cost(call: OpCall) -> Cost:
        return Cost(other_flops=per * _loss_elements(call))

    return cost


MSE_BACKWARD = 3  # norm * (x - y) * g: subtract, times norm (2 or 2 / n), times g
SMOOTH_L1_BACKWARD = 6  # subtract, two compares (|d| < beta), then norm * d * g / beta (3; the other branch 1)
HUBER_BACKWARD = 5  # subtract, two compares (|d| < delta), then norm * d * g (2; the other branch also 2)
SOFT_MARGIN_BACKWARD = 8  # z = exp(-y x): neg, mul, exp; y * z, times -norm, 1 + z, divide, times g
BCE_BACKWARD = 6  # g * (x - y) / max((1 - x) * x, eps): subtract, 1 - x, times x, max, divide, times g


def bce_backward_cost(call: OpCall) -> Cost:
    # binary_cross_entropy_backward(grad_output, self, target, weight, reduction): 6, + 1 times the weight, + 1 for
    # "mean" (the kernel divides the whole gradient by n in a pass of its own)
    n = _loss_elements(call)
    per = BCE_BACKWARD + int(call.arg("weight") is not None) + int(int(call.arg("reduction", MEAN)) == MEAN)
    return Cost(other_flops=per * n)


def nll_backward_cost(call: OpCall) -> Cost:
    # nll_loss_backward / nll_loss2d_backward(grad_output, self, target, weight, reduction, ignore_index,
    # total_weight): the gradient is -g (times weight[target]) written at each target's class into zeros (free).
    # "none": -g per target, 1 each; "sum": -g once, 1; "mean": -g / total_weight once, 2; weight: + 1 per target
    if not is_floating(call.arg("self")):
        return ZERO
    n = int(call.arg("target").numel())
    reduction = int(call.arg("reduction", MEAN))
    flops = n if reduction == NONE else (2 if reduction == MEAN else 1)
    if call.arg("weight") is not None:
        flops += n
    return Cost(other_flops=flops)


def multi_margin_backward_cost(call: OpCall) -> Cost:
    # multi_margin_loss_backward(grad_output, self, target, p, margin, weight, reduction): see the module's docstring
    if not is_floating(call.arg("self")):
        return ZERO
    n, c, squared, weighted = margin_terms(call)
    return Cost(other_flops=1 + n * max(c - 1, 0) * (4 + 2 * squared + weighted) + n * c)


# -- gather-and-reduce


def embedding_bag_backward_cost(call: OpCall) -> Cost:
    # _embedding_bag_backward(grad, indices, offsets, offset2bag, bag_size, maximum_indices, num_weights,
    # scale_grad_by_freq, mode, sparse, per_sample_weights, padding_idx). sum/mean: each of the n looked-up rows
    # gets its bag's gradient row (width D) accumulated into it, n D additions, and scaled first (1 / bag size for
    # mean, the sample's weight, 1 / frequency: folded into one factor per index) n D multiplies; max: each bag's
    # gradient is added at its maximum's row, B D. A sparse gradient gathers the rows instead of accumulating them.
    g = first_tensor(call.args[0])
    if not is_floating(g):
        return ZERO
    n, width = int(call.arg("indices").numel()), int(g.shape[-1])
    if int(call.arg("mode", 0)) == 2:
        return Cost(other_flops=g.numel())
    scaled = (int(call.arg("mode", 0)) == 1 or call.arg("per_sample_weights") is not None
              or bool(call.arg("scale_grad_by_freq", False)))
    accumulate = 0 if bool(call.arg("sparse", False)) else 1
    return Cost(other_flops=(accumulate + int(scaled)) * n * width)


def embedding_bag_per_sample_weights_backward_cost(call: OpCall) -> Cost:
    # _embedding_bag_per_sample_weights_backward(grad, weight, indices, offsets, offset2bag, mode, padding_idx):
    # each looked-up index's weight gradient is the dot product of its row with its bag's gradient row: D MACs
    g = first_tensor(call.args[0])
    if not is_floating(g):
        return ZERO
    return Cost(macs=int(call.arg("indices").numel()) * int(g.shape[-1]))


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

# pooling and interpolation backward: the transposed forward (one accumulation per contribution)
for _d in (2, 3):  # the 1-d ops run as the 2-d ones
    register_many([f"aten::avg_pool{_d}d_backward"], _avg_pool_backward(_d))
    register_many([f"aten::_adaptive_avg_pool{_d}d_backward"], _adaptive_avg_pool_backward(_d))
    # each output gradient added at the input position its index names, as max pooling's
    register_many([f"aten::adaptive_max_pool{_d}d_backward", f"aten::fractional_max_pool{_d}d_backward"],
                  _per_element(1))
for _d in (1, 2, 3):
    # nearest-neighbour and the paddings' backward: every output gradient added into its source element
    register_many([f"aten::upsample_nearest{_d}d_backward", f"aten::_upsample_nearest_exact{_d}d_backward",
                   f"aten::reflection_pad{_d}d_backward", f"aten::replication_pad{_d}d_backward"], _per_element(1))
for _name, _per in PER_OUTPUT.items():
    register_many([f"aten::{_name}_backward"], _interpolation_backward(_per))
# Tensor.unfold's backward: every window element added back into its source element
register_many(["aten::unfold_backward"], _per_element(1))
register_many(["aten::elu_backward"], elu_backward_cost)
register_many(["aten::softplus_backward"], _per_element(SOFTPLUS_BACKWARD))
register_many(["aten::hardswish_backward"], _per_element(HARDSWISH_BACKWARD))
register_many(["aten::hardsigmoid_backward"], _per_element(HARDSIGMOID_BACKWARD))
register_many(["aten::mish_backward"], _per_element(MISH_BACKWARD))
register_many(["aten::_prelu_kernel_backward"], _per_element(PRELU_BACKWARD))
register_many(["aten::rrelu_with_noise_backward"], rrelu_backward_cost)
register_many(["aten::log_sigmoid_backward"], log_sigmoid_backward_cost)
register_many(["aten::softshrink_backward", "aten::hardshrink_backward"], _per_element(SHRINK_BACKWARD))
register_many(["aten::glu_backward"], _per_element(GLU_BACKWARD))
register_many(["aten::mse_loss_backward"], _loss_backward(MSE_BACKWARD))
register_many(["aten::smooth_l1_loss_backward"], _loss_backward(SMOOTH_L1_BACKWARD))
register_many(["aten::huber_loss_backward"], _loss_backward(HUBER_BACKWARD))
register_many(["aten::soft_margin_loss_backward"], _loss_backward(SOFT_MARGIN_BACKWARD))
register_many(["aten::binary_cross_entropy_backward"], bce_backward_cost)
register_many(["aten::nll_loss_backward", "aten::nll_loss2d_backward"], nll_backward_cost)
register_many(["aten::multi_margin_loss_backward"], multi_margin_backward_cost)
register_many(["aten::_embedding_bag_backward", "aten::_embedding_bag_dense_backward"], embedding_bag_backward_cost)
register_many(["aten::_embedding_bag_per_sample_weights_backward"], embedding_bag_per_sample_weights_backward_cost)
