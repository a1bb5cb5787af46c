"""Kernels skipped (collect/unwritten.py): an eval run on the CPU skips the kernels of direct leaves whose output it
knows, and its report is the one a run with every kernel gives, to the byte; a forward that reads values the run
did not compute (a branch, ``tolist``, ``nonzero``, an op that raises on them, caught or not) is made again with
every kernel; nothing of the user's changes."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
from tests.test_direct_leaves import _modes_on
from torchcost.collect import leaves, unwritten
from torchcost.collect.unwritten import READS, Unwritten, ValuesNeeded, _reads_values
from torchcost.run import execute, plan

_aten = torch.ops.aten


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int | None]]:
    """Per execute() of the tests' analyses, the kernels it skipped (None: a run that skips none), in order; no
    plan trusted, no call's output, no convolution formula and no model that reads values known at the start."""
    monkeypatch.setattr(leaves, "WORTH_SKIPPING", 0)  # (the tests' kernels are small: every one is worth it here)
    monkeypatch.setattr(leaves, "TRUSTED", {})
    monkeypatch.setattr(leaves, "_OUTPUTS", {})
    monkeypatch.setattr(leaves, "_FORMULA", {})
    monkeypatch.setattr(leaves, "_MISSED", set())
    monkeypatch.setattr(plan, "READ_VALUES", weakref.WeakSet())
    monkeypatch.setattr(execute, "READ_VALUES", plan.READ_VALUES)
    seen: list[int | None] = []
    original = execute.execute

    def spy(*args: Any, **kwargs: Any) -> Any:
        values: Unwritten | None = kwargs.get("unwritten")
        try:
            return original(*args, **kwargs)
        finally:
            seen.append(None if values is None else values.skipped)

    monkeypatch.setattr(execute, "execute", spy)
    yield seen


class Net(nn.Module):
    """conv -> batch norm -> ReLU6 in place -> conv -> SiLU -> pool -> linear, and a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.act2 = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = y + self.act2(self.conv2(y))
        return self.fc(self.pool(y).flatten(1))


def test_a_second_analysis_skips_the_kernels_and_reports_the_same(runs: list[int | None]) -> None:
    model, x = Net().eval(), torch.randn(2, 3, 10, 12)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kept = x.clone()
    with unwritten.off():
        plain = torchcost.analyze(model, x).to_dict()
    assert runs == [None]
    first = torchcost.analyze(model, x).to_dict()  # learns each call's output (its kernels run)
    second = torchcost.analyze(model, x).to_dict()
    assert first == plain and second == plain
    # 7 leaves with a kernel each: conv1, bn1, act1, conv2, act2, pool, fc
    assert runs[1:] == [0, 7]
    # the counts are the formulas' all the same: conv1 8*3*3*3 * 2*10*12 = 51,840 MACs, conv2 (depthwise) 8*3*3 *
    # 2*10*12 = 17,280, fc 8*5 * 2 = 80
    assert torchcost.CostReport.from_dict(plain).macs == 51_840 + 17_280 + 80
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and torch.equal(x, kept)
    assert _modes_on()


def test_an_in_place_activation_of_the_input_leaves_it_as_it_came(runs: list[int | None]) -> None:
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv1d(2, 3, 1)).eval()
    x = torch.randn(1, 2, 5)
    kept = x.clone()
    for _ in range(3):
        torchcost.analyze(model, x)
        assert torch.equal(x, kept)
    assert runs[-1] == 2


class Branchy(nn.Module):
    """A branch on the sign of a convolution's sum: the real values take the first (the input and weights are
    positive)."""

    def __init__(self, read: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        nn.init.constant_(self.conv.weight, 0.5)
        nn.init.constant_(self.conv.bias, 1.0)
        self.fc = nn.Linear(2 * 4 * 4, 3)
        self.read = read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.read == "branch":
            positive = bool(y.sum() > 0)
        elif self.read == "tolist":
            positive = y.flatten().tolist()[0] > 0
        elif self.read == "indices":  # the values taken as indices (out of range, gather raises)
            positive = torch.gather(y.flatten(1), 1, y.flatten(1).argmax(1, keepdim=True)).shape == (1, 1)
        elif self.read == "nonzero":
            positive = (y > 0).nonzero().shape[0] == y.numel()
        elif self.read == "mask":  # boolean indexing: the mask's values decide the output's size
            positive = y[y > 0].numel() == y.numel()
        elif self.read == "caught":  # an op that raises on values, and the forward's own except
            try:
                torch.linalg.cholesky(torch.eye(2) * y.mean())  # positive definite with the real values
                positive = True
            except Exception:
                positive = False
        else:  # a bare except that takes the run's own signal too
            try:
                positive = bool(y.sum() > 0)
            except:  # noqa: E722
                positive = False
        return self.fc(y.flatten(1)) if positive else y


@pytest.mark.parametrize("read", ["branch", "tolist", "indices", "nonzero", "mask", "caught", "bare except"])
def test_a_read_of_values_not_computed_runs_again_with_every_kernel(runs: list[int | None], read: str) -> None:
    model, x = Branchy(read).eval(), torch.ones(1, 1, 6, 6)
    torchcost.analyze(model, x)  # checks the plans of the convolution and the linear under the modes
    torchcost.analyze(model, x)  # learns the convolution's output
    assert runs == [0, 0]
    report = torchcost.analyze(model, x)
    # the skipped run stopped at the read (the convolution skipped), and ran again with every kernel
    assert runs[2:] == [1, None]
    # conv 2*1*3*3 * 4*4 = 288 MACs, then the branch the real values take: fc 32*3 = 96
    assert report.macs == 288 + 96
    assert model in plan.READ_VALUES
    torchcost.analyze(model, x)  # it runs every kernel from now on
    assert runs[4:] == [None]
    assert _modes_on()


def test_a_run_measuring_the_allocator_skips_nothing(runs: list[int | None]) -> None:
    model, x = Net().eval(), torch.randn(1, 3, 8, 8)
    for _ in range(2):
        torchcost.analyze(model, x, measure_memory=True)
    assert runs == [None, None]


def test_a_failure_after_a_skipped_kernel_is_checked_with_every_kernel(runs: list[int | None]) -> None:
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).view(3, 7)  # 1*1*5 elements: a wrong shape, with values or without

    model = Fails().eval()
    for _ in range(3):  # the plan checked, the output learnt, the kernel skipped
        with pytest.raises(torchcost.ModelError, match="shape"):
            torchcost.analyze(model, torch.ones(1, 1, 5))
    assert runs == [0, 0, 1, None]
    assert _modes_on()


def test_the_ops_that_hand_values_to_python() -> None:
    # a number or bool returned, or an output whose size the values decide (out= overloads included)
    for op in (_aten._local_scalar_dense.default, _aten.is_nonzero.default, _aten.equal.default,
               _aten.allclose.default, _aten.nonzero.default, _aten.nonzero.out, _aten._unique2.default,
               _aten._assert_async.default, _aten._linalg_check_errors.default):
        assert _reads_values(op), op
    # (indexing, masked_select and bincount: only their integer and bool arguments decide the output's size, and the
    # run stops on those by their dtype; a floating argument's values flow into the output)
    for op in (_aten.add.Tensor, _aten.convolution.default, _aten.relu_.default, _aten.sum.default,
               _aten.sym_size.int, _aten.gt.Scalar, _aten.copy_.default, _aten.index.Tensor,
               _aten.masked_select.default, _aten.masked_select.out, _aten.bincount.default):
        assert not _reads_values(op), op
    assert {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__, torch.Tensor.__repr__} <= READS


def test_values_needed_is_no_exception_a_forward_catches() -> None:
    assert not issubclass(ValuesNeeded, Exception)


class Tokens(nn.Module):
    """A transformer MLP's leaves on a 3-D input: layer norm, a linear with a bias, GELU, a linear without."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(16, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


def test_a_transformer_mlp_on_tokens_is_planned_and_skipped(runs: list[int | None]) -> None:
    model, x = Tokens().eval(), torch.randn(2, 5, 8)
    with leaves.off():
        plain = torchcost.analyze(model, x).to_dict()
    reports = [torchcost.analyze(model, x).to_dict() for _ in range(3)]
    assert all(r == plain for r in reports)
    assert runs == [None, 0, 0, 4]  # each kind checked under the modes, then each output learnt, then 4 skipped
    assert all(v is not False for v in leaves.TRUSTED.values()), "a plan differs from what torch runs"
    # fc1 2*5 rows x 8*16 = 1,280 MACs; fc2 2*5 x 16*4 = 640
    assert torchcost.CostReport.from_dict(plain).macs == 1_280 + 640


def test_transformers_conv1d_is_planned_and_skipped(runs: list[int | None]) -> None:
    from transformers.pytorch_utils import Conv1D

    model, x = nn.Sequential(Conv1D(6, 8), nn.ReLU()).eval(), torch.randn(2, 5, 8)
    with leaves.off():
        plain = torchcost.analyze(model, x).to_dict()
    reports = [torchcost.analyze(model, x).to_dict() for _ in range(3)]
    assert all(r == plain for r in reports)
    assert runs[-1] == 2
    assert all(v is not False for v in leaves.TRUSTED.values()), "a plan differs from what torch runs"
    # 2*5 rows x 8*6 = 480 MACs
    assert torchcost.CostReport.from_dict(plain).macs == 480


def test_a_tensor_made_from_another_ones_metadata_holds_computed_values(runs: list[int | None]) -> None:
    class Masked(nn.Module):  # (swin's shifted-window mask: new_zeros of an activation, filled, compared, used)
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            mask = y.new_zeros(y.shape)
            mask[..., 0] = 1.0
            return y.masked_fill(mask != 0, 0.0)

    model, x = Masked().eval(), torch.randn(1, 1, 4)
    with unwritten.off():
        plain = torchcost.analyze(model, x).to_dict()
    reports = [torchcost.analyze(model, x).to_dict() for _ in range(2)]
    assert all(r == plain for r in reports)
    assert runs == [None, 0, 1]  # the mask is no value the run skipped: the convolution skipped, no run again


def test_values_not_computed_taken_by_computed_indices_are_no_read(runs: list[int | None]) -> None:
    class Pooled(nn.Module):  # (transformers' sequence classifiers: each sequence's logits at its last token)
        def __init__(self) -> None:
            super().__init__()
            self.score = nn.Linear(4, 3)
            self.register_buffer("keep", torch.tensor([[True, False, True], [False, True, True]]))
            self.register_buffer("bins", torch.tensor([0, 2, 2]))

        def forward(self, x: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.score(x)
            pooled = logits[torch.arange(x.shape[0]), last]
            return pooled.masked_select(self.keep), torch.bincount(self.bins, weights=pooled[0])

    model, x, last = Pooled().eval(), torch.randn(2, 5, 4), torch.tensor([4, 2])
    with unwritten.off():
        plain = torchcost.analyze(model, x, last).to_dict()
    reports = [torchcost.analyze(model, x, last).to_dict() for _ in range(2)]
    assert all(r == plain for r in reports)
    assert runs == [None, 0, 1]  # the linear skipped, and no run again: only the indices decide the sizes
    assert model not in plan.READ_VALUES
    report = torchcost.CostReport.from_dict(plain)
    # score: 2*5 tokens x 4*3 = 120 MACs; 4 of the 2x3 pooled logits kept; bins 0..2 (the largest is 2): 3 sums
    assert report.macs == 120
    assert [o.shape for o in report.root.output_shape] == [(4,), (3,)]  # type: ignore[union-attr]


def test_only_a_kernel_worth_it_is_skipped(runs: list[int | None], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leaves, "WORTH_SKIPPING", 1 << 18)
    small = nn.Sequential(nn.Linear(64, 64)).eval()  # 64*64 = 4,096 MACs and about 17 KB moved: under 262,144
    big = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1)).eval()  # 16*16*9 * 32*32 = 2,359,296 MACs: over it
    for _ in range(3):
        torchcost.analyze(small, torch.randn(1, 64))
    for _ in range(3):
        torchcost.analyze(big, torch.randn(1, 16, 32, 32))
    assert runs == [0, 0, 0, 0, 0, 1]


class Widening(nn.Module):
    """Three convolutions of one kind (3x3, stride 1, padding 1, a bias; dense contiguous input), each at metadata
    of its own: 3 -> 4 channels on 12 x 10, 4 -> 6 on 12 x 10, 6 -> 8 on 6 x 5 (after a 2 x 2 pool)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(6, 8, 3,
                                                                                                      padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.pool(self.b(self.a(x))))


def test_a_convolution_of_a_kind_seen_right_is_skipped_at_metadata_not_run_yet(runs: list[int | None]) -> None:
    model, x = Widening().eval(), torch.randn(2, 3, 12, 10)
    with unwritten.off():
        plain = torchcost.analyze(model, x).to_dict()
    first = torchcost.analyze(model, x).to_dict()
    assert first == plain
    # the run with every kernel checked the plans (a's for the convolutions, the pool's). Then a's kernel runs (its
    # metadata not seen, the formula not yet seen right) and gives the formula's output, (2, 4, 12, 10) contiguous;
    # b and c, at metadata not seen either, are skipped by it: (2, 6, 12, 10) and (2, 8, (6 + 2 - 2 - 1) // 1 + 1 =
    # 6, 5); the pool, at metadata not seen, runs
    assert runs[1:] == [2]
    assert [kind for kind, right in leaves._FORMULA.items() if right] != []
    # the MACs are the formulas' all the same: a 4*3*9 * 2*12*10 = 25,920, b 6*4*9 * 240 = 51,840,
    # c 8*6*9 * 2*6*5 = 25,920
    assert torchcost.analyze(model, x).macs == 25_920 + 51_840 + 25_920


def test_a_convolution_whose_formula_was_wrong_once_always_runs(runs: list[int | None],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    original = leaves._by_formula

    def wrong(call: Any) -> Any:  # (a formula giving the output other strides: never right)
        found = original(call)
        if found is None:
            return None
        kind, meta, macs = found
        return kind, (meta[0], tuple(reversed(meta[1])), *meta[2:]), macs

    monkeypatch.setattr(leaves, "_by_formula", wrong)
    model, x = Widening().eval(), torch.randn(2, 3, 12, 10)
    with unwritten.off():
        plain = torchcost.analyze(model, x).to_dict()
    assert torchcost.analyze(model, x).to_dict() == plain
    assert runs[1:] == [0] and leaves._FORMULA and not any(leaves._FORMULA.values())


class Conv2dBy(nn.Conv2d):
    """An nn.Conv2d with a constructor and a helper of its own (as torchvision's video Conv3DSimple)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, padding=1)

    @staticmethod
    def describe() -> str:
        return "3x3"


class Conv2dOwnForward(nn.Conv2d):
    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return super()._conv_forward(x, weight, bias) * 2


def test_a_subclass_that_only_adds_is_planned_as_its_base(runs: list[int | None]) -> None:
    assert leaves._planner(Conv2dBy) is leaves._planner(nn.Conv2d)
    assert leaves._planner(Conv2dOwnForward) is None  # (it replaces a method of the base's forward)
    # a parametrized convolution's class puts a property in front of its weight: not planned
    parametrized = torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 4, 3))
    assert leaves._adds_only(type(parametrized), nn.Conv2d) is False
    model, x = nn.Sequential(Conv2dBy(4), Conv2dOwnForward(4, 4, 3)).eval(), torch.randn(1, 4, 8, 8)
    with unwritten.off():
        plain = torchcost.analyze(model, x).to_dict()
    for _ in range(3):
        assert torchcost.analyze(model, x).to_dict() == plain
    # the run with every kernel checked Conv2dBy's plan; the next learnt its output, and later ones skip it: one
    # kernel skipped a run, Conv2dOwnForward's always runs
    assert runs[1:] == [0, 1, 1]


def test_batch_norm_and_activations_follow_their_input_at_metadata_not_run_yet(runs: list[int | None]) -> None:
    # two stages: conv, batch norm, SiLU, in-place ReLU at 2 x 4 x 12 x 10; then the same at stride 2, 2 x 4 x 6 x 5
    # ((12 + 2 - 2 - 1) // 2 + 1 = 6, (10 + 2 - 2 - 1) // 2 + 1 = 5): every second call at metadata not run yet
    def stage(stride: int) -> list[nn.Module]:
        return [nn.Conv2d(4, 4, 3, stride=stride, padding=1), nn.BatchNorm2d(4), nn.SiLU(), nn.ReLU(inplace=True)]

    model, x = nn.Sequential(*stage(1), *stage(2)).eval(), torch.randn(2, 4, 12, 10)
    with unwritten.off():
        plain = torchcost.analyze(model, x).to_dict()  # (checks the four plans)
    assert torchcost.analyze(model, x).to_dict() == plain
    # the first stage's four kernels run (each formula seen right); the second stage's four are skipped: the
    # convolution's output (2, 4, 6, 5), batch norm's and SiLU's like their input, the in-place ReLU its input
    assert runs[1:] == [4]
    assert sum(leaves._FORMULA.values()) == 4


def test_a_product_on_values_not_computed_is_made_by_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unwritten, "_FOLLOWS", {})
    values = Unwritten()
    x, w = torch.randn(64, 128), torch.randn(96, 128)
    values.mark(x)
    # mm(x, w.t()): 64 x 128 by 128 x 96, 64*96*128 = 786,432 multiply-accumulates (at least 2^18 = 262,144): the
    # kind is asked once, of 2 x 2 operands, and the product is not run: (64, 96), strides (96, 1)
    out = values.run(_aten.mm.default, (x, w.t()), {})
    assert values.skipped == 1 and (out.shape, out.stride(), out.dtype) == ((64, 96), (96, 1), torch.float32)
    assert list(unwritten._FOLLOWS.values()) == [True]
    # addmm with a bias of 96 and bmm (4 x 64 x 128 by 4 x 128 x 96): the same, each kind asked once
    out = values.run(_aten.addmm.default, (torch.randn(96), x, w.t()), {})
    assert values.skipped == 2 and out.shape == (64, 96)
    out = values.run(_aten.bmm.default, (x.expand(4, 64, 128).contiguous(), w.t().expand(4, 128, 96)), {})
    assert values.skipped == 2 and out.shape == (4, 64, 96)  # (an expanded operand: neither order, it ran)
    # a small product (8 x 8 by 8 x 8: 512) runs, and so does one whose sizes do not fit, which raises as the kernel
    small = values.run(_aten.mm.default, (x[:8, :8], w[:8, :8]), {})
    assert values.skipped == 2 and torch.equal(small, x[:8, :8] @ w[:8, :8])
    with pytest.raises(ValuesNeeded):
        values.run(_aten.mm.default, (x, w), {})


def test_a_language_models_head_on_hidden_states_not_computed_is_not_run(runs: list[int | None],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    monkeypatch.setattr(unwritten, "_FOLLOWS", {})
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, n_positions=32, bos_token_id=0,
                                     eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 1000, (1, 8))
    first = torchcost.analyze(model, kwargs={"input_ids": ids}).to_dict()
    with unwritten.off():
        plain = torchcost.analyze(model, kwargs={"input_ids": ids}).to_dict()
    assert first == plain
    # the head: 8 tokens x 64 by 64 x 1,000, 512,000 multiply-accumulates, on the final norm's output, which holds
    # values not computed (every layer norm after the first, at its metadata, skipped): made by formula, (8, 1000)
    assert any(kind[0] is _aten.mm.default for kind in unwritten._FOLLOWS)
    assert runs[0] is not None and runs[0] > 0


def test_a_pointwise_op_on_values_not_computed_is_made_once_its_kind_was_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unwritten, "_FOLLOWS", {})
    values = Unwritten()
    x, y = torch.randn(64, 1024), torch.randn(64, 1024)  # 65,536 floats: 256 KiB each, 768 KiB moved by x * y
    values.mark(x)
    # the first call of a kind runs its kernel and is compared with the formula; the next is made by it
    for expected in (0, 1, 2):
        out = values.run(_aten.mul.Tensor, (x, y), {})
        assert values.skipped == expected and (out.shape, out.stride()) == ((64, 1024), (1024, 1))
    # a number's value is part of the kind: x * 0.5 runs once, then is made
    values.run(_aten.mul.Tensor, (x, 0.5), {})
    values.run(_aten.mul.Tensor, (x, 0.5), {})
    assert values.skipped == 3
    # a comparison's output is bool, not like its input: its kind never follows, it always runs
    for _ in range(2):
        assert values.run(_aten.gt.Tensor, (x, y), {}).dtype == torch.bool
    assert values.skipped == 3
    # in place (it writes its argument) and a draw of random numbers (it advances the generator): never made
    assert values.run(_aten.mul_.Tensor, (x, 2.0), {}) is x
    values.run(_aten.mul_.Tensor, (x, 2.0), {})
    state = torch.get_rng_state()
    values.run(_aten.bernoulli.p, (x, 0.5), {})
    values.run(_aten.bernoulli.p, (x, 0.5), {})
    assert values.skipped == 3 and not torch.equal(torch.get_rng_state(), state)
    # a small call (8 floats) always runs
    small = values.run(_aten.mul.Tensor, (x[0, :8].contiguous(), 0.5), {})
    assert values.skipped == 3 and small.shape == (8,)
