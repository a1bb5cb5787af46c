"""Direct leaves (collect/leaves.py): common leaf modules run past torchcost's modes once their plan was seen to be
right, and the report is the one the dispatch mode gives, to the byte; a wrong plan is never used; the modes always
come back on; nothing watching from outside misses an op."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import torchcost
from torchcost.collect import leaves, memory, probe, workspace
from torchcost.collect import ops as ops_module
from torchcost.collect.leaves import DirectLeaves
from torchcost.collect.memory import MemoryTracker
from torchcost.collect.recording import Recording
from torchcost.collect.workspace import WORKSPACES
from torchcost.formulas.registry import Cost, FormulaRegistry


@pytest.fixture(autouse=True)
def fresh_trust(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Each test starts with no plan trusted, and counts the calls run past the modes and the ones traced."""
    monkeypatch.setattr(leaves, "TRUSTED", {})
    counts = {"direct": 0, "checked": 0}
    end = DirectLeaves.end

    def counting_end(self: DirectLeaves, call: Any, output: Any, raised: bool) -> None:
        counts["direct" if call.guards is not None else "checked"] += 1
        end(self, call, output, raised)

    monkeypatch.setattr(DirectLeaves, "end", counting_end)
    yield counts


def _modes_on() -> bool:
    """torch's dispatch and function modes are reachable again (nothing of torchcost's left switched off)."""
    return (torch._C._is_torch_function_enabled()
            and not torch._C._dispatch_tls_is_dispatch_key_excluded(torch._C.DispatchKey.Python)
            and torch._C._len_torch_dispatch_stack() == 0 and torch._C._len_torch_function_stack() == 0)


class Zoo(nn.Module):
    """Every planned module type, in the settings that pick different ops."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 4, 3, bias=False)
        self.b1 = nn.BatchNorm1d(4)
        self.c2 = nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3)
        self.b2 = nn.BatchNorm2d(6, affine=False)
        self.c3 = nn.Conv3d(2, 2, (1, 3, 3), dilation=(1, 2, 1))
        self.b3 = nn.BatchNorm3d(2, momentum=None)
        self.acts = nn.ModuleList([nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU6(inplace=True), nn.Hardtanh(-2, 3),
                                   nn.SiLU(inplace=True), nn.Hardswish(), nn.Hardsigmoid(inplace=True),
                                   nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh(), nn.GELU(), nn.GELU("tanh")])
        self.pool1 = nn.AdaptiveAvgPool2d(1)
        self.pool23 = nn.AdaptiveAvgPool2d((2, 3))
        self.drop = nn.Dropout(0.5)
        self.drop2 = nn.Dropout2d(0.2)
        self.same = nn.Identity()
        self.fc = nn.Linear(6, 5)
        self.fc_no_bias = nn.Linear(5, 3, bias=False)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        a = self.b1(self.c1(x1))
        b = self.b2(self.c2(x2))
        c = self.b3(self.c3(x3))
        for act in self.acts:
            b = act(b)
        b = self.drop2(b)
        pooled = self.pool1(b).flatten(1) + self.pool23(b).mean((2, 3))
        out = self.fc_no_bias(self.fc(self.same(self.drop(pooled))))
        return out.sum() + a.sum() + c.sum()


def _zoo_inputs() -> tuple[torch.Tensor, ...]:
    return torch.randn(2, 3, 9), torch.randn(2, 3, 8, 10), torch.randn(1, 2, 3, 7, 9)


def test_reports_are_identical_with_and_without_direct_leaves(fresh_trust: dict[str, int]) -> None:
    model, inputs = Zoo().eval(), _zoo_inputs()
    with leaves.off():
        plain = torchcost.analyze(model, *inputs).to_dict()
    assert fresh_trust == {"direct": 0, "checked": 0}
    first = torchcost.analyze(model, *inputs).to_dict()  # each kind of call checked once, under the modes
    assert fresh_trust["checked"] > 0
    second = torchcost.analyze(model, *inputs).to_dict()
    assert first == plain and second == plain
    assert all(v is not False for v in leaves.TRUSTED.values()), "a plan differs from what torch runs"
    # 3 convs + 3 batch norms + 12 activations + 2 pools + 2 dropouts + 1 identity + 2 linears, all past the modes
    # once trusted
    assert fresh_trust["direct"] >= 25


_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_ACTIVATIONS = (lambda: nn.ReLU(), lambda: nn.ReLU(inplace=True), lambda: nn.ReLU6(inplace=True),
                lambda: nn.SiLU(inplace=True), lambda: nn.Hardswish(), lambda: nn.LeakyReLU(0.1, inplace=True),
                lambda: nn.Sigmoid(), lambda: nn.Tanh(), lambda: nn.GELU("tanh"), lambda: nn.Identity(),
                lambda: nn.Dropout(0.3))


class _Drawn(nn.Module):
    """A body of planned leaves, its last module called a second time (a module held once, called twice), an
    optional pool, then a planned Linear on the pooled features."""

    def __init__(self, body: list[nn.Module], pool: nn.Module | None, channels: int, classes: int,
                 bias: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)
        self.pool = pool
        self.head = nn.Linear(channels, classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        y = y + self.body[-1](y)
        if self.pool is not None:
            y = self.pool(y)
        return self.head(y.flatten(2).mean(-1))


@st.composite
def _leaf_models(draw: Any) -> tuple[nn.Module, torch.Tensor]:
    """Convolutions of 1-3 spatial dimensions (groups, strides, padding, with and without bias), batch norms with
    and without affine parameters, every planned activation (some in place), float32 or bfloat16, channels-last
    2-d inputs: the combinations that pick another kind of call or another op."""
    dim = draw(st.sampled_from([1, 2, 3]))
    channels, size, batch = draw(st.sampled_from([1, 2, 4])), draw(st.integers(6, 11)), draw(st.integers(1, 3))
    body: list[nn.Module] = []
    c, s = channels, size
    for _ in range(draw(st.integers(1, 3))):
        out, k, stride = draw(st.sampled_from([2, 4, 6])), draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 2]))
        pad = draw(st.sampled_from([0, k // 2]))
        if (s + 2 * pad - k) // stride + 1 < 1:
            break
        groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0 and out % g == 0]))
        body.append(_CONVS[dim](c, out, k, stride=stride, padding=pad, groups=groups, bias=draw(st.booleans())))
        c, s = out, (s + 2 * pad - k) // stride + 1
        if draw(st.booleans()):
            body.append(_NORMS[dim](c, affine=draw(st.booleans())))
        body.append(draw(st.sampled_from(_ACTIVATIONS))())
    if not body:
        body.append(nn.ReLU())
    pool = nn.AdaptiveAvgPool2d(draw(st.sampled_from([1, 2]))) if dim == 2 and draw(st.booleans()) else None
    model = _Drawn(body, pool, c, draw(st.integers(1, 5)), draw(st.booleans()))
    x = torch.randn(batch, channels, *[size] * dim)
    if draw(st.booleans()):
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    if dim == 2 and draw(st.booleans()):
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    return model.train(draw(st.booleans())), x


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(_leaf_models())
def test_drawn_models_report_the_same_with_and_without_direct_leaves(fresh_trust: dict[str, int],
                                                                     case: tuple[nn.Module, torch.Tensor]) -> None:
    """The direct leaves never change a report, whatever mix of planned modules, settings, dtypes and memory formats
    a model has, and leave it as it came in (its values, its train flag)."""
    model, x = case
    values = {k: v.clone() for k, v in model.state_dict().items()}
    training = model.training
    with leaves.off():
        plain = torchcost.analyze(model, x).to_dict()
    direct_before = fresh_trust["direct"]
    first = torchcost.analyze(model, x).to_dict()  # kinds not trusted yet run under the modes, traced
    second = torchcost.analyze(model, x).to_dict()  # every trusted kind past them
    assert first == plain and second == plain
    assert fresh_trust["direct"] > direct_before  # (the comparison is not of two runs under the modes)
    assert all(v is not False for v in leaves.TRUSTED.values()), "a plan differs from what torch runs"
    assert model.training == training
    assert all(torch.equal(values[k], v) for k, v in model.state_dict().items())


def test_a_direct_convolution_is_counted_by_the_formula(fresh_trust: dict[str, int]) -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 10, 12)
    torchcost.analyze(conv, x)
    report = torchcost.analyze(conv, x)
    assert fresh_trust == {"direct": 1, "checked": 1}  # the first analysis checks the plan, the second uses it
    # 2*8*10*12 outputs, each 3*3*3 = 27 multiply-accumulates: 1920 * 27 = 51,840
    assert report.macs == 51_840
    assert report.root.output_shape.shape == (2, 8, 10, 12)  # type: ignore[union-attr]


def test_a_direct_linear_is_counted_by_the_formula(fresh_trust: dict[str, int]) -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 16, bias=False))
    x = torch.randn(4, 64)
    with leaves.off():
        plain = torchcost.analyze(model, x).to_dict()
    torchcost.analyze(model, x)
    report = torchcost.analyze(model, x)
    assert fresh_trust == {"direct": 2, "checked": 2}  # each Linear checked once, then past the modes
    assert report.to_dict() == plain
    # 4x32 outputs of 64 MACs each: 8,192, and 4x16 of 32 each: 2,048
    assert report.macs == 4 * 32 * 64 + 4 * 16 * 32 == 10_240
    # the product with the bias is an addmm, without one an mm (the transposed weight before it is a view: no row)
    assert [op.op for op in report.module("0").ops] == ["aten::addmm"]
    assert [op.op for op in report.module("1").ops] == ["aten::mm"]
    assert report.root.output_shape.shape == (4, 16)  # type: ignore[union-attr]


def _three_convs() -> nn.Sequential:
    # two alike (4 -> 4 channels, 3x3, padding 1) and one with 8 output channels
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1))


def test_alike_planned_calls_are_priced_once_and_each_counted(monkeypatch: pytest.MonkeyPatch,
                                                              fresh_trust: dict[str, int]) -> None:
    model, x = _three_convs().eval(), torch.randn(1, 4, 6, 6)
    with leaves.off():
        plain = torchcost.analyze(model, x).to_dict()
    torchcost.analyze(model, x)  # (the first conv checked; the other two are of its kind: past the modes)
    assert fresh_trust == {"direct": 2, "checked": 1}
    priced: dict[Any, Any] = {}
    monkeypatch.setattr(ops_module, "_PRICED", priced)
    report = torchcost.analyze(model, x)
    assert fresh_trust == {"direct": 5, "checked": 1}
    assert len(priced) == 2  # the two alike convolutions share one price
    # per conv: 1x4x6x6 = 144 outputs of 4*3*3 = 36 MACs: 5,184; the last, 1x8x6x6 = 288 outputs: 10,368
    assert [report.module(str(i)).macs for i in range(3)] == [5_184, 5_184, 10_368]
    assert report.macs == 20_736  # 5,184 + 5,184 + 10,368
    assert report.to_dict() == plain
    # a second analysis takes every price from the first (nothing new), and counts the same
    assert torchcost.analyze(model, x).to_dict() == plain and len(priced) == 2


def test_a_planned_calls_key_tells_apart_what_its_price_reads() -> None:
    x = torch.randn(1, 4, 6, 6)

    def key(conv: nn.Conv2d, inp: torch.Tensor) -> int | None:
        plan = leaves._PLANNERS[nn.Conv2d](conv, inp)
        assert plan is not None
        kind, steps = plan
        return leaves._fingerprint(kind, steps, [])

    a, b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    assert key(a, x) == key(b, x)  # other weights of the same metadata: one key
    assert key(a, x) != key(nn.Conv2d(4, 4, 3, padding=2), x)  # a setting
    assert key(a, x) != key(a, torch.randn(2, 4, 6, 6))  # the input's shape
    wide = nn.Conv2d(4, 4, 3, padding=1).double()
    assert key(a, x) != key(a, x.double()) != key(wide, x.double())  # a dtype, the input's and the weight's
    assert key(a, x) != key(a, torch.randn(1, 4, 6, 7)[..., 1:])  # strides and offset
    b.weight.requires_grad_(False)
    assert key(a, x) != key(b, x)  # a grad flag
    odd = (torch.ops.aten.convolution.default, (x, [x]), {}, leaves.Out.MODULE)
    assert leaves._fingerprint(("odd",), (odd,), []) is None  # a list holding a tensor: not a planner's argument
    # the tensors of each op, found on the way, in their places: the memory tracker's inputs for that op
    linear = nn.Linear(4, 3)
    plan = leaves._PLANNERS[nn.Linear](linear, torch.randn(2, 4))
    assert plan is not None
    found: list[list[torch.Tensor]] = []
    assert leaves._fingerprint(plan[0], plan[1], found) is not None
    (_, (weight,), _, transposed), (_, (bias, inp, t), _, _) = plan[1]
    assert [[id(v) for v in op] for op in found] == [[id(weight)], [id(bias), id(inp), id(t)]]
    assert weight is linear.weight and bias is linear.bias and t is transposed


def test_a_module_changed_between_analyses_is_priced_anew(fresh_trust: dict[str, int]) -> None:
    conv, x = nn.Conv2d(4, 4, 3, padding=1).eval(), torch.randn(1, 4, 6, 6)
    torchcost.analyze(conv, x)
    assert torchcost.analyze(conv, x).macs == 5_184  # 144 outputs x 36 MACs
    conv.stride = (2, 2)
    # a 3x3 output of 4 channels: 36 outputs x 36 MACs = 1,296
    assert torchcost.analyze(conv, x).macs == 1_296
    conv.weight = nn.Parameter(torch.randn(4, 4, 1, 1))
    conv.padding = (0, 0)
    # 1x1 kernels, stride 2 over 6x6: 3x3 outputs of 4 channels, 4 MACs each: 36 x 4 = 144
    assert torchcost.analyze(conv, x).macs == 144
    assert fresh_trust["direct"] >= 3


def test_a_planned_calls_kernel_memory_is_worked_out_once_in_the_process(no_store: None,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          fresh_trust: dict[str, int]) -> None:
    model, x = _three_convs().eval(), torch.randn(1, 4, 6, 6)
    monkeypatch.setattr(memory, "_PLANNED", {})
    # a CPU none of the convolution tables was measured on: each call's workspace is the probe's, on every machine
    # (on an AVX512 one without AMX the table claims these small convolutions, and no probe is run)
    monkeypatch.setattr(workspace, "_measured_isa", lambda capability: False)
    monkeypatch.setattr(memory, "_TABLES", {})  # (the tables' answers by call, kept for the process)
    with leaves.off():
        plain = torchcost.analyze(model, x).to_dict()
    torchcost.analyze(model, x)  # (the first conv checked under the modes, the other two past them)
    asked: list[str] = []
    source = MemoryTracker._workspace_source

    def counting(self: MemoryTracker, key: str, *rest: Any) -> Any:
        asked.append(key)
        return source(self, key, *rest)

    monkeypatch.setattr(MemoryTracker, "_workspace_source", counting)
    assert torchcost.analyze(model, x).to_dict() == plain
    assert asked == []  # every conv's answers (two kinds of call) from the run before
    # a probe whose figure left the cache: those calls worked out again (the two alike ones once), the same report
    probe.CACHE.clear()
    assert torchcost.analyze(model, x).to_dict() == plain
    assert asked == ["aten::convolution"] * 2
    # a user's workspace entry: asked in each run (once per kind of call in it), never remembered
    asked.clear()
    with monkeypatch.context() as patch:
        patch.setitem(WORKSPACES, "aten::convolution", lambda call, target: 1 << 20)
        with leaves.off():
            truth = torchcost.analyze(model, x).to_dict()
        asked.clear()
        for _ in range(2):
            held = torchcost.analyze(model, x)
            assert held.to_dict() == truth
        assert asked == ["aten::convolution"] * 4
        assert held.peak_memory > 1 << 20  # its MiB held during each convolution
    asked.clear()
    assert torchcost.analyze(model, x).to_dict() == plain  # the built-in entry back: its answers remembered again
    assert asked == []


def test_a_users_formula_is_asked_at_every_planned_call(fresh_trust: dict[str, int]) -> None:
    model, x = _three_convs().eval(), torch.randn(1, 4, 6, 6)
    asked: list[int] = []

    def per_output(call: Any) -> Cost:  # one MAC per output element, and a note of each call
        asked.append(1)
        return Cost(macs=call.out.numel())

    torchcost.analyze(model, x, formulas={"aten::convolution": per_output})
    asked.clear()
    report = torchcost.analyze(model, x, formulas={"aten::convolution": per_output})
    assert fresh_trust == {"direct": 5, "checked": 1}
    assert len(asked) == 3  # not remembered: a user's formula may read more than the metadata
    assert report.macs == 144 + 144 + 288  # the outputs' elements: 1x4x6x6, 1x4x6x6 and 1x8x6x6


def test_a_planned_view_that_is_not_the_ops_view_is_never_used(monkeypatch: pytest.MonkeyPatch,
                                                                fresh_trust: dict[str, int]) -> None:
    planner = leaves._PLANNERS[nn.Linear]

    def copied(m: Any, x: torch.Tensor) -> Any:  # the transposed weight as a copy: the same metadata, another storage
        kind, (transpose, (func, args, kwargs, out)) = planner(m, x)
        t = transpose[3].contiguous().t().contiguous()
        return kind, ((transpose[0], transpose[1], transpose[2], t), (func, (*args[:2], t), kwargs, out))

    monkeypatch.setitem(leaves._PLANNERS, nn.Linear, copied)
    layer = nn.Linear(8, 6)
    x = torch.randn(3, 8)
    reports = [torchcost.analyze(layer, x) for _ in range(3)]
    assert list(leaves.TRUSTED.values()) == [False]
    assert fresh_trust == {"direct": 0, "checked": 1}
    assert [r.macs for r in reports] == [3 * 6 * 8] * 3  # 3x6 outputs, 8 MACs each: 144


def test_a_wrong_plan_is_never_used(monkeypatch: pytest.MonkeyPatch, fresh_trust: dict[str, int]) -> None:
    planner = leaves._PLANNERS[nn.Conv2d]

    def off_by_one(m: Any, x: torch.Tensor) -> Any:  # plans a stride the module does not have
        kind, ((func, args, kwargs, made),) = planner(m, x)
        return kind, ((func, (*args[:3], [s + 1 for s in args[3]], *args[4:]), kwargs, made),)

    monkeypatch.setitem(leaves._PLANNERS, nn.Conv2d, off_by_one)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 10, 12)
    reports = [torchcost.analyze(conv, x) for _ in range(3)]
    assert list(leaves.TRUSTED.values()) == [False]
    assert fresh_trust == {"direct": 0, "checked": 1}
    assert [r.macs for r in reports] == [51_840] * 3  # 2*8*10*12 * 3*3*3, as above


def test_a_channels_last_input_is_another_kind_of_call(fresh_trust: dict[str, int]) -> None:
    # a 1x1 mean of a channels-last input is made channels-last again (one more op): it must not take the plan
    # trusted for a contiguous input
    pool = nn.AdaptiveAvgPool2d(1)
    x = torch.randn(2, 3, 5, 5)
    wide = x.to(memory_format=torch.channels_last)
    with leaves.off():
        expected = torchcost.analyze(pool, wide).to_dict()
    torchcost.analyze(pool, x)
    torchcost.analyze(pool, x)
    assert torchcost.analyze(pool, wide).to_dict() == expected
    assert torchcost.analyze(pool, wide).to_dict() == expected


def test_an_in_place_activation_of_a_buffer_is_undone(fresh_trust: dict[str, int]) -> None:
    class OnBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.tensor([-1.0, 2.0, -3.0]))
            self.act = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.act(self.table)

    model = OnBuffer()
    for _ in range(3):
        torchcost.analyze(model, torch.zeros(3))
        assert torch.equal(model.table, torch.tensor([-1.0, 2.0, -3.0]))
    assert fresh_trust["direct"] == 2  # 3 analyses, the first one checking the plan under the modes


def test_a_failing_direct_leaf_names_the_layer_and_turns_the_modes_back_on(fresh_trust: dict[str, int]) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    torchcost.analyze(model, torch.randn(1, 3, 8, 8))
    with pytest.raises(torchcost.ShapeError, match=r"'0'.*Conv2d") as info:
        torchcost.analyze(model, torch.randn(1, 5, 8, 8))
    assert "5" in str(info.value)
    assert _modes_on()
    assert torchcost.analyze(model, torch.randn(1, 3, 8, 8)).macs == 4 * 6 * 6 * 27  # 4 maps of 6x6, 3*3*3 each


def test_modes_come_back_when_a_post_hook_never_runs() -> None:
    # torch runs always-called hooks after an Exception only: a BaseException leaves the frame behind, and the
    # Recording must turn the modes back on as it comes off
    conv = nn.Conv2d(1, 1, 1)
    x = torch.randn(1, 1, 2, 2)
    kind = leaves._conv(conv, x)
    assert kind is not None
    leaves.TRUSTED[(nn.Conv2d, nn.Conv2d.forward, *kind[0])] = ((),)  # as if checked before
    with torch.no_grad(), Recording(conv, FormulaRegistry(), direct=True) as rec:
        rec.scope._pre(conv, (x,))  # the pre-hook of a call whose post-hook never comes
        call = rec.scope.stack[-1][3]
        assert call is not None and call.guards is not None
        assert not torch._C._is_torch_function_enabled()
    assert _modes_on()


def test_an_outer_mode_sees_every_op(fresh_trust: dict[str, int]) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
    x = torch.randn(2, 3, 10, 12)
    torchcost.analyze(model, x)
    seen: list[str] = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Spy():
        torchcost.analyze(model, x)
    assert {"aten.convolution.default", "aten.native_batch_norm.default", "aten.relu.default"} <= set(seen)
    with FlopCounterMode(display=False) as counter:
        torchcost.analyze(model, x)
    assert counter.get_total_flops() == 2 * 51_840  # the convolution of the test above, 2 FLOPs a MAC
    assert fresh_trust["direct"] == 0


def test_a_replaced_functional_is_another_kind_of_call(monkeypatch: pytest.MonkeyPatch,
                                                      fresh_trust: dict[str, int]) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    x = torch.randn(2, 4)
    torchcost.analyze(model, x)
    torchcost.analyze(model, x)
    assert fresh_trust == {"direct": 2, "checked": 2}  # the Linear and the ReLU: checked once, then past the modes

    def doubled(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:  # a replacement doing one more op
        return torch.relu(input) * 2

    monkeypatch.setattr(F, "relu", doubled)
    report = torchcost.analyze(model, x)
    assert fresh_trust == {"direct": 3, "checked": 3}  # the Linear past the modes; another F.relu: checked again
    # relu's 8 FLOPs (one a value of 2x4) and the wrapper's multiply, 8 more
    assert [(op.op, op.flops) for op in report.module("1").ops] == [("aten::mul", 8), ("aten::relu", 8)]


def test_training_steps_and_meta_runs_plan_nothing(fresh_trust: dict[str, int]) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    for _ in range(2):
        torchcost.analyze(model, x, mode="train")
        torchcost.analyze(model, x, device="meta")
    assert fresh_trust == {"direct": 0, "checked": 0}


def test_a_cuda_batch_norm_is_planned_as_cudnn_where_torch_picks_cudnn(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA, ``_batch_norm_impl_index`` takes cuDNN for a float32 eval batch norm with weight, bias and running
    statistics, 3+ dims, a batch of at most 65,535, cuDNN on and eps >= 1e-5: one ``cudnn_batch_norm`` whose output
    tuple starts with the module's. Anything else runs under the modes. (The plan itself was checked against the ops
    an H200 ran, as every plan is on its first call: docs/benchmarks.md, "On a GPU machine".) Fake tensors claim cuda
    here, so no GPU is needed to read the planner (admitted as plain tensors for this test alone)."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    monkeypatch.setattr(leaves, "_PLAIN", leaves._PLAIN | {FakeTensor})
    with FakeTensorMode():
        bn = nn.BatchNorm2d(4, device="cuda").eval()
        x = torch.empty(2, 4, 5, 5, device="cuda")
        kind, steps = leaves._PLANNERS[nn.BatchNorm2d](bn, x)  # type: ignore[misc]
        assert [s[0] for s in steps] == [torch.ops.aten.cudnn_batch_norm.default] and steps[0][3] is leaves.Out.TUPLE
        assert steps[0][1][5:] == (False, 0.1, 1e-5)  # eval, the momentum, eps
        assert "cudnn" in kind
        for odd in (nn.BatchNorm2d(4, affine=False, device="cuda"), nn.BatchNorm2d(4, eps=1e-6, device="cuda")):
            assert leaves._PLANNERS[nn.BatchNorm2d](odd.eval(), x) is None
        assert leaves._PLANNERS[nn.BatchNorm2d](bn, x.to(torch.bfloat16)) is None
        assert leaves._PLANNERS[nn.BatchNorm1d](nn.BatchNorm1d(4, device="cuda").eval(),
                                                torch.empty(2, 4, device="cuda")) is None  # 2-D: another path
        before = torch.backends.cudnn.enabled
        torch.backends.cudnn.enabled = False
        try:
            assert leaves._PLANNERS[nn.BatchNorm2d](bn, x) is None
        finally:
            torch.backends.cudnn.enabled = before
