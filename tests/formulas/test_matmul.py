"""Matrix products (formulas/matmul.py): MACs = size of the result x the contracted dimension.

(M, K) @ (K, N) -> M*K*N; any leading (batch/broadcast) dimensions multiply in. An added input/bias term is 1 FLOP per
output element; alpha != 1 and beta not in (0, 1) one more each. FLOPs = 2 * MACs + those.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torchcost
from tests.formulas._check import Fn, analyze_both, fn_both
from torchcost.shapes import TensorSpec


def _shape(r: torchcost.CostReport) -> tuple[int, ...]:
    spec = r.root.output_shape
    assert isinstance(spec, TensorSpec)
    return spec.shape


def test_linear_2d() -> None:
    r = analyze_both(nn.Linear(5, 7), torch.randn(2, 5))
    assert r.params == 5 * 7 + 7 == 42
    assert r.macs == 2 * 5 * 7 == 70
    assert r.flops == 2 * 70 + 2 * 7 == 154  # + one bias add per output element
    assert r.uncounted == ()


def test_linear_3d_counts_every_token() -> None:
    # torchinfo counts in*out per sample here and misses the T dimension; every one of the B*T rows is multiplied
    r = analyze_both(nn.Linear(5, 7), torch.randn(3, 2, 5))
    assert _shape(r) == (3, 2, 7)
    assert r.macs == 3 * 2 * 5 * 7 == 210
    assert r.flops == 2 * 210 + 3 * 2 * 7 == 462


def test_linear_4d() -> None:
    r = analyze_both(nn.Linear(5, 7), torch.randn(2, 3, 4, 5))
    assert _shape(r) == (2, 3, 4, 7)
    assert r.macs == 2 * 3 * 4 * 5 * 7 == 840
    assert r.flops == 2 * 840 + 2 * 3 * 4 * 7 == 1_848


def test_linear_3d_without_bias() -> None:
    r = analyze_both(nn.Linear(5, 7, bias=False), torch.randn(3, 2, 5))
    assert r.macs == 3 * 2 * 5 * 7 == 210
    assert r.flops == 2 * 210  # no bias, nothing else


def test_mm_and_bmm() -> None:
    r = fn_both(torch.mm, torch.randn(3, 4), torch.randn(4, 6))
    assert r.macs == 3 * 4 * 6 == 72
    assert r.flops == 144
    r = fn_both(torch.bmm, torch.randn(2, 3, 4), torch.randn(2, 4, 6))
    assert r.macs == 2 * 3 * 4 * 6 == 144
    assert r.flops == 288


def test_mv_and_dot() -> None:
    r = fn_both(torch.mv, torch.randn(3, 4), torch.randn(4))
    assert r.macs == 3 * 4 == 12
    r = fn_both(torch.dot, torch.randn(4), torch.randn(4))
    assert r.macs == 4
    assert r.flops == 8


def test_addmm_alpha_beta() -> None:
    r = fn_both(lambda c, a, b: torch.addmm(c, a, b, alpha=2, beta=3), torch.randn(6), torch.randn(3, 4),
                torch.randn(4, 6))
    assert r.macs == 3 * 4 * 6 == 72
    # 18 outputs: add the input term 18, scale it by beta 18, scale the product by alpha 18
    assert r.flops == 2 * 72 + 3 * 18 == 198


def test_addmm_beta_zero_drops_the_input() -> None:
    r = fn_both(lambda c, a, b: torch.addmm(c, a, b, beta=0), torch.randn(6), torch.randn(3, 4), torch.randn(4, 6))
    assert r.flops == 2 * 72  # beta = 0: the input is ignored; alpha = 1: no scaling


def test_baddbmm_alpha_beta() -> None:
    r = fn_both(lambda c, a, b: torch.baddbmm(c, a, b, alpha=2, beta=0.5), torch.randn(2, 3, 6),
                torch.randn(2, 3, 4), torch.randn(2, 4, 6))
    assert r.macs == 2 * 3 * 4 * 6 == 144
    assert r.flops == 2 * 144 + 3 * (2 * 3 * 6) == 396  # input add, beta, alpha on 36 outputs each


def test_addbmm_sums_batches_as_accumulation() -> None:
    r = fn_both(torch.addbmm, torch.randn(3, 4), torch.randn(2, 3, 5), torch.randn(2, 5, 4))
    # one contraction over B*K = 2*5 for each of the 3*4 outputs; summing the two products is the MACs' accumulate
    assert r.macs == 3 * 4 * (2 * 5) == 120
    assert r.flops == 2 * 120 + 3 * 4 == 252  # + the input term


def test_matmul_broadcasting() -> None:
    r = fn_both(torch.matmul, torch.randn(2, 1, 3, 4), torch.randn(5, 4, 6))
    assert _shape(r) == (2, 5, 3, 6)
    assert r.macs == 2 * 5 * 3 * 6 * 4 == 720  # broadcast batch 2*5, each (3,4)@(4,6)
    assert r.flops == 1_440
    assert r.uncounted == ()


def test_at_operator_on_3d_input() -> None:
    r = fn_both(lambda x, w: x @ w, torch.randn(3, 2, 5), torch.randn(5, 7))
    assert _shape(r) == (3, 2, 7)
    assert r.macs == 3 * 2 * 5 * 7 == 210


def test_einsum_batched_contraction() -> None:
    r = fn_both(lambda a, b: torch.einsum("bij,bjk->bik", a, b), torch.randn(2, 3, 4), torch.randn(2, 4, 6))
    assert r.macs == 2 * 3 * 4 * 6 == 144
    r = fn_both(lambda a, b: torch.einsum("bchw,bchw->bc", a, b), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4))
    assert r.macs == 1 * 2 * (4 * 4) == 32  # one dot product of length 16 per (b, c)


def test_outer_product_is_multiplication_not_macs() -> None:
    r = fn_both(lambda a, b: torch.einsum("i,j->ij", a, b), torch.randn(3), torch.randn(4))
    assert r.macs == 0  # nothing is accumulated: torch runs it as a broadcast mul
    assert r.flops == 3 * 4 == 12  # one multiply per element


@pytest.mark.parametrize(
    ("fn", "shapes"),
    [
        (nn.Linear(5, 7), [(3, 2, 5)]),
        (torch.matmul, [(2, 1, 3, 4), (5, 4, 6)]),
        (torch.baddbmm, [(2, 3, 6), (2, 3, 4), (2, 4, 6)]),
    ],
)
def test_agrees_with_torch_flop_counter(fn: object, shapes: list[tuple[int, ...]]) -> None:
    # an independent oracle: torch.utils.flop_counter counts 2 FLOPs per MAC and nothing else
    model = fn if isinstance(fn, nn.Module) else Fn(fn)  # type: ignore[arg-type]
    args = [torch.randn(s) for s in shapes]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args)
    assert torchcost.analyze(model, *args).macs * 2 == counter.get_total_flops()


def test_grouped_mm_of_mixture_of_experts() -> None:
    bf = torch.bfloat16
    # 2-D x 3-D, offs on M: 10 tokens routed to 3 experts of 16 -> 8; each token row meets one 16x8 matrix:
    # 10 * 8 * 16 = 1,280 MACs
    offs = torch.tensor([3, 7, 10], dtype=torch.int32)
    r = fn_both(lambda a, b, o: torch._grouped_mm(a, b, offs=o), torch.randn(10, 16, dtype=bf),
                torch.randn(3, 16, 8, dtype=bf), offs)
    assert r.macs == 10 * 8 * 16 == 1_280
    assert r.uncounted == ()
    # 2-D x 2-D, offs on K: K = 24 split 8/8/8; 3 groups of (8x8) @ (8x16) = 3 * 8*16*8 = 3,072 = 8 * 16 * 24
    b2 = torch.randn(24, 16, dtype=bf).t().contiguous().t()
    r = fn_both(lambda a, b, o: torch._grouped_mm(a, b, offs=o), torch.randn(8, 24, dtype=bf), b2,
                torch.tensor([8, 16, 24], dtype=torch.int32))
    assert r.macs == 3 * 8 * 16 * 8 == 8 * 16 * 24 == 3_072
    # 3-D x 3-D, batched: 3 * (4x16 @ 16x8) = 3 * 4 * 8 * 16 = 1,536
    r = fn_both(torch._grouped_mm, torch.randn(3, 4, 16, dtype=bf), torch.randn(3, 16, 8, dtype=bf))
    assert r.macs == 3 * 4 * 8 * 16 == 1_536


# -- triangular solves (round 33: uncounted in Qwen3-Next's and Qwen3.5's chunked gated delta rule) -------------------

def _triangular(batch: int, n: int) -> torch.Tensor:
    return torch.randn(batch, n, n).tril() + n * torch.eye(n)


def test_solve_triangular_is_substitution() -> None:
    # 3 systems, a 5 x 5 lower-triangular A, 7 right-hand sides: 3*5*7 = 105 unknowns; unknown i of a column takes i
    # multiply-subtracts (0+1+2+3+4 = 10 a column of 5: 105 * (5 - 1) / 2 = 210 MACs) and a division (105)
    r = fn_both(lambda a, b: torch.linalg.solve_triangular(a, b, upper=False), _triangular(3, 5), torch.randn(3, 5, 7))
    assert r.macs == 3 * 7 * (0 + 1 + 2 + 3 + 4) == 210
    assert r.flops == 2 * 210 + 3 * 5 * 7 == 525 == 3 * 7 * 5 * 5  # (LAPACK's trsm count: n^2 a column)
    assert r.uncounted == ()


def test_solve_triangular_on_the_right_and_unit_diagonal() -> None:
    # X A = B: each of B's 7 rows solves 5 unknowns (210 MACs as above); a unit diagonal divides by nothing
    r = fn_both(lambda a, b: torch.linalg.solve_triangular(a, b, upper=True, left=False, unitriangular=True),
                _triangular(3, 5).mT, torch.randn(3, 7, 5))
    assert r.macs == 3 * 7 * 10 == 210
    assert r.flops == 2 * 210 == 420


@pytest.mark.filterwarnings("ignore:torch.triangular_solve is deprecated:UserWarning")
def test_the_old_triangular_solve_counts_the_same() -> None:
    r = fn_both(lambda b, a: torch.triangular_solve(b, a, upper=False)[0], torch.randn(3, 5, 7), _triangular(3, 5))
    assert (r.macs, r.flops) == (210, 525)  # (as above)


# -- nn.Bilinear: _trilinear, computed slice by slice along the output features (round 34: uncounted before) --------
# x1 (B=4, in1=5), x2 (B, in2=7), W (out=3, in1, in2): per output feature o, torch multiplies x1 by W_o summed over
# in1 (B*in1*in2 MACs: a (B, in2) result), dots that with x2 over in2 (B*in2 MACs), and adds the (B,) slice into the
# zero output (B): MACs 3 * (4*5*7 + 4*7) = 3 * 168 = 504, other 3 * 4 = 12


def test_bilinear_forward() -> None:
    r = analyze_both(nn.Bilinear(5, 7, 3), torch.randn(4, 5), torch.randn(4, 7))
    assert r.uncounted == ()
    assert r.macs == 4 * 3 * 7 * (5 + 1) == 504
    # 2 * 504 + 12 adds into zeros + 12 bias adds
    assert r.flops == 2 * 504 + 12 + 12 == 1_032


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 5, bias=False)
        self.b = nn.Linear(2, 7, bias=False)
        self.bil = nn.Bilinear(5, 7, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bil(self.a(x), self.b(x))


def test_bilinear_backward_for_all_three_operands() -> None:
    r = torchcost.analyze(_TwoInputs(), torch.randn(4, 2), mode="train")
    backward = {p.name: p for p in r.phases}["backward"]
    tri = {o.op: o for o in backward.ops}["aten::_trilinear"]
    # three _trilinear calls (torch's _trilinear_backward), each a loop over the 3 output features:
    # grad x1 = _trilinear(g, W, x2): g (4,3,1,1) * W_o (1,1,5,7) multiplied (140 a slice), summed with x2 over in2
    #   (4*5*7 = 140 MACs, a (4,1,5,1) slice of 20 added): 3 * 140 = 420 MACs, 3 * (140 + 20) = 480 other
    # grad W = _trilinear(x1, g, x2): x1 (4,1,5,1) * g_o (4,1,1,1) multiplied (20), then with x2 summed over the
    #   batch (4*5*7 = 140 MACs, a (1,1,5,7) slice of 35 added): 420 MACs, 3 * (20 + 35) = 165 other
    # grad x2 = _trilinear(x1, W, g): x1 with W_o summed over in1 (4*5*7 = 140 MACs, (4,1,1,7)), times g_o (28),
    #   a (4,1,1,7) slice added (28): 420 MACs, 3 * (28 + 28) = 168 other
    assert tri.calls == 3
    assert tri.macs == 3 * 420 == 1_260
    assert tri.flops == 2 * 1_260 + 480 + 165 + 168 == 3_333
    assert all(not p.uncounted for p in r.phases)
