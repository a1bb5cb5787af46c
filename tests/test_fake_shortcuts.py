"""Ops of a fake twin answered without the fake tensor mode (collect/fakeops.py, issue 16): each answer is the fake
mode's own, a call the fake mode would refuse is never answered, and a training step's report is the same with the
shortcuts off."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import torchcost
from torchcost.collect import fakeops, tape
from torchcost.collect.fakeops import BASE_LAYOUT, MISS, FakeShortcuts, FakeWrapper
from torchcost.collect.storages import storage_of
from torchcost.errors import ModelError
from torchcost.parallel.config import Parallel

aten = torch.ops.aten


@pytest.fixture()
def mode() -> Any:
    with FakeTensorMode() as fake_mode:
        yield fake_mode


@pytest.fixture(autouse=True)
def nothing_learned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no answer learned (they are kept for the process)."""
    monkeypatch.setattr(fakeops, "_LEARNED", {})


def _asked(short: FakeShortcuts, func: Any, *args: Any, **kwargs: Any) -> Any:
    """What the dispatch mode does: the shortcut's answer, else the op run (through the fake mode) and learned."""
    out = short.answer(func, args, kwargs)
    if out is MISS:
        out = func(*args, **kwargs)
        short.learn(out)
    return out


def test_in_place_op_is_answered_once_the_fake_mode_accepted_its_like(mode: Any) -> None:
    short = FakeShortcuts()
    a, b, c = torch.empty(4, 3), torch.empty(4, 3), torch.empty(3)
    assert short.answer(aten.add_.Tensor, (a, b), {"alpha": 2}) is MISS  # not seen yet
    assert aten.add_.Tensor(a, b, alpha=2) is a
    short.learn()
    assert short.answer(aten.add_.Tensor, (a, c), {"alpha": 3}) is a  # (3,) broadcasts into (4, 3)
    assert short.answer(aten.add_.Tensor, (a, b), {"alpha": 0.5}) is MISS  # a float where an int was
    assert short.answer(aten.add_.Tensor, (a, b), {}) is MISS  # other keywords: another kind of call


@pytest.mark.parametrize("case", ["shape", "dtype", "device", "overlap", "expanded", "constant", "real", "int"])
def test_in_place_op_the_fake_mode_would_refuse_is_not_answered(mode: Any, case: str) -> None:
    short = FakeShortcuts()
    a = torch.empty(4, 3)
    _asked(short, aten.mul_.Tensor, a, torch.empty(4, 3))  # learned: float32 cpu x float32 cpu
    written, other = a, torch.empty(4, 3)
    if case == "shape":
        other = torch.empty(4, 4)  # does not broadcast into (4, 3)
    elif case == "dtype":
        other = torch.empty(4, 3, dtype=torch.float64)
    elif case == "device":
        other = torch.empty(4, 3, device="meta")  # (a fake tensor claiming another device)
    elif case == "overlap":
        base = torch.empty(5, 3)
        written, other = base[1:], base[:4]  # one storage, partly overlapping
    elif case == "expanded":
        written = torch.empty(1, 3).expand(4, 3)  # written elements share memory
    elif case == "constant":
        written = mode.from_tensor(torch.ones(4, 3), static_shapes=True)
        written.constant = torch.ones(4, 3)
    elif case == "real":
        with torch.utils._python_dispatch._disable_current_modes():
            other = torch.ones(4, 3)
    elif case == "int":
        written, other = torch.empty(4, 3, dtype=torch.int64), torch.empty(4, 3, dtype=torch.int64)
    assert short.answer(aten.mul_.Tensor, (written, other), {}) is MISS


def test_a_refused_call_is_not_learned(mode: Any) -> None:
    short = FakeShortcuts()
    a, bad = torch.empty(4, 3), torch.empty(4, 3, dtype=torch.float64)
    assert short.answer(aten.lerp_.Scalar, (a, bad, 0.5), {}) is MISS
    with pytest.raises(RuntimeError):
        aten.lerp_.Scalar(a, bad, 0.5)  # lerp wants one dtype: the call raised, nothing is learned
    assert short.answer(aten.lerp_.Scalar, (a, bad, 0.5), {}) is MISS


def test_other_ops_are_passed_on(mode: Any) -> None:
    short = FakeShortcuts()
    a, b = torch.empty(4, 3), torch.empty(4, 3)
    for func, args, *more in ((aten.native_dropout.default, (a, 0.5, True)), (aten.copy_.default, (a, b)),
                              (aten.t_.default, (a,)), (aten.uniform_.default, (a, 0.0, 1.0), {"generator": None}),
                              (aten.clamp_.default, (a, 0.0))):
        kwargs = more[0] if more else {}
        _asked(short, func, *args, **kwargs)
        assert short.answer(func, args, kwargs) is MISS, func


def test_a_random_fill_is_the_tensor_itself_once_the_fake_mode_accepted_its_like(mode: Any) -> None:
    # dropout on the CPU is ``empty_like(x).bernoulli_(1 - p)``: on a fake tensor the fake mode runs the meta kernel,
    # which draws nothing, and returns the tensor itself; so does the shortcut, once the fake mode accepted the kind
    short = FakeShortcuts()
    a, b = torch.empty(4, 3), torch.empty(2, 5)
    state = torch.get_rng_state()
    assert short.answer(aten.bernoulli_.float, (a, 0.9), {}) is MISS  # not seen yet
    assert aten.bernoulli_.float(a, 0.9) is a
    short.learn()
    assert short.answer(aten.bernoulli_.float, (b, 0.5), {}) is b  # another shape, another p: the same kind
    assert _asked(short, aten.uniform_.default, a, -1.0, 1.0) is a
    assert short.answer(aten.uniform_.default, (b, 0.0, 2.0), {}) is b
    with torch.utils._python_dispatch._disable_current_modes():
        assert torch.equal(torch.get_rng_state(), state)  # no real number was drawn
    constant = mode.from_tensor(torch.ones(4, 3), static_shapes=True)
    constant.constant = torch.ones(4, 3)  # (one carrying its value: the fake mode's own way)
    assert short.answer(aten.bernoulli_.float, (constant, 0.5), {}) is MISS
    assert short.answer(aten.bernoulli_.float, (a.to(torch.float64), 0.5), {}) is MISS  # another dtype


@pytest.mark.parametrize(("func", "extra"), [
    (aten.add.Tensor, lambda: (torch.empty(6),)), (aten.mm.default, lambda: (torch.empty(6, 2),)),
    (aten.sqrt.default, tuple), (aten.sum.dim_IntList, lambda: ([1], True)),
    (aten.native_layer_norm.default, lambda: ([6], None, None, 1e-5)), (aten.var_mean.correction, lambda: ([0],))])
def test_a_fresh_op_is_made_as_the_fake_modes_cache_makes_it(mode: Any, func: Any, extra: Any) -> None:
    short = FakeShortcuts()
    x = torch.empty(4, 6).t().contiguous().t()  # strides (1, 4): kept by pointwise outputs
    call = (x, *extra())
    assert short.answer(func, call, {}) is MISS
    first = func(*call)
    short.learn(first)
    again = short.answer(func, call, {})
    assert again is not MISS
    made = func(*call)  # the fake mode's own answer, from its cache
    for ours, theirs in zip(again if isinstance(again, tuple) else (again,),
                            made if isinstance(made, tuple) else (made,)):
        assert _meta(ours)[:-2] == _meta(theirs)[:-2]
        assert ours.untyped_storage().nbytes() == theirs.untyped_storage().nbytes()
        assert ours.untyped_storage()._cdata not in {x.untyped_storage()._cdata, theirs.untyped_storage()._cdata}


def test_a_fresh_op_is_keyed_by_everything_the_fake_mode_keys(mode: Any) -> None:
    short = FakeShortcuts()
    a, b = torch.empty(4, 6), torch.empty(4, 6)
    short.answer(aten.add.Tensor, (a, b), {"alpha": 2})
    short.learn(aten.add.Tensor(a, b, alpha=2))
    assert short.answer(aten.add.Tensor, (torch.empty(4, 6), torch.empty(4, 6)), {"alpha": 2}) is not MISS
    assert short.answer(aten.add.Tensor, (a, b), {"alpha": 3}) is MISS  # scalars are keyed by value
    assert short.answer(aten.add.Tensor, (a, b), {"alpha": 2.0}) is MISS  # a float where an int was
    assert short.answer(aten.add.Tensor, (a, b.t().contiguous().t()), {"alpha": 2}) is MISS  # other strides
    assert short.answer(aten.add.Tensor, (a, torch.empty(4, 6, dtype=torch.float64)), {"alpha": 2}) is MISS
    assert short.answer(aten.add.Tensor, (a, b.requires_grad_()), {"alpha": 2}) is MISS  # grad flag
    counter = torch.tensor(2.0)
    assert short.answer(aten.add.Tensor, (counter, counter), {}) is MISS  # carries a value: the fake mode's path
    with torch.utils._python_dispatch._disable_current_modes():
        real = torch.empty(4, 6)
    assert short.answer(aten.add.Tensor, (a, real), {"alpha": 2}) is MISS


def test_a_calls_price_key_tells_apart_what_its_price_reads(mode: Any) -> None:
    # the key the dispatch mode's memo of prices is looked up by (collect/ops.py _PRICED): the op, the metadata, which
    # tensor is which (x * x reads x once), the numbers' values; tensors of the same metadata share it
    short = FakeShortcuts()

    def key(func: Any, *args: Any, **kwargs: Any) -> Any:
        short.answer(func, args, kwargs)
        return short.priced

    x, g, h = (torch.zeros(4, 3) for _ in range(3))
    assert key(aten.mul.Tensor, g, h) == key(aten.mul.Tensor, h, x) is not None
    assert key(aten.mul.Tensor, g, g) != key(aten.mul.Tensor, g, h)
    assert key(aten.mul.Tensor, g, h) != key(aten.mul.Tensor, g, torch.zeros(3))  # a broadcast operand
    addcmul = aten.addcmul_.default  # (in place: answered once the fake mode accepted its like)
    assert key(addcmul, x, g, h) == key(addcmul, g, h, x) is not None
    assert key(addcmul, x, g, g) != key(addcmul, x, g, h)  # Adam's exp_avg_sq.addcmul_(grad, grad): grad read once
    assert key(addcmul, x, g, h, value=2.0) != key(addcmul, x, g, h, value=3.0)
    assert key(addcmul, x, g, h, value=2) != key(addcmul, x, g, h, value=2.0)  # an int where a float was
    assert key(addcmul, x, g, torch.zeros(3)) != key(addcmul, x, g, h)
    assert key(aten.mul_.Tensor, x, x) != key(aten.mul_.Tensor, x, g)  # the written tensor read again
    assert key(aten.t.default, x) is None  # a view: no price


def test_a_twins_alike_calls_are_priced_once_and_each_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchcost.collect import ops as ops_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    x = torch.randn(2, 8)
    monkeypatch.setattr(fakeops.FakeShortcuts, "answer", lambda self, func, args, kwargs: MISS)
    plain = torchcost.analyze(model, x, mode="train").to_dict()  # (no keys: every call priced)
    monkeypatch.undo()
    priced: dict[Any, Any] = {}
    monkeypatch.setattr(ops_module, "_PRICED", priced)
    with tape.off():  # (the optimizer's loop runs, its calls keyed by the shortcuts, not replayed: collect/tape.py)
        report = torchcost.analyze(model, x, mode="train")
    assert report.to_dict() == plain
    adam = {op.op: op for op in report.phase("optimizer").ops}
    # three 8x8 weights and three biases of 8: 3 * (64 + 8) = 216 elements, each read in exp_avg_sq (4 bytes), in
    # grad (4 bytes, once although passed twice) and written in exp_avg_sq (4 bytes): 216 * 12 = 2,592 bytes; each
    # element grad * grad * (1 - beta2) + exp_avg_sq: 3 FLOPs, 648
    assert (adam["aten::addcmul_"].calls, adam["aten::addcmul_"].bytes, adam["aten::addcmul_"].flops) == (6, 2_592, 648)
    # the six addcmul_ calls are of two kinds (a weight's, a bias's): two prices worked out, six calls counted
    assert sum(1 for k in priced if type(k[0]) is tuple and k[0][0] is aten.addcmul_.default) == 2
    backward = report.phase("backward")
    # forward: 3 addmm of 2x8 by 8x8, 2*8*8 = 128 MACs each: 384; backward: 3 weight gradients (8x2 by 2x8, 128) and
    # the input gradients of the last two layers (the first layer's input needs none): 5 * 128 = 640
    assert (report.macs, backward.macs, backward.input_grad_macs, backward.weight_grad_macs) == (384, 640, 256, 384)


def test_a_fresh_op_with_an_undefined_output_is_made_as_the_fake_mode_makes_it(mode: Any) -> None:
    # convolution_backward of a first layer without a bias: only the weight's gradient is asked for (output_mask),
    # the other two outputs are undefined (None)
    short = FakeShortcuts()
    grad, x, w = torch.empty(1, 4, 6, 6), torch.empty(1, 3, 8, 8), torch.empty(4, 3, 3, 3)
    call = (grad, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False])
    assert short.answer(aten.convolution_backward.default, call, {}) is MISS
    short.learn(aten.convolution_backward.default(*call))
    again = short.answer(aten.convolution_backward.default, call, {})
    made = aten.convolution_backward.default(*call)  # the fake mode's own answer
    assert type(again) is tuple and again[0] is None and again[2] is None and made[0] is None and made[2] is None
    assert _meta(again[1])[:-2] == _meta(made[1])[:-2] and tuple(again[1].shape) == (4, 3, 3, 3)


def test_a_factory_is_made_in_the_fake_mode_below() -> None:
    # no tensor among its arguments (batch norm's empty reserve in training, a mask of ones): made in the fake mode
    # the shortcuts sit on, as that mode made the first call of its key
    calls = [(aten.empty.memory_format, ([0],), {"dtype": torch.uint8, "layout": torch.strided,
                                                 "device": torch.device("cpu")}),
             (aten.ones.default, ([3, 5],), {"dtype": torch.bool, "device": torch.device("cpu")}),
             (aten.zeros.default, ([2, 3],), {})]
    with FakeTensorMode() as fake_mode:
        short = FakeShortcuts()
        for func, args, kwargs in calls:
            assert short.answer(func, args, kwargs) is MISS
            short.learn(func(*args, **kwargs))
            again = short.answer(func, args, kwargs)
            made = func(*args, **kwargs)  # the fake mode's own answer
            assert again is not MISS and again.fake_mode is fake_mode and again.constant is None
            assert _meta(again)[:-2] == _meta(made)[:-2]
        assert short.answer(aten.zeros.default, ([2, 4],), {}) is MISS  # another size: another key
    meta = FakeShortcuts()  # no fake mode below (a meta twin): a factory is passed on
    assert meta.answer(aten.zeros.default, ([2, 3],), {}) is MISS


def test_a_fresh_op_of_meta_tensors_a_fake_mode_takes_is_made_as_it_makes_it() -> None:
    # a simulated rank's twin (parallel/runner.py): to_empty of the sharded meta parameters under a fake mode that
    # takes plain tensors. A _like constructor is made as the fake mode's handler makes it, from the first call of its
    # key on, without its converter (which would import torch._dynamo to name the input); other fresh ops of plain
    # meta tensors once through the fake mode for their key
    params = [torch.empty(4, 6, device="meta", requires_grad=True) for _ in range(2)]
    other = torch.empty(4, 6, device="meta")  # (no grad flag: another key)
    call = (aten.empty_like.default, {"device": torch.device("cpu")})
    with FakeTensorMode(allow_non_fake_inputs=True) as fake_mode:
        short = FakeShortcuts()
        first = short.answer(call[0], (params[0],), call[1])
        again = short.answer(call[0], (params[1],), call[1])
        made = call[0](params[1], **call[1])  # the fake mode's own answer
        for answered in (first, again):
            assert type(answered) is type(made) and answered.fake_mode is fake_mode and answered.constant is None
            # (4, 6) float32 on the cpu, strides (6, 1), 96 bytes of its own, no grad flag (empty_like makes a new one)
            assert _meta(answered)[:-2] == _meta(made)[:-2] and answered.shape == (4, 6)
            assert answered.stride() == (6, 1) and answered.device == torch.device("cpu")
            assert answered.untyped_storage().nbytes() == 4 * 6 * 4 and not answered.requires_grad
        assert again.untyped_storage()._cdata != params[1].untyped_storage()._cdata
        assert short.answer(aten.add.Tensor, (other, other), {}) is MISS  # (not a _like constructor: learned)
        mixed = (aten.add.Tensor, (params[0], first), {})  # a plain meta tensor beside a fake one: passed on
        assert short.answer(*mixed) is MISS
    with FakeTensorMode():  # a fake mode that refuses plain tensors: passed on, for it to refuse
        assert FakeShortcuts().answer(call[0], (params[1],), call[1]) is MISS


def test_a_like_constructor_of_a_meta_tensor_is_made_as_the_fake_mode_makes_it() -> None:
    # the input's strides are kept where it is dense (preserve_format): a (6, 4) tensor transposed has strides (1, 4);
    # a view with gaps (every other column of (4, 12)) gets contiguous strides; no device asked: the input's (meta)
    dense = torch.empty(6, 4, device="meta").t()
    gaps = torch.empty(4, 12, device="meta")[:, ::2]
    calls = [(aten.zeros_like.default, (dense,), {"dtype": torch.float16, "device": torch.device("cpu")}),
             (aten.empty_like.default, (gaps,), {"device": torch.device("cpu")}),
             (aten.ones_like.default, (dense,), {}),
             (aten.full_like.default, (dense, 2.5), {"device": torch.device("cpu")})]
    strides = [(1, 4), (6, 1), (1, 4), (1, 4)]
    with FakeTensorMode(allow_non_fake_inputs=True):
        short = FakeShortcuts()
        for (func, args, kwargs), stride in zip(calls, strides, strict=True):
            answered = short.answer(func, args, kwargs)
            made = func(*args, **kwargs)  # the fake mode's own answer
            assert type(answered) is type(made) and answered.fake_device == made.fake_device
            assert _meta(answered)[:-2] == _meta(made)[:-2] and answered.stride() == stride == made.stride()
            assert answered.dtype == made.dtype and answered.constant is None


def test_a_profiler_range_runs_its_kernel_past_the_fake_mode(mode: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.profiler.record_function's ops (FSDP2 marks each unshard and reduce with one): no tensor in or out
    enter, leave = torch.ops.profiler._record_function_enter_new.default, \
        torch.ops.profiler._record_function_exit._RecordFunction
    short = FakeShortcuts()
    seen: list[Any] = []
    dispatch = FakeTensorMode.__torch_dispatch__
    monkeypatch.setattr(FakeTensorMode, "__torch_dispatch__", lambda *a, **k: seen.append(a[1]) or dispatch(*a, **k))
    started = short.answer(enter, ("unshard", None), {})
    assert type(started) is type(enter("unshard", None))  # (the fake mode's answer, a torch.ScriptObject)
    assert short.answer(leave, (started,), {}) is None
    assert seen == [enter]  # (only the comparison's own call reached the fake mode)


class _Passing(torch.utils._python_dispatch.TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


def test_a_profiler_range_under_another_mode_is_passed_on(mode: Any) -> None:
    enter = torch.ops.profiler._record_function_enter_new.default
    with _Passing():
        between = FakeShortcuts()  # (a mode of the user's between the fake mode and the collectors': it sees it)
    with torch.utils._python_dispatch._disable_current_modes(), _Passing():
        alone = FakeShortcuts()  # (a user's mode alone below, as around a meta run: it sees it)
    assert between.answer(enter, ("x", None), {}) is MISS and alone.answer(enter, ("x", None), {}) is MISS


def test_a_fresh_op_beside_a_tensor_carrying_its_value_is_the_fake_modes_answer(mode: Any) -> None:
    # a model's torch.tensor([]) (a fake tensor carrying its value) concatenated with an activation: the fake mode
    # runs it on metadata alone (it computes on values only when every tensor carries one) but does not cache it
    short = FakeShortcuts()
    empty, k = torch.tensor([]), torch.empty(1, 2, 3, 4)
    assert empty.constant is not None and k.constant is None
    call = ([empty, k], -2)
    assert short.answer(aten.cat.default, call, {}) is MISS
    short.learn(aten.cat.default(*call))
    again = short.answer(aten.cat.default, call, {})
    assert again is not MISS
    made = aten.cat.default(*call)  # the fake mode's own answer
    assert _meta(again)[:-2] == _meta(made)[:-2] and again.constant is None
    assert again.untyped_storage()._cdata not in {k.untyped_storage()._cdata, made.untyped_storage()._cdata}
    assert short.answer(aten.cat.default, ([torch.empty(0), k], -2), {}) is MISS  # the mark is in the key
    both = ([torch.tensor([1.0]), torch.tensor([2.0])], 0)
    assert short.answer(aten.cat.default, both, {}) is MISS  # every tensor carries its value: the fake mode's own
    short.learn(aten.cat.default(*both))  # (its answer carries a value too: not learned)
    assert short.answer(aten.cat.default, both, {}) is MISS


def test_answers_learned_in_one_run_serve_the_next_under_the_same_settings() -> None:
    # each run has a FakeShortcuts of its own, made when the run starts, under its twin's fake mode
    def asked_twice(make_mode: Any) -> tuple[Any, Any]:
        with make_mode() as fake_mode:
            x, w = torch.empty(4, 6), torch.empty(6, 2)
            first = FakeShortcuts()
            assert first.answer(aten.mm.default, (x, w), {}) is MISS
            first.learn(aten.mm.default(x, w))
            second = FakeShortcuts()  # the next run
            return second.answer(aten.mm.default, (x, w), {}), fake_mode

    again, fake_mode = asked_twice(FakeTensorMode)
    assert again is not MISS and _meta(again)[1:6] == ((4, 2), (2, 1), 0, torch.float32, torch.device("cpu"))
    assert again.fake_mode is fake_mode
    before = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(not before)  # a backend setting: other tables
    try:
        with FakeTensorMode():
            assert FakeShortcuts().answer(aten.mm.default, (torch.empty(4, 6), torch.empty(6, 2)), {}) is MISS
    finally:
        torch._C._set_mkldnn_enabled(before)
    with FakeTensorMode(allow_fallback_kernels=False):  # another kind of fake mode: other tables
        assert FakeShortcuts().answer(aten.mm.default, (torch.empty(4, 6), torch.empty(6, 2)), {}) is MISS
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    fakeops._LEARNED.clear()
    again, _ = asked_twice(lambda: FakeTensorMode(shape_env=ShapeEnv()))  # symbolic shapes: one run's tables only
    assert again is MISS and not fakeops._LEARNED


def test_a_fresh_op_on_meta_tensors_is_made_as_its_meta_kernel_made_it() -> None:
    short = FakeShortcuts()  # (no mode below: meta tensors are answered)
    a, b = torch.empty(4, 6, device="meta"), torch.empty(6, device="meta", dtype=torch.float64)
    assert short.answer(aten.mul.Tensor, (a, b), {}) is MISS
    first = aten.mul.Tensor(a, b)  # the meta kernel: a Python reference for a pointwise op
    short.learn(first)
    again = short.answer(aten.mul.Tensor, (a, b), {})
    assert type(again) is torch.Tensor and again is not first
    assert (again.shape, again.stride(), again.dtype, again.device, again.requires_grad) == \
        (first.shape, first.stride(), first.dtype, first.device, first.requires_grad) == \
        ((4, 6), (6, 1), torch.float64, torch.device("meta"), False)  # (4, 6) x (6,) broadcast; float32 x float64
    # 4 * 6 elements of float64, 8 bytes each = 192
    assert again.untyped_storage().nbytes() == first.untyped_storage().nbytes() == 4 * 6 * 8
    with torch.utils._python_dispatch._disable_current_modes():
        real = torch.empty(6)
    assert short.answer(aten.mul.Tensor, (a, real), {}) is MISS  # a real tensor beside a meta one


def _on_meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_an_in_place_foreach_op_on_meta_tensors_is_answered_once_its_kernel_accepted_its_like() -> None:
    # AdamW's foreach step on a meta twin: _foreach_lerp_(exp_avgs, grads, 1 - beta1), whose meta kernel is a Python
    # reference run per element
    short = FakeShortcuts()
    avgs, grads = [_on_meta(4, 6), _on_meta(6)], [_on_meta(4, 6), _on_meta(6)]
    assert short.answer(aten._foreach_lerp_.Scalar, (avgs, grads, 0.1), {}) is MISS  # not seen yet
    assert aten._foreach_lerp_.Scalar(avgs, grads, 0.1) is None
    short.learn(None)
    more = [_on_meta(2, 2), _on_meta(5), _on_meta(3)]
    more_grads = [_on_meta(2), _on_meta(5), _on_meta(3)]  # (2,) broadcasts into (2, 2)
    assert short.answer(aten._foreach_lerp_.Scalar, (more, more_grads, 0.5), {}) is None  # (the kernel returns ())
    assert [tuple(t.shape) for t in more] == [(2, 2), (5,), (3,)]  # (in place: nothing about them changes)
    assert short.answer(aten._foreach_lerp_.Scalar, (more, more_grads, 1), {}) is MISS  # an int where a float was
    doubles = [_on_meta(3, dtype=torch.float64)]
    assert short.answer(aten._foreach_lerp_.Scalar, (doubles, [_on_meta(3, dtype=torch.float64)], 0.5), {}) is MISS


@pytest.mark.parametrize("case", ["shape", "dtype", "overlap", "expanded", "real", "length", "tensor"])
def test_an_in_place_foreach_op_its_kernel_may_refuse_is_not_answered(case: str) -> None:
    short = FakeShortcuts()
    written, other = [_on_meta(4, 3), _on_meta(2)], [_on_meta(4, 3), _on_meta(2)]
    _asked(short, aten._foreach_mul_.List, written, other)  # learned: float32 x float32 on meta
    args: tuple[Any, ...] = (written, other)
    func = aten._foreach_mul_.List
    if case == "shape":
        args = (written, [_on_meta(4, 3), _on_meta(3)])  # (3,) does not broadcast into (2,)
    elif case == "dtype":
        args = (written, [_on_meta(4, 3), _on_meta(2, dtype=torch.float16)])
    elif case == "overlap":
        args = (written, [written[0][:1], _on_meta(2)])  # a view of the written tensor's storage
    elif case == "expanded":
        args = ([_on_meta(3).expand(4, 3), _on_meta(2)], other)  # a written tensor of overlapping elements
    elif case == "real":
        with torch.utils._python_dispatch._disable_current_modes():
            args = (written, [_on_meta(4, 3), torch.empty(2)])
    elif case == "length":
        args = (written, other[:1])
    elif case == "tensor":
        func, args = aten._foreach_mul_.Tensor, (written, _on_meta(1))  # one tensor for every element: not answered
    assert short.answer(func, args, {}) is MISS


def test_a_foreach_op_making_new_tensors_on_meta_is_made_as_its_meta_kernel_made_it() -> None:
    short = FakeShortcuts()
    squares = [_on_meta(4, 6), _on_meta(3, dtype=torch.float16)]
    assert short.answer(aten._foreach_sqrt.default, (squares,), {}) is MISS
    first = aten._foreach_sqrt.default(squares)
    short.learn(first)
    again = short.answer(aten._foreach_sqrt.default, ([_on_meta(4, 6), _on_meta(3, dtype=torch.float16)],), {})
    assert type(again) is list and len(again) == 2
    for made, ran in zip(again, first, strict=True):
        assert type(made) is torch.Tensor and made is not ran
        assert (made.shape, made.stride(), made.dtype, made.device, made.requires_grad) == \
            (ran.shape, ran.stride(), ran.dtype, ran.device, ran.requires_grad)
    assert [(tuple(t.shape), t.stride(), t.dtype) for t in again] == [((4, 6), (6, 1), torch.float32),
                                                                      ((3,), (1,), torch.float16)]
    # each on a storage of its own: 4 * 6 float32 = 96 bytes, 3 float16 = 6 bytes
    assert [t.untyped_storage().nbytes() for t in again] == [4 * 6 * 4, 3 * 2]
    assert again[0].untyped_storage()._cdata != again[1].untyped_storage()._cdata
    # an element of a shape not seen: the whole call runs again
    assert short.answer(aten._foreach_sqrt.default, ([_on_meta(4, 6), _on_meta(5)],), {}) is MISS


def test_a_foreach_op_making_new_tensors_is_keyed_by_each_elements_tensors() -> None:
    short = FakeShortcuts()
    ints, floats = [torch.empty(2, 3, device="meta", dtype=torch.long)], [_on_meta(2, 3)]
    _asked(short, aten._foreach_add.List, ints, floats)
    out = short.answer(aten._foreach_add.List, ([torch.empty(2, 3, device="meta", dtype=torch.long)], [_on_meta(2, 3)]),
                       {})
    assert [t.dtype for t in out] == [torch.float32]  # int64 + float32: float32, as the kernel gave
    # the same tensor in both lists is another key (a kernel may read it once)
    both = [_on_meta(2, 3)]
    assert short.answer(aten._foreach_add.List, (both, both), {}) is MISS
    with pytest.raises(RuntimeError):  # (a kernel refusing the call raises, and nothing is learned)
        _asked(short, aten._foreach_add.List, [_on_meta(2, 3)], [_on_meta(4)])


def test_a_foreach_op_on_fake_tensors_is_the_fake_modes_answer(mode: Any) -> None:
    short = FakeShortcuts()
    avgs, grads = [torch.empty(4, 3), torch.empty(3)], [torch.empty(4, 3), torch.empty(3)]
    _asked(short, aten._foreach_addcmul_.Scalar, avgs, grads, grads, 0.01)
    assert short.answer(aten._foreach_addcmul_.Scalar, (avgs, grads, grads, 0.5), {}) is None
    first = _asked(short, aten._foreach_sqrt.default, avgs)
    again = short.answer(aten._foreach_sqrt.default, (avgs,), {})
    assert [type(t) for t in again] == [type(t) for t in first]
    assert [(t.shape, t.stride(), t.dtype, t.device) for t in again] == \
        [(t.shape, t.stride(), t.dtype, t.device) for t in first]
    counters = [fakeops.fake_constant(mode, torch.tensor(3.0), FakeWrapper().wrap)]
    assert short.answer(aten._foreach_add_.Scalar, (counters, 1), {}) is MISS  # (carrying values: the fake mode's)


class _Count(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_users_dispatch_mode_around_the_analysis_sees_every_op(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchcost.run import step

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).to(device)
    x = torch.randn(4, 8, device=device)
    monkeypatch.setattr(step, "_WARM", {})  # (both runs step the optimizer's warm-up, which the mode sees too)
    with _Count() as on:
        report = torchcost.analyze(model, x, mode="train").to_dict()
    monkeypatch.setattr(fakeops.FakeShortcuts, "answer", lambda self, func, args, kwargs: MISS)
    step._WARM.clear()
    with _Count() as off:
        assert torchcost.analyze(model, x, mode="train").to_dict() == report
    assert on.ops == off.ops and len(on.ops) > 50  # (a step of 3 layers: forward, backward, AdamW per parameter)


def test_device_and_item_are_the_fake_modes_answers(mode: Any) -> None:
    short = FakeShortcuts()
    a = torch.empty(2)
    assert short.answer(torch.ops.prim.device.default, (a,), {}) == a.device == torch.device("cpu")
    counter = torch.tensor(3.0)  # made from a Python number: a fake tensor carrying its value
    assert counter.constant is not None
    assert short.answer(aten._local_scalar_dense.default, (counter,), {}) == counter.item() == 3.0
    assert short.answer(aten._local_scalar_dense.default, (a[0],), {}) is MISS  # no value to read


def _meta(t: torch.Tensor) -> tuple[Any, ...]:
    return (type(t), t.shape, t.stride(), t.storage_offset(), t.dtype, t.device, t.requires_grad, t.constant,
            t.untyped_storage()._cdata, t.untyped_storage().nbytes())


@pytest.mark.parametrize(("func", "extra"), [
    (aten.t.default, ()), (aten.detach.default, ()), (aten.view.default, ([3, 8],)),
    (aten.expand.default, ([2, 4, 6],)), (aten.transpose.int, (0, 1)), (aten.permute.default, ([1, 0],)),
    (aten.slice.Tensor, (1, 1, 5, 2)), (aten.select.int, (0, 2)), (aten.unsqueeze.default, (0,)),
    (aten.as_strided.default, ([2, 2], [1, 6], 3)), (aten._unsafe_view.default, ([3, 8],)),
    (aten.split.Tensor, (4, 1)), (aten.split_with_sizes.default, ([1, 3], 0)), (aten.unbind.int, (1,))])
def test_a_view_is_what_the_fake_mode_makes(mode: Any, func: Any, extra: tuple[Any, ...]) -> None:
    short = FakeShortcuts()
    base = torch.empty(4, 6, requires_grad=True)
    # both below autograd, where the dispatch mode asks (autograd sets the outputs' grad flags above it)
    with torch._C._AutoDispatchBelowADInplaceOrView():
        answered = short.answer(func, (base, *extra), {})
        assert answered is not MISS
        made = func(base, *extra)  # through the fake mode
    if type(made) is list:  # (split and its like: a list of views)
        assert type(answered) is list and len(answered) == len(made) > 1
        assert [_meta(a) for a in answered] == [_meta(m) for m in made]
        answered = answered[-1]
    else:
        assert _meta(answered) == _meta(made)
    assert _meta(answered)[-2] == base.untyped_storage()._cdata  # a view: the base's storage


def _state(t: Any) -> tuple[Any, ...]:
    """Everything of a fake tensor the fake mode reads: type, attributes, dispatch keys and metadata."""
    return (type(t), {k: v for k, v in vars(t).items()}, torch._C._dispatch_keys(t), t.device, t.fake_device,
            t.requires_grad, t.shape, t.stride(), t.dtype)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_wrapped_output_is_what_the_constructor_makes(mode: Any, device: str) -> None:
    from torch._subclasses.fake_tensor import FakeTensor

    wrapper = FakeWrapper()
    on = torch.device(device if device == "cpu" else "cuda:0")
    elems = [torch.empty(3, 5, device="meta") for _ in range(3)]
    first = wrapper.wrap(mode, elems[0], on)  # the constructor's, and the state kept
    later = wrapper.wrap(mode, elems[1], on)  # made from that state
    assert wrapper._states[(id(mode), on)] is not False
    for made, elem in ((first, elems[0]), (later, elems[1])):
        assert _state(made) == _state(FakeTensor(mode, elem, on))


def test_wrap_switches_between_modes_and_devices_and_gives_each_tensor_its_own_attributes(mode: Any) -> None:
    from torch._subclasses.fake_tensor import FakeTensor

    wrapper = FakeWrapper()
    other = FakeTensorMode()
    cpu, cuda = torch.device("cpu"), torch.device("cuda:0")
    # the last (mode, device) pair is answered without the table: every switch must still give the constructor's
    # tensor of the mode and device asked, also for a device object equal to the last but not the same object
    asks = [(mode, cpu), (mode, cpu), (other, cpu), (mode, cuda), (mode, torch.device("cpu")), (other, cuda),
            (other, cuda), (mode, cpu)]
    made = []
    for asked_mode, on in asks:
        elem = torch.empty(3, device="meta")
        out = wrapper.wrap(asked_mode, elem, on)
        assert out.fake_mode is asked_mode
        assert _state(out) == _state(FakeTensor(asked_mode, elem, on))
        made.append(out)
    # each tensor's attribute table is its own: setting one (as the fake mode sets a constant or a memo on a tensor)
    # changes no other tensor, and not the state later tensors are made from
    made[1].constant = torch.tensor(1.0)
    made[1]._item_memo = 7
    assert all(t.constant is None and t._item_memo is None for i, t in enumerate(made) if i != 1)
    later = wrapper.wrap(mode, torch.empty(3, device="meta"), cpu)
    assert later.constant is None and later._item_memo is None


def test_wrap_takes_the_constructor_where_its_state_holds_a_value_of_the_tensors_own(mode: Any) -> None:
    from torch._subclasses.fake_tensor import FakeTensor

    wrapper = FakeWrapper()
    cpu = torch.device("cpu")
    made = FakeTensor(mode, torch.empty(2, device="meta"), cpu)
    assert wrapper._state_of(made, mode, torch.empty(2, device="meta")) is not False  # the constructor's own state
    made.tag = object()  # (as a later torch might give each tensor an id or a record of its own)
    assert wrapper._state_of(made, mode, torch.empty(2, device="meta")) is False


def test_a_wrapped_output_keeps_the_constructors_guard_on_the_data_pointer() -> None:
    strict = FakeTensorMode()
    strict._allow_unsafe_data_ptr_access = False  # (torch's default only warns, once a process)
    wrapper = FakeWrapper()
    cpu = torch.device("cpu")
    for _ in range(2):  # the constructor's tensor, then one made from its state
        made = wrapper.wrap(strict, torch.empty(2, device="meta"), cpu)
        with pytest.raises(RuntimeError, match="Cannot access data pointer"):
            made.data_ptr()
    assert wrapper._states[(id(strict), cpu)] is not False


def test_wrap_takes_the_constructor_in_the_fake_modes_debug_setting(mode: Any, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    from torch._subclasses.fake_tensor import FakeTensorConfig

    monkeypatch.setattr(FakeTensorConfig, "debug", True)
    wrapper = FakeWrapper()
    cpu = torch.device("cpu")
    wrapper.wrap(mode, torch.empty(2, device="meta"), cpu)
    assert wrapper._states[(id(mode), cpu)] is False
    made = wrapper.wrap(mode, torch.empty(2, device="meta"), cpu)
    assert hasattr(made, "_debug_trace")  # (the constructor's record, which a copied state would not have)


def test_a_view_the_kernel_refuses_raises_as_under_the_fake_mode(mode: Any) -> None:
    short = FakeShortcuts()
    base = torch.empty(4, 6)
    with pytest.raises(RuntimeError, match="invalid for input of size 24"):
        aten.view.default(base, [5, 5])
    with pytest.raises(RuntimeError, match="invalid for input of size 24"):
        short.answer(aten.view.default, (base, [5, 5]), {})
    assert short.answer(aten.view.dtype, (base, torch.int32), {}) is MISS  # a dtype argument
    assert short.answer(aten.reshape.default, (base, [6, 4]), {}) is MISS  # decomposes: may copy
    counter = torch.tensor(2.0)
    assert counter.constant is not None and short.answer(aten.unsqueeze.default, (counter, 0), {}) is MISS


def test_a_counter_step_is_the_fake_modes(mode: Any) -> None:
    short = FakeShortcuts()
    ours, theirs = torch.tensor(1.0), torch.tensor(1.0)  # optimizer step counters: fake tensors carrying a value
    assert short.answer(aten.add_.Tensor, (ours, 1), {}) is ours
    assert aten.add_.Tensor(theirs, 1) is theirs  # through the fake mode
    assert ours.item() == theirs.item() == 2.0  # 1.0 + 1, read from the value they carry
    assert short.answer(aten.add_.Tensor, (ours, torch.empty(())), {}) is MISS  # a tensor without a value


@pytest.mark.parametrize("value", [2.5, [1.5], 7])  # (7: int64, whose value the converter also keeps for item())
def test_a_lifted_constant_is_what_the_fake_mode_makes(mode: Any, value: Any) -> None:
    # torch.tensor(x) under the fake mode: lift_fresh of the real tensor torch made. The fake mode keeps a copy of a
    # one-element value and remembers it; the shortcut makes the same tensor without the converter's walk
    short = FakeShortcuts()
    with torch._C._DisableTorchDispatch():
        real, again = torch.tensor(value), torch.tensor(value)
    ours = short.answer(aten.lift_fresh.default, (real,), {})
    theirs = aten.lift_fresh.default(again)  # through the fake mode
    assert ours is not MISS
    # the same metadata and storage size, each on a storage of its own (the constants compared below)
    assert _meta(ours)[:7] + _meta(ours)[9:] == _meta(theirs)[:7] + _meta(theirs)[9:]
    assert ours.constant is not real  # a copy, as the fake mode's
    with torch._C._DisableTorchDispatch():
        assert torch.equal(ours.constant, theirs.constant)
    assert ours.item() == theirs.item() == torch.tensor(value).item()
    assert ours.item_memo == theirs.item_memo == (7 if value == 7 else None)  # (item()'s memo: int64's alone)
    converter = mode.fake_tensor_converter
    assert converter._get_memo(ours.constant) is ours  # an in-place op on the value hands back this tensor
    assert aten.add_.Tensor(ours, 1) is ours and ours.item() == theirs.add_(1).item()


@pytest.mark.parametrize(("value", "dtype", "memo"), [
    (7, torch.int64, 7), (-3, torch.int32, -3), (2.5, torch.float64, 2.5),  # 0-d CPU ints and float64: their value
    (float("inf"), torch.float64, None), (float("nan"), torch.float64, None),  # not a finite number: none
    (1.5, torch.float32, None), ([5], torch.int64, None)])  # another dtype, or not 0-d: none
def test_a_constant_is_the_converters_without_it(mode: Any, value: Any, dtype: torch.dtype, memo: Any) -> None:
    # fake_constant makes what the converter makes of a fresh real tensor, item()'s memo included, without importing
    # torch._dynamo (the converter names the tensor with torch._dynamo.source; a DTensor embedding's mask is one)
    with torch._C._DisableTorchDispatch():
        real, again = torch.tensor(value, dtype=dtype), torch.tensor(value, dtype=dtype)
    ours = fakeops.fake_constant(mode, real, FakeWrapper().wrap)
    theirs = mode.fake_tensor_converter.from_real_tensor(mode, again, make_constant=True)
    assert _meta(ours)[:7] + _meta(ours)[9:] == _meta(theirs)[:7] + _meta(theirs)[9:]
    assert ours.constant is real and theirs.constant is again
    assert ours.item_memo == theirs.item_memo == memo
    assert mode.fake_tensor_converter._get_memo(real) is ours


def test_a_lift_the_fake_mode_keeps_no_value_of_is_passed_on(mode: Any) -> None:
    short = FakeShortcuts()
    with torch._C._DisableTorchDispatch():
        pair, on_meta = torch.tensor([1.0, 2.0]), torch.empty(1, device="meta")
    assert short.answer(aten.lift_fresh.default, (pair,), {}) is MISS  # two elements: no value kept
    assert short.answer(aten.lift_fresh.default, (on_meta,), {}) is MISS
    assert short.answer(aten.lift_fresh.default, (torch.empty(1),), {}) is MISS  # a fake tensor already


class _Halve(nn.Module):
    """``torch.tensor(0.5)`` in the forward: a constant the fake mode keeps, made by the shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * torch.tensor(0.5)


class _Bump(nn.Module):
    """In-place ops in the forward: one that broadcasts, then (``bad``) one that does not."""

    def __init__(self, bad: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.row = nn.Parameter(torch.ones(4))
        self.bad = nn.Parameter(torch.ones(3 if bad else 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu_(self.lin(x))
        y.mul_(self.row)
        return y.mul_(self.bad)


def test_a_training_step_still_fails_on_an_in_place_op_that_does_not_broadcast() -> None:
    torchcost.analyze(_Bump(bad=False), torch.randn(2, 4), mode="train")
    with pytest.raises(ModelError) as caught:
        torchcost.analyze(_Bump(bad=True), torch.randn(2, 4), mode="train")
    assert "must match the size" in str(caught.value) or "broadcast" in str(caught.value)


def _meta_llama() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    """A 2-layer Llama from the packaged config on the meta device (GQA, RoPE, RMSNorm, SwiGLU, SDPA)."""
    from torchcost.resolve import resolve

    resolved = resolve("hf:llama-3-8b", device="meta", config={"num_hidden_layers": 2}, seq_len=64)
    return resolved.model, resolved.args, resolved.kwargs


def _small_gpt2() -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    """A 2-layer GPT-2 from the packaged config on the CPU (a fake twin in training): matmul's backward makes
    _unsafe_view, the attention's split, and its cache's torch.tensor([]) is concatenated with the keys and values."""
    from torchcost.resolve import resolve

    resolved = resolve("hf:gpt2", config={"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 128, "bos_token_id": 0,
                                          "eos_token_id": 0}, seq_len=16)
    return resolved.model, resolved.args, resolved.kwargs


def _models() -> dict[str, tuple[nn.Module, tuple[Any, ...], dict[str, Any]]]:
    import torchvision

    torch.manual_seed(0)
    mlp = nn.Sequential(*(m for _ in range(3) for m in (nn.Linear(16, 16), nn.ReLU(inplace=True))))
    llama = _meta_llama()
    gpt2 = _small_gpt2()
    return {
        "llama on meta": (llama[0], llama[1], {"kwargs": llama[2]}),
        "llama on meta, eval": (llama[0], llama[1], {"kwargs": llama[2], "mode": "eval"}),
        "gpt2, two layers": (gpt2[0], gpt2[1], {"kwargs": gpt2[2]}),
        "mlp adamw": (mlp, (torch.randn(2, 16),), {}),
        "mlp sgd momentum": (mlp, (torch.randn(2, 16),), {"optimizer": torch.optim.SGD(mlp.parameters(), lr=0.1,
                                                                                        momentum=0.9)}),
        "mlp adam cuda target": (mlp, (torch.randn(2, 16),), {"optimizer": "adam", "target": "cuda"}),
        "mlp adamw foreach": (mlp, (torch.randn(2, 16),), {"optimizer": torch.optim.AdamW(mlp.parameters(),
                                                                                          foreach=True)}),
        "bump": (_Bump(bad=False), (torch.randn(2, 4),), {}),
        "halve": (_Halve(), (torch.randn(2, 4),), {}),
        "resnet18": (torchvision.models.resnet18(weights=None, num_classes=10), (torch.randn(2, 3, 64, 64),), {}),
        # a simulated FSDP2 rank: its twin's to_empty, FSDP2's lazy init and the warm-up's gradients (DTensors)
        "mlp fsdp2 rank 0": (mlp, (torch.randn(2, 16),), {"parallel": Parallel(fsdp=2, rank=0)}),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_training_step_report_is_the_same_without_the_shortcuts(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, args, options = _models()[name]
    options = {"mode": "train", **options}
    with_shortcuts = torchcost.analyze(model, *args, **options).to_dict()
    asked: list[int] = []

    def never(self: FakeShortcuts, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        asked.append(1)
        return MISS

    monkeypatch.setattr(fakeops.FakeShortcuts, "answer", never)
    monkeypatch.setattr(fakeops, "lifted", lambda *args: MISS)  # (also the optimizer warm-up's torch.tensor(x))
    assert torchcost.analyze(model, *args, **options).to_dict() == with_shortcuts
    assert asked  # (the run was on a fake twin, or on meta tensors)


def test_a_fake_tensors_layout_is_read_past_its_property() -> None:
    # FakeTensor.layout is a Python property that asks whether the tensor stands for an mkldnn one; the collectors read
    # the C getter instead where the tensor has no dispatch keys of its own, and the property where it has
    fake = FakeTensorMode()
    dense = fake.from_tensor(torch.randn(4, 3))
    sparse = fake.from_tensor(torch.randn(4, 3).to_sparse())
    mkldnn = fake.from_tensor(torch.randn(2, 3).to_mkldnn())
    assert [BASE_LAYOUT(t) for t in (dense, sparse)] == [t.layout for t in (dense, sparse)] == [torch.strided,
                                                                                                  torch.sparse_coo]
    assert mkldnn.dispatch_keys is not None and mkldnn.layout == torch._mkldnn  # type: ignore[attr-defined]
    # a dense fake storage is followed (4x3 float32: 48 bytes); sparse and mkldnn ones have none to follow
    storage = storage_of(dense)
    assert storage is not None and storage.nbytes() == 4 * 3 * 4
    assert storage_of(sparse) is None and storage_of(mkldnn) is None


@pytest.mark.parametrize("name", ["gpt2, two layers", "mlp adamw", "resnet18"])
def test_training_step_report_is_the_same_with_the_fake_modes_own_cache(name: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # a fake twin's fake mode runs without its cache (run/step.py FAKE_MODE_CACHE): the report must not depend on it
    from torchcost.run import execute, step

    model, args, options = _models()[name]
    options = {"mode": "train", **options}
    made: list[Any] = []
    original = execute.make_twin

    def spy(*a: Any, **k: Any) -> Any:
        twin = original(*a, **k)
        made.append(twin.fake_mode)
        return twin

    monkeypatch.setattr(execute, "make_twin", spy)
    without = torchcost.analyze(model, *args, **options).to_dict()
    assert [m.cache_enabled for m in made] == [False]
    monkeypatch.setattr(step, "FAKE_MODE_CACHE", True)
    with_cache = torchcost.analyze(model, *args, **options).to_dict()
    assert [m.cache_enabled for m in made] == [False, True]
    assert with_cache == without


@pytest.mark.parametrize("name", ["gpt2, two layers", "mlp adamw", "resnet18", "bump"])
def test_a_views_memory_entry_is_what_the_whole_walk_makes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a view the shortcuts answered (on the storage of its one tensor argument) gets only its timeline entry from the
    # memory tracker (MemoryTracker.on_view): the report equals the one where every op takes on_op's whole walk
    from torchcost.collect import memory

    model, args, options = _models()[name]
    options = {"mode": "train", **options}
    short: list[int] = []
    original = memory.MemoryTracker.on_view

    def counted(self: Any, *a: Any, **k: Any) -> None:
        short.append(1)
        original(self, *a, **k)

    monkeypatch.setattr(memory.MemoryTracker, "on_view", counted)
    with_views = torchcost.analyze(model, *args, **options).to_dict()
    assert short  # (autograd's backward takes views of every layer's tensors: t, detach, view)
    monkeypatch.setattr(memory.MemoryTracker, "on_view",
                        lambda self, func, args, kwargs, out, base: self.on_op(func, args, kwargs, out))
    assert torchcost.analyze(model, *args, **options).to_dict() == with_views
