"""Element-wise ops, activations and reductions (formulas/pointwise.py): FLOPs per output element from the table
PER_ELEMENT, each entry derived from its elementary steps; reductions of n elements into one: n - 1 (sum, max, ...),
n (mean), 4n (var), 4n + 1 (std), 2n (L2 norm). Integer results are free.

x = (2, 3, 4): 24 elements; reducing the last dimension gives 6 outputs of 4 elements each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchcost
from tests.formulas._check import analyze_both, fn_both

X = (2, 3, 4)
N = 24


@pytest.mark.parametrize(
    ("model", "per_element"),
    [
        (nn.ReLU(), 1),  # max(x, 0)
        (nn.ReLU(inplace=True), 1),
        (nn.ReLU6(), 2),  # two comparisons (lowers to hardtanh)
        (nn.Hardtanh(), 2),
        (nn.Threshold(0.1, 2.0), 1),  # compare-and-select
        (nn.LeakyReLU(), 2),  # compare, multiply
        (nn.PReLU(), 2),
        (nn.GELU(), 5),  # 0.5*x*(1+erf(x/sqrt(2))): divide, erf, add, multiply, multiply
        (nn.GELU("tanh"), 9),  # x^3 (2), *0.044715, +x, *sqrt(2/pi), tanh, +1, *x, *0.5
        (nn.Sigmoid(), 4),  # 1/(1+exp(-x)): neg, exp, add, divide
        (nn.SiLU(), 5),  # x * sigmoid(x)
        (nn.Tanh(), 1),
        (nn.Hardsigmoid(), 4),  # add 3, clamp to [0, 6] (2), divide by 6
        (nn.Hardswish(), 5),  # x * hardsigmoid(x)
        (nn.ELU(), 4),  # compare, exp, subtract 1, multiply by alpha
        (nn.SELU(), 5),  # elu with a scale: one more multiply
        (nn.CELU(), 5),  # compare, divide by alpha, exp, subtract 1, multiply by alpha
        (nn.Softplus(), 4),  # multiply by beta, exp, log1p, divide by beta
        (nn.Mish(), 6),  # x * tanh(softplus(x)): 4 + 1 + 1
        (nn.LogSigmoid(), 6),  # min(x, 0) - log1p(exp(-|x|))
        (nn.Softsign(), 3),  # x / (1 + |x|): abs, add, divide (three ops)
        (nn.Softmax(dim=-1), 5),  # max, subtract, exp, sum, divide
        (nn.Softmax(dim=1), 5),
        (nn.LogSoftmax(dim=-1), 5),  # max, subtract, exp, sum, subtract the log-sum
        (nn.Softmin(dim=-1), 1 + 5),  # negate, then softmax
    ],
)
def test_activation_per_element(model: nn.Module, per_element: int) -> None:
    r = analyze_both(model, torch.randn(X))
    assert r.macs == 0
    assert r.flops == per_element * N
    assert r.uncounted == ()


def test_glu_per_output_element() -> None:
    r = analyze_both(nn.GLU(), torch.randn(X))  # halves the last dimension: 2*3*2 = 12 outputs
    assert r.flops == 12 * (4 + 1) == 60  # a * sigmoid(b)


def test_dropout_train_and_eval() -> None:
    assert analyze_both(nn.Dropout(0.5), torch.randn(X), mode="train").flops == 2 * N  # mask multiply, 1/(1-p)
    assert analyze_both(nn.Dropout(0.5), torch.randn(X)).flops == 0  # identity in eval


A = (2, 3, 4)
B = (3, 1)  # broadcasts against A: results have 24 elements


@pytest.mark.parametrize(
    ("fn", "flops"),
    [
        (lambda a, b: a + b, N),  # one per *output* element, broadcast included
        (lambda a, b: b + a, N),
        (lambda a, b: a - b, N),
        (lambda a, b: a * b, N),
        (lambda a, b: a / b, N),
        (torch.add, N),
        (torch.mul, N),
        (lambda a, b: torch.add(a, b, alpha=2), 2 * N),  # a + 2*b: scale, add
        (lambda a, b: torch.sub(a, b, alpha=3), 2 * N),
        (lambda a, b: a + 1, N),
        (lambda a, b: 2 * a, N),
        (lambda a, b: 1 - a, N),  # rsub
        (lambda a, b: a.clone().add_(1), N),  # in place
        (lambda a, b: a**2, N),  # pow: one elementary function
        (lambda a, b: a.abs().sqrt(), 2 * N),
        (lambda a, b: a > 0, N),  # a comparison on floats counts (its output is bool)
        (lambda a, b: torch.where(a > 0, a, b), N),  # the comparison; selecting is free
        (lambda a, b: a.clamp(0, 1), 2 * N),  # two bounds
        (lambda a, b: a.clamp(min=0), N),  # one bound
        (lambda a, b: torch.addcmul(a, a, b, value=0.5), 3 * N),  # a + 0.5 * (a * b)
        (lambda a, b: torch.addcmul(a, a, b), 2 * N),  # value 1: no scaling
        (lambda a, b: torch.lerp(a, b.expand(A), 0.5), 3 * N),  # a + w * (b - a)
        (lambda a, b: torch.maximum(a, b), N),
    ],
)
def test_elementwise(fn: Callable[..., Any], flops: int) -> None:
    r = fn_both(fn, torch.randn(A), torch.randn(B))
    assert r.macs == 0
    assert r.flops == flops
    assert r.uncounted == ()


def test_integer_arithmetic_is_free() -> None:
    r = fn_both(lambda x: x * (torch.arange(5, device=x.device) + 1).sum(), torch.randn(3))
    assert r.flops == 3  # only the float multiply; arange + 1 and its sum are integer: free
    assert {"aten::add", "aten::sum"} <= {o.op for o in r.free_ops}
    assert r.uncounted == ()


@pytest.mark.parametrize(
    ("fn", "flops"),
    [
        (lambda a: a.sum(), N - 1),  # 24 into 1
        (lambda a: a.sum(-1), 6 * (4 - 1)),  # 6 rows of 4: 18
        (lambda a: a.amax(-1), 6 * 3),
        (lambda a: a.max(-1), 6 * 3),  # values and indices, one pass of comparisons
        (lambda a: a.max(), N - 1),
        (lambda a: a.min(-1), 6 * 3),
        (lambda a: a.prod(-1), 6 * 3),
        (lambda a: a.argmax(-1), 6 * 3),
        (lambda a: a.mean((1, 2)), N),  # 2 outputs of 12: (12 - 1) adds + 1 divide each
        (lambda a: a.mean(-1), N),
        (lambda a: a.var(-1), 4 * N),  # mean n; deviation, square, accumulate 3n - 1; divide 1
        (lambda a: a.std(-1), 4 * N + 6),  # + sqrt per output
        (lambda a: torch.var_mean(a, -1), 4 * N),
        (lambda a: a.logsumexp(-1), 4 * N),  # max n-1, subtract n, exp n, sum n-1, log 1, add 1
        (lambda a: a.norm(dim=-1), 2 * N),  # L2: n squares, n - 1 adds, 1 sqrt per row
        (lambda a: a.norm(p=1, dim=-1), 2 * N - 6),  # n abs + n - 1 adds per row
        (lambda a: torch.linalg.vector_norm(a, ord=float("inf"), dim=-1), 2 * N - 6),  # n abs, n - 1 max
        (lambda a: a.norm(p=3, dim=-1), 3 * N),  # n abs, n pow, n - 1 adds, 1 root per row
        (lambda a: a.cumsum(-1), 6 * (4 - 1)),  # L - 1 adds per line
    ],
)
def test_reductions(fn: Callable[..., Any], flops: int) -> None:
    r = fn_both(fn, torch.randn(A))
    assert r.flops == flops
    assert r.uncounted == ()


def test_sort_and_topk_are_counted() -> None:
    # 2*3 = 6 rows of n = 4: topk(2) 4*ceil(log2 2) = 4 per row -> 24; sort 4*ceil(log2 4) = 8 per row -> 48
    r = fn_both(lambda a: (a.topk(2).values, a.sort(-1).values), torch.randn(A))
    assert r.flops == 24 + 48 == 72
    assert r.uncounted == ()


def test_embedding_lookup_is_free() -> None:
    r = analyze_both(nn.Embedding(10, 4), torch.tensor([[1, 2, 3]]))
    assert r.flops == 0
    assert "aten::embedding" in {o.op for o in r.free_ops}
    assert r.uncounted == ()


@pytest.mark.parametrize(
    ("mode", "flops"),
    [
        ("sum", (6 - 2) * 4),  # 6 rows of 4 into 2 bags: (n - B) * D adds
        ("max", (6 - 2) * 4),  # comparisons
        ("mean", 6 * 4),  # (n - B) * D adds + B * D divides
    ],
)
def test_embedding_bag(mode: str, flops: int) -> None:
    r = analyze_both(nn.EmbeddingBag(10, 4, mode=mode), torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert r.flops == flops
    assert r.uncounted == ()


def test_embedding_bag_per_sample_weights() -> None:
    def bag(w: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor, psw: torch.Tensor) -> torch.Tensor:
        return F.embedding_bag(ids, w, offsets, mode="sum", per_sample_weights=psw)

    r = fn_both(bag, torch.randn(10, 4), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 2]), torch.ones(4))
    assert r.flops == (4 - 2) * 4 + 4 * 4 == 24  # sum of 4 rows into 2 bags, + weighting each looked-up element


def test_scatter_accumulate_and_fold() -> None:
    r = fn_both(lambda t, i, s: t.scatter_add(1, i, s), torch.zeros(2, 5), torch.tensor([[0, 1, 1], [2, 2, 4]]),
                torch.randn(2, 3))
    assert r.flops == 6  # one add per source element
    r = fn_both(lambda t, i, s: t.index_add(0, i, s, alpha=2), torch.zeros(5, 4), torch.tensor([0, 3]),
                torch.randn(2, 4))
    assert r.flops == 2 * 8  # multiply by alpha, add: 8 source elements
    r = fn_both(lambda x: F.fold(x, (3, 3), 2), torch.randn(1, 8, 4))
    assert r.flops == 1 * 8 * 4 == 32  # col2im: each column element added into place
    r = fn_both(lambda x: F.unfold(x, 2), torch.randn(1, 2, 3, 3))
    assert r.flops == 0  # im2col copies


def test_meta_run_allocates_nothing_and_counts_the_same() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.LayerNorm(8))
        x = torch.empty(2, 3, 4)
    r = torchcost.analyze(model, x)
    # Linear 2*3*4*8 = 192 MACs + 48 bias; GELU 5*48; LayerNorm 8*48
    assert r.macs == 192
    assert r.flops == 2 * 192 + 48 + 5 * 48 + 8 * 48 == 1_056


def test_polar_is_cos_sin_and_two_products() -> None:
    # round 33: uncounted in llama4's rotary table. abs * (cos(angle) + i sin(angle)): 4 FLOPs per element, 4*6 = 24
    r = fn_both(torch.polar, torch.rand(4, 6), torch.rand(4, 6))
    assert r.flops == 4 * 4 * 6 == 96
    assert r.macs == 0 and r.uncounted == ()


def test_random_draws_of_every_distribution_are_free() -> None:
    # round 33: PhiMoE's router draws exponential noise in training (uncounted); drawing is free, as for randn
    def noisy(x: torch.Tensor) -> torch.Tensor:
        e = torch.empty_like(x).exponential_()
        g = torch.empty_like(x).geometric_(0.5)
        c = torch.empty_like(x).cauchy_()
        n = torch.empty_like(x).log_normal_()
        return x * e + g + c + n + torch.poisson(x.abs())

    r = fn_both(noisy, torch.randn(3, 4))
    assert r.flops == 6 * 12 == 72  # the product, four sums and the abs of 12 elements
    assert r.uncounted == ()
    free = {o.op for o in r.free_ops}
    assert {"aten::exponential_", "aten::geometric_", "aten::cauchy_", "aten::log_normal_", "aten::poisson"} <= free


def test_logical_ops_test_each_floating_operand() -> None:
    # round 33: LongT5's logical_and on float tensors was uncounted. Each floating operand is compared with 0 per
    # element (1); the logic on bools is free: and(x, y) 2*12, or(x, bool) 12, not(bool) 0; two gts 24, two adds 24
    def logic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.logical_and(x, y).float() + torch.logical_not(x > 0).float() + torch.logical_or(x, y > 0).float()

    r = fn_both(logic, torch.randn(3, 4), torch.randn(3, 4))
    assert r.flops == 2 * 12 + 12 + 0 + 2 * 12 + 2 * 12 == 84
    assert r.uncounted == ()


# -- special functions and log-add-exp (round 34: listed as uncounted) ------------------------------------------------
# 8 elements each; the per-element costs are docs/conventions.md's activation table


@pytest.mark.parametrize(("fn", "op", "flops"), [
    (lambda x: torch.logaddexp(x, x), "aten::logaddexp", 8 * 7),  # max, sub, abs, neg, exp, log1p, add
    (lambda x: torch.logaddexp2(x, x), "aten::logaddexp2", 8 * 8),  # and the divide by ln 2
    (lambda x: torch.hypot(x, x), "aten::hypot", 8 * 4),  # two squares, add, sqrt
    (lambda x: torch.sinc(x), "aten::sinc", 8 * 3),  # multiply by pi, sin, divide
    (lambda x: torch.i0(x), "aten::i0", 8 * 1),
    (lambda x: torch.special.bessel_j0(x), "aten::special_bessel_j0", 8 * 1),
    (lambda x: torch.special.erfcx(x), "aten::special_erfcx", 8 * 1),
    (lambda x: torch.special.log_ndtr(x), "aten::special_log_ndtr", 8 * 1),
    (lambda x: torch.angle(x), "aten::angle", 8 * 1),
    (lambda x: torch.special.xlog1py(x, x), "aten::special_xlog1py", 8 * 2),
    (lambda x: torch.special.entr(x), "aten::special_entr", 8 * 3),  # log, multiply, negate
    (lambda x: torch.mvlgamma(x + 2, 3), "aten::mvlgamma", 8 * 3 * 3),  # p = 3: 3 subtract, 3 lgamma, 3 add
    (lambda x: torch.logcumsumexp(x, 0), "aten::logcumsumexp", 7 * 7),  # 7 steps along 8, a logaddexp each
])
def test_special_functions(fn: Callable[[torch.Tensor], torch.Tensor], op: str, flops: int) -> None:
    r = fn_both(fn, torch.rand(8) + 0.5)
    assert {o.op: o.flops for o in r.ops}[op] == flops
    assert r.uncounted == ()


@pytest.mark.parametrize(("p", "norm"), [(2, 2 * 24), (1, 2 * 24 - 4), (3, 3 * 24)])
def test_renorm(p: float, norm: int) -> None:
    # (3, 4, 2) renormed along dim 1: 4 slices of 6 elements. The slices' p-norms as norm() prices them (p = 2: 2n =
    # 48; p = 1: |x| and n - 1 adds per slice, 2n - 4 = 44; other p: 3n = 72), each slice's factor maxnorm / (norm +
    # 1e-7) above maxnorm (compare, add, divide: 3 * 4 = 12), every element times its factor (24)
    r = fn_both(lambda x: torch.renorm(x, p, 1, 1.0), torch.randn(3, 4, 2))
    assert r.flops == norm + 12 + 24
    assert r.uncounted == ()
