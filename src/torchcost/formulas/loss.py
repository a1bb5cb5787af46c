"""Loss functions that reach the dispatcher as one op: nll_loss (cross-entropy lowers to log_softmax + nll_loss),
mse, smooth L1, Huber, soft margin, binary cross-entropy (on probabilities and on logits). Their backward kernels
are priced in :mod:`backward`.

Each is priced per element of the element-wise loss, then reduced: ``reduction="none"`` adds nothing, ``"sum"``
n - 1 additions and ``"mean"`` n (n - 1 additions and one divide), as :mod:`pointwise` prices sum and mean.

================================  ============  =============================================================
op                                per element   derivation
================================  ============  =============================================================
nll_loss (per target)             1 (+1)        negate the picked log-probability (picking it is free);
                                                with ``weight``: one multiply; ``"mean"`` with ``weight``
                                                divides by the total weight: n - 1 more additions
mse_loss                          2             subtract, square
smooth_l1_loss                    6             subtract, abs, compare, then 0.5 * d * d / beta (3); the other
                                                branch (|d| - 0.5 * beta) is cheaper: the larger is charged
huber_loss                        5             subtract, abs, compare, then 0.5 * d * d (2) or
                                                delta * (|d| - 0.5 * delta) (2)
soft_margin_loss                  4             log1p(exp(-y * x)): neg, mul, exp, log1p
binary_cross_entropy              9 (+1)        (y - 1) * max(log1p(-x), -100) - y * max(log(x), -100):
                                                neg, log1p, max, sub, mul, log, max, mul, sub; weight: +1
binary_cross_entropy_with_logits  9 (+3) (+1)   (1 - y) * x - log_sigmoid(x): sub, mul, log_sigmoid (6), sub;
                                                pos_weight: log_weight = (pw - 1) * y + 1 (2 per element, the
                                                pw - 1 once per pos_weight element) times log_sigmoid (1);
                                                weight: +1
================================  ============  =============================================================

Which targets are ignored (``ignore_index``) is data, unknown on the meta device: every target is counted.
Losses that torch decomposes (l1, kl_div, cross-entropy with probabilities or label smoothing, hinge, cosine and
triplet margin losses) are priced op by op.

``multi_margin_loss`` (N samples of C classes, or one of C) follows the CPU kernel, the larger branch where it
branches on the data (a class inside the margin): per sample, for each of the C - 1 other classes z = margin - x_y +
x_c (2), compare z > 0 (1), z * z at p = 2 (1), times the target's weight (1, with ``weight``), added into the
sample's sum (C - 2 adds over the C - 1 classes), and one divide by C: (C - 1) (4 + [p = 2] + [weight]) a sample;
then the batch's reduction. Its backward is priced in :mod:`backward`. multilabel_margin_loss (how many targets a
sample has is data: its list ends at the first -1) and ctc_loss (CPU kernels only, with data-dependent work) have no
formula: they are reported as uncounted.
"""

from __future__ import annotations

from torchcost.formulas._util import first_tensor, is_floating
from torchcost.formulas.registry import ZERO, Cost, Formula, OpCall, register_many

NONE, MEAN, SUM = 0, 1, 2  # torch's Reduction enum


def reduction_flops(n: int, reduction: int) -> int:
    if reduction == SUM:
        return max(n - 1, 0)
    if reduction == MEAN:
        return n
    return 0


def _nll(call: OpCall) -> Cost:
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    n = int(call.arg("target").numel())
    weighted = call.arg("weight") is not None
    reduction = int(call.arg("reduction", MEAN))
    flops = n * (2 if weighted else 1) + reduction_flops(n, reduction)
    if weighted and reduction == MEAN:
        flops += max(n - 1, 0)  # the total weight
    return Cost(other_flops=flops)


def _elementwise_loss(per: int) -> Formula:
    def cost(call: OpCall) -> Cost:
        x = first_tensor(call.args[0])
        if not is_floating(x):
            return ZERO
        n = max(x.numel(), int(call.arg("target").numel()))
        extra = 0
        if call.arg("weight") is not None:
            extra += n
        pos_weight = call.arg("pos_weight")
        if pos_weight is not None:
            extra += 3 * n + int(pos_weight.numel())
        return Cost(other_flops=per * n + extra + reduction_flops(n, int(call.arg("reduction", MEAN))))

    return cost


register_many(["aten::nll_loss_forward", "aten::nll_loss2d_forward", "aten::nll_loss_nd", "aten::nll_loss"], _nll)
register_many(["aten::mse_loss"], _elementwise_loss(2))
register_many(["aten::smooth_l1_loss"], _elementwise_loss(6))
register_many(["aten::huber_loss"], _elementwise_loss(5))
register_many(["aten::soft_margin_loss"], _elementwise_loss(4))
register_many(["aten::binary_cross_entropy"], _elementwise_loss(9))
register_many(["aten::binary_cross_entropy_with_logits"], _elementwise_loss(9))


def margin_terms(call: OpCall) -> tuple[int, int, bool, bool]:
    """(samples, classes, p is 2, a weight is given) of a multi_margin_loss call or its backward: N and C for an
    input of N x C, 1 and C for one of C."""
    x = call.arg("self")
    classes = int(x.shape[-1]) if x.dim() else 1
    samples = int(x.shape[0]) if x.dim() == 2 else 1
    return samples, classes, int(call.arg("p", 1)) == 2, call.arg("weight") is not None


def _multi_margin(call: OpCall) -> Cost:
    if not is_floating(call.arg("self")):
        return ZERO
    n, c, squared, weighted = margin_terms(call)
    per_sample = max(c - 1, 0) * (4 + squared + weighted)
    return Cost(other_flops=n * per_sample + reduction_flops(n, int(call.arg("reduction", MEAN))))


register_many(["aten::multi_margin_loss"], _multi_margin)
