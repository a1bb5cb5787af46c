"""Batch norm's outputs on a fake twin by formula (collect/fakerules.py, issue 16): the formula is the fake mode's own
answer, it is used only for a kind of call whose first call matched it, and a training step's report is the same
with it and without it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import torchcost
from torchcost.collect import fakeops, fakerules
from torchcost.collect.fakeops import MISS, FakeShortcuts

aten = torch.ops.aten
BN, BN_BACKWARD = aten.native_batch_norm.default, aten.native_batch_norm_backward.default


@pytest.fixture(autouse=True)
def nothing_learned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no answer learned and no kind trusted (they are kept for the process)."""
    monkeypatch.setattr(fakeops, "_LEARNED", {})


def _metas(out: Any, fake: bool) -> tuple[Any, ...]:
    return tuple(None if o is None else (tuple(o.shape), o.stride(), o.dtype, o.requires_grad, o.is_conj(),
                                         o.is_neg(), o.fake_device if fake else None) for o in out)


def _call(shape: tuple[int, ...], dtype: torch.dtype, affine: bool, stats: bool, training: bool,
          backward: tuple[bool, bool, bool] | None, device: str) -> tuple[Any, tuple[Any, ...]]:
    """A batch norm call (or its backward's, with that output mask) on tensors made in the current mode."""
    c = shape[1]
    x = torch.empty(shape, dtype=dtype, device=device)
    weight = torch.empty(c, dtype=dtype, device=device) if affine else None
    bias = torch.empty(c, dtype=dtype, device=device) if affine else None
    mean = torch.empty(c, dtype=dtype, device=device) if stats else None
    var = torch.empty(c, dtype=dtype, device=device) if stats else None
    if backward is None:
        return BN, (x, weight, bias, mean, var, training, 0.1, 1e-5)
    saved = torch.empty(c, dtype=dtype, device=device) if training else None
    return BN_BACKWARD, (torch.empty(shape, dtype=dtype, device=device), x, weight, mean, var, saved, saved, training,
                         1e-5, list(backward))


CASES = {
    "2d train": ((2, 3, 4, 5), torch.float32, True, True, True, None),
    "2d eval": ((2, 3, 4, 5), torch.float32, True, True, False, None),
    "1d on (N, C)": ((4, 6), torch.float32, True, True, True, None),
    "1d on (N, C, L)": ((2, 6, 7), torch.float64, True, True, True, None),
    "3d": ((1, 2, 3, 4, 5), torch.float32, True, True, True, None),
    "no affine": ((2, 3, 4, 5), torch.float32, False, True, True, None),
    "no running stats": ((2, 3, 4, 5), torch.float32, True, False, True, None),
    "bfloat16 train": ((2, 3, 4, 4), torch.bfloat16, True, True, True, None),
    "bfloat16 eval": ((2, 3, 4, 4), torch.bfloat16, True, True, False, None),
    "size-1 batch and map": ((1, 8, 1, 1), torch.float32, True, True, False, None),
    "size-1 batch": ((1, 8, 3, 1), torch.float32, True, True, True, None),
    "backward all": ((2, 3, 4, 5), torch.float32, True, True, True, (True, True, True)),
    "backward input only": ((2, 3, 4, 5), torch.float32, True, True, True, (True, False, False)),
    "backward no affine": ((2, 3, 4, 5), torch.float32, False, True, True, (True, False, False)),
    "backward eval": ((2, 3, 4, 5), torch.float32, True, True, False, (True, True, True)),
    "backward bfloat16": ((2, 3, 4, 4), torch.bfloat16, True, True, True, (True, True, True)),
}


@pytest.mark.parametrize("where", ["fake cpu", "meta"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_formula_is_the_fake_modes_answer(case: str, where: str) -> None:
    if where == "meta":
        func, args = _call(*CASES[case], device="meta")
        found = fakerules.expected(func, args, {}, None)
        out = func(*args)  # the meta kernel: torch's decomposition
    else:
        with FakeTensorMode():
            func, args = _call(*CASES[case], device="cpu")
            found = fakerules.expected(func, args, {}, FakeTensor)
            out = func(*args)
    assert found is not None
    assert found[1:] == (True, _metas(out, where != "meta"))


def test_the_formula_by_hand() -> None:
    with FakeTensorMode():
        x, w = torch.empty(2, 3, 4, 5), torch.empty(3)
        train = fakerules.expected(BN, (x, w, w, w, w, True, 0.1, 1e-5), {}, FakeTensor)
        evaluated = fakerules.expected(BN, (x, w, w, w, w, False, 0.1, 1e-5), {}, FakeTensor)
    cpu = torch.device("cpu")
    # (2, 3, 4, 5) contiguous: strides 3*4*5 = 60, 4*5 = 20, 5, 1; the saved statistics one per channel, (3,)
    out = ((2, 3, 4, 5), (60, 20, 5, 1), torch.float32, False, False, False, cpu)
    stat = ((3,), (1,), torch.float32, False, False, False, cpu)
    assert train is not None and train[1:] == (True, (out, stat, stat))
    # in eval on the CPU nothing is saved: (0,)
    assert evaluated is not None and evaluated[2][1] == ((0,), (1,), torch.float32, False, False, False, cpu)
    # on meta (not the CPU) a half input's statistics are kept in float32, the dtype the decomposition computes in
    h, hw = torch.empty(2, 3, 4, 5, device="meta", dtype=torch.float16), torch.empty(3, device="meta",
                                                                                      dtype=torch.float16)
    meta = fakerules.expected(BN, (h, hw, hw, hw, hw, False, 0.1, 1e-5), {}, None)
    assert meta is not None and meta[2][1] == ((3,), (1,), torch.float32, False, False, False, None)


@pytest.mark.parametrize("args", [
    "channels_last", "offset", "empty", "weight of another size", "keywords", "weight on meta", "one value a channel",
    "eval without statistics"])
def test_no_formula_where_it_does_not_hold(args: str) -> None:
    with FakeTensorMode():
        x, w = torch.empty(2, 3, 4, 5), torch.empty(3)
        kwargs: dict[str, Any] = {}
        if args == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        elif args == "offset":
            x = torch.empty(200)[10:130].view(2, 3, 4, 5)
        elif args == "empty":
            x = torch.empty(0, 3, 4, 5)
        elif args == "weight of another size":
            w = torch.empty(4)
        elif args == "keywords":
            kwargs = {"eps": 1e-5}
        elif args == "one value a channel":  # the decomposition divides by n - 1 = 0: it raises, so must this call
            x = torch.empty(1, 3, 1, 1)
            with pytest.raises(ZeroDivisionError):
                BN(x, w, w, w, w, True, 0.1, 1e-5)
        call: tuple[Any, ...] = (x, w, w, w, w, True, 0.1) if args == "keywords" else (x, w, w, w, w, True, 0.1, 1e-5)
        if args == "eval without statistics":
            call = (x, w, w, None, None, False, 0.1, 1e-5)
            with pytest.raises(AssertionError):
                BN(*call)
        if args == "weight on meta":
            with torch.utils._python_dispatch._disable_current_modes():
                w = torch.empty(3, device="meta")
            call = (x, w, w, w, w, True, 0.1, 1e-5)
        assert fakerules.expected(BN, call, kwargs, FakeTensor) is None


def test_a_kind_is_answered_by_formula_once_its_first_call_matched() -> None:
    with FakeTensorMode():
        short = FakeShortcuts()
        x, w = torch.empty(2, 3, 4, 5), torch.empty(3)
        first = (x, w, w, w, w, True, 0.1, 1e-5)
        assert short.answer(BN, first, {}) is MISS  # the first of its kind: through the fake mode
        short.learn(BN(*first))
        y, v = torch.empty(2, 7, 6, 6), torch.empty(7)  # another shape of the same kind: no call of its key ran
        answered = short.answer(BN, (y, v, v, v, v, True, 0.1, 1e-5), {})
        assert answered is not MISS
        # (2, 7, 6, 6): strides 7*6*6 = 252, 6*6 = 36, 6, 1; statistics (7,)
        assert [(tuple(t.shape), t.stride(), type(t)) for t in answered] == \
            [((2, 7, 6, 6), (252, 36, 6, 1), FakeTensor), ((7,), (1,), FakeTensor), ((7,), (1,), FakeTensor)]
        assert len({t.untyped_storage()._cdata for t in answered}) == 3  # three new storages
        # another kind (eval) is not trusted by the first: through the fake mode
        assert short.answer(BN, (y, v, v, v, v, False, 0.1, 1e-5), {}) is MISS


def test_a_kind_whose_first_call_differs_is_never_answered_by_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fakerules.expected

    def wrong(func: Any, args: Any, kwargs: Any, fake: Any) -> Any:
        found = real(func, args, kwargs, fake)
        if found is None:
            return None
        kind, many, (out, *rest) = found
        assert out is not None
        return kind, many, ((*out[:2], torch.float64, *out[3:]), *rest)  # a dtype the fake mode does not give

    monkeypatch.setattr(fakerules, "expected", wrong)
    with FakeTensorMode():
        short = FakeShortcuts()
        x, w = torch.empty(2, 3, 4, 5), torch.empty(3)
        short.answer(BN, (x, w, w, w, w, True, 0.1, 1e-5), {})
        short.learn(BN(x, w, w, w, w, True, 0.1, 1e-5))
        y, v = torch.empty(2, 7, 6, 6), torch.empty(7)
        assert short.answer(BN, (y, v, v, v, v, True, 0.1, 1e-5), {}) is MISS
        assert short.answer(BN, (y, v, v, v, v, True, 0.1, 1e-5), {}) is MISS  # (and never checked again)
    assert next(iter(fakeops._LEARNED.values()))[2] == {
        wrong(BN, (x, w, w, w, w, True, 0.1, 1e-5), {}, FakeTensor)[0]: False}


class _Norms(nn.Module):
    """Every batch norm kind a CNN meets, each at two sizes (so that the second is answered by formula): 2-D with
    and without affine parameters or running statistics, 3-D, 1-D on (N, C, L) and on (N, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.affine = nn.ModuleList([nn.BatchNorm2d(8), nn.BatchNorm2d(12)])
        self.plain = nn.ModuleList([nn.BatchNorm2d(8, affine=False), nn.BatchNorm2d(12, affine=False)])
        self.batch = nn.ModuleList([nn.BatchNorm2d(8, track_running_stats=False),
                                    nn.BatchNorm2d(12, track_running_stats=False)])
        self.volume = nn.Conv3d(1, 4, 3, padding=1)
        self.cube = nn.ModuleList([nn.BatchNorm3d(4), nn.BatchNorm3d(4)])
        self.series = nn.Conv1d(12, 5, 3)
        self.line = nn.ModuleList([nn.BatchNorm1d(5), nn.BatchNorm1d(12)])
        self.fc = nn.Linear(5, 9)
        self.flat = nn.ModuleList([nn.BatchNorm1d(9), nn.BatchNorm1d(5)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.affine[0](self.conv1(x))  # (2, 8, 8, 8)
        b = self.affine[1](self.conv2(a))  # (2, 12, 4, 4)
        total = self.plain[0](a).sum() + self.plain[1](b).sum() + self.batch[0](a).sum() + self.batch[1](b).sum()
        total = total + self.cube[0](self.volume(a[:, :1].unsqueeze(1))).sum()  # (2, 4, 8, 8, 8)
        total = total + self.cube[1](self.volume(b[:, :1].unsqueeze(1))).sum()  # (2, 4, 4, 4, 4)
        s = self.series(b.flatten(2))  # (2, 5, 14)
        total = total + self.line[1](b.flatten(2)).sum()  # (2, 12, 16)
        m = self.line[0](s).mean(-1)  # (2, 5)
        out: torch.Tensor = total + self.flat[0](self.fc(m)).sum() + self.flat[1](m).sum()
        return out


def _norm_models() -> dict[str, tuple[nn.Module, tuple[Any, ...], dict[str, Any]]]:
    import torchvision

    torch.manual_seed(0)
    return {
        "norms": (_Norms(), (torch.randn(2, 3, 8, 8),), {}),
        "norms bfloat16": (_Norms().to(torch.bfloat16), (torch.randn(2, 3, 8, 8, dtype=torch.bfloat16),), {}),
        "norms on meta": (_Norms().to("meta"), (torch.randn(2, 3, 8, 8, device="meta"),), {}),
        "norms on meta, eval": (_Norms().to("meta").eval(), (torch.randn(2, 3, 8, 8, device="meta"),),
                                {"mode": "eval"}),
        "resnet18": (torchvision.models.resnet18(weights=None, num_classes=10), (torch.randn(2, 3, 64, 64),), {}),
        "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small(weights=None, num_classes=10),
                               (torch.randn(2, 3, 64, 64),), {}),
        "resnet18 cuda target": (torchvision.models.resnet18(weights=None, num_classes=10),
                                 (torch.randn(2, 3, 32, 32),), {"target": "cuda"}),
    }


@pytest.mark.parametrize("name", list(_norm_models()))
def test_training_step_report_is_the_same_without_the_formula(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, args, options = _norm_models()[name]
    options = {"mode": "train", **options}
    asked: list[int] = []
    real = fakerules.expected

    def counted(*a: Any) -> Any:
        found = real(*a)
        asked.append(found is not None)
        return found

    monkeypatch.setattr(fakerules, "expected", counted)
    with_formula = torchcost.analyze(model, *args, **options).to_dict()
    trusted = [t for tables in fakeops._LEARNED.values() for t in tables[2].values()]
    assert any(asked) and trusted and all(trusted)  # every kind met was checked, and matched
    fakeops._LEARNED.clear()
    monkeypatch.setattr(fakerules, "expected", lambda *a: None)
    assert torchcost.analyze(model, *args, **options).to_dict() == with_formula


# op, its arguments: a tuple is a new tensor of those sizes, None the tensor before it again, a number itself
POINTWISE = {
    "relu": (aten.relu.default, [(3, 4, 5)]),
    "silu backward": (aten.silu_backward.default, [(2, 6, 4, 4), (2, 6, 4, 4)]),
    "hardtanh backward": (aten.hardtanh_backward.default, [(2, 6, 4, 4), (2, 6, 4, 4), 0.0, 6.0]),
    "threshold backward": (aten.threshold_backward.default, [(1, 6, 4, 1), (1, 6, 4, 1), 0]),
    "mul": (aten.mul.Tensor, [(5, 7), (5, 7)]),
    "sqrt": (aten.sqrt.default, [(9,)]),
    "add, one tensor twice": (aten.add.Tensor, [(4, 4), None]),
    "hardswish backward": (aten.hardswish_backward.default, [(2, 3, 5), (2, 3, 5)]),
    "elu backward": (aten.elu_backward.default, [(2, 3, 5), 1.0, 1.0, 1.0, False, (2, 3, 5)]),
}


@pytest.mark.parametrize("where", ["fake cpu", "meta"])
@pytest.mark.parametrize("case", list(POINTWISE))
def test_a_pointwise_formula_is_the_fake_modes_answer(case: str, where: str) -> None:
    func, spec = POINTWISE[case]

    def call(device: str) -> tuple[Any, Any]:
        args: list[Any] = []
        last = None
        for item in spec:
            if type(item) is tuple:
                last = torch.empty(item, device=device)
            args.append(last if item is None or type(item) is tuple else item)
        return fakerules.expected(func, tuple(args), {}, None if device == "meta" else FakeTensor), func(*args)

    if where == "meta":
        found, out = call("meta")
    else:
        with FakeTensorMode():
            found, out = call("cpu")
    assert found is not None and found[1:] == (False, _metas((out,), where != "meta"))


def test_a_pointwise_formula_by_hand_and_where_it_is_not_given() -> None:
    with FakeTensorMode():
        a, b = torch.empty(2, 3, 4), torch.empty(2, 3, 4)
        found = fakerules.expected(aten.hardtanh_backward.default, (a, b, 0.0, 6.0), {}, FakeTensor)
        # one output like the first tensor: (2, 3, 4) contiguous, strides 3*4 = 12, 4, 1
        assert found is not None and found[2] == (((2, 3, 4), (12, 4, 1), torch.float32, False, False, False,
                                                   torch.device("cpu")),)
        assert found[0][-2:] == ((float, 0.0), (float, 6.0))  # the numbers' values are part of the kind
        broadcast = (a, torch.empty(4))
        transposed = (a.transpose(0, 1).contiguous().transpose(0, 1), b)
        half = (a, b.half())
        for args in (broadcast, transposed, half, (a, float("nan")), (torch.empty(0, 3),)):
            assert fakerules.expected(aten.mul.Tensor if len(args) == 2 else aten.relu.default, args, {},
                                      FakeTensor) is None
        assert fakerules.expected(aten.add.Tensor, (a, b), {"alpha": 2}, FakeTensor) is None  # keywords
        assert fakerules.expected(aten.mm.default, (a[0], b[0].t().contiguous()), {}, FakeTensor) is None


@pytest.mark.parametrize("func", [aten.eq.Tensor, aten.div.Tensor])
def test_a_pointwise_op_whose_output_is_not_like_its_input_is_never_answered_by_formula(func: Any) -> None:
    # a comparison gives bool; an integer division gives float: the first call of the kind differs from the formula
    with FakeTensorMode():
        short = FakeShortcuts()
        a, b = torch.empty(3, 4, dtype=torch.int64), torch.empty(3, 4, dtype=torch.int64)
        assert short.answer(func, (a, b), {}) is MISS
        short.learn(func(a, b))
        c, d = torch.empty(5, 6, dtype=torch.int64), torch.empty(5, 6, dtype=torch.int64)
        assert short.answer(func, (c, d), {}) is MISS
        assert func(c, d).dtype == (torch.bool if func is aten.eq.Tensor else torch.float32)


def test_a_pointwise_kind_is_answered_by_formula_once_its_first_call_matched() -> None:
    with FakeTensorMode():
        short = FakeShortcuts()
        op = aten.silu_backward.default
        g, x = torch.empty(2, 8, 5, 5), torch.empty(2, 8, 5, 5)
        assert short.answer(op, (g, x), {}) is MISS
        short.learn(op(g, x))
        h, y = torch.empty(3, 4, 6, 7), torch.empty(3, 4, 6, 7)
        answered = short.answer(op, (h, y), {})
        # (3, 4, 6, 7) contiguous: strides 4*6*7 = 168, 6*7 = 42, 7, 1
        assert type(answered) is FakeTensor and (tuple(answered.shape), answered.stride()) == ((3, 4, 6, 7),
                                                                                              (168, 42, 7, 1))
        assert short.answer(op, (h[:1], y[:1]), {}) is MISS  # size 1 in the batch: another kind
