"""The training step's shortcuts (issue 16) leave what the long ways left: the optimizer's warm-up state made once
per kind of parameter and copied to the others is the state a step over every parameter makes (entries, sizes,
strides, dtypes, devices, storages, values the fake tensors carry, the order of ``opt.state``), and a fake twin's
parameters made without nn.Parameter's detach are what nn.Parameter made."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

import torchcost
from torchcost.run import step
from torchcost.run.step import make_optimizer, make_twin, warm_optimizer


@pytest.fixture(autouse=True)
def nothing_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no warm-up state remembered (it is kept for the process)."""
    monkeypatch.setattr(step, "_WARM", {})


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 4, bias=False)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(4, dtype=torch.float64))
        self.t = nn.Parameter(torch.ones(6, 3).t())  # strides (1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.c(self.b(self.a(x)))) * self.scale.float() + self.t.sum()


def _describe(value: Any) -> Any:
    if not isinstance(value, torch.Tensor):
        return ("value", value)
    constant = getattr(value, "constant", None)
    return (type(value).__name__, value.shape, value.stride(), value.dtype, value.device.type,
            value.untyped_storage().nbytes(), value.untyped_storage().device.type, value.requires_grad,
            None if constant is None else constant.tolist(),
            value.tolist() if value.device.type == "cpu" and not isinstance(value, FakeTensor) else None)


def _state(opt: torch.optim.Optimizer, twin: step.Twin) -> list[Any]:
    names = {id(p): name for name, p in twin.model.named_parameters()}
    storages = set()
    described = []
    for p, state in opt.state.items():
        described.append((names.get(id(p)), [(k, _describe(v)) for k, v in state.items()]))
        for v in state.values():
            if isinstance(v, torch.Tensor):
                storages.add(v.untyped_storage()._cdata)
    return [*described, ("storages", len(storages))]


def _warmed(make: Callable[[list[nn.Parameter]], torch.optim.Optimizer], method: str, full: bool,
            monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    torch.manual_seed(0)
    model = _Model()
    spec = make(list(model.parameters()))
    twin = make_twin(model, (torch.randn(2, 8),), {}, method, torch.device("cpu"))  # type: ignore[arg-type]
    opt = make_optimizer(spec, twin.model, twin, "cpu")
    assert opt is not None
    with monkeypatch.context() as m:
        if full:
            m.setattr(step, "_PER_PARAMETER", ())
        try:
            with twin.context():
                warm_optimizer(opt)
        except Exception as exc:  # (ASGD reads a fake tensor's value: either way)
            return [type(exc).__name__]
    assert all(p.grad is None for p in twin.model.parameters())
    return _state(opt, twin)


_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "adamw": lambda p: torch.optim.AdamW(p),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, amsgrad=True, weight_decay=0.1),
    "adam-foreach": lambda p: torch.optim.Adam(p, foreach=True),
    "adamw-fused": lambda p: torch.optim.AdamW(p, fused=True),
    "adagrad": lambda p: torch.optim.Adagrad(p),
    "asgd": lambda p: torch.optim.ASGD(p),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "sgd-plain": lambda p: torch.optim.SGD(p, lr=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, momentum=0.5, centered=True),
    "nadam": lambda p: torch.optim.NAdam(p),
    "radam": lambda p: torch.optim.RAdam(p),
    "adamax": lambda p: torch.optim.Adamax(p),
    "adadelta": lambda p: torch.optim.Adadelta(p),
    "rprop": lambda p: torch.optim.Rprop(p),
    "two-groups": lambda p: torch.optim.AdamW([{"params": p[:3]}, {"params": p[3:], "lr": 0.1, "weight_decay": 0}]),
}


@pytest.mark.parametrize("method", ["fake", "meta"])
@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_warm_state_made_per_kind_is_the_state_a_full_step_makes(name: str, method: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    make = _OPTIMIZERS[name]
    assert _warmed(make, method, False, monkeypatch) == _warmed(make, method, True, monkeypatch)


def _count_warm_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of parameters each warm-up step runs for, appended as the steps run."""
    stepped: list[int] = []
    original = step._warm_step

    def counting(opt: torch.optim.Optimizer) -> None:
        stepped.append(sum(len(g["params"]) for g in opt.param_groups))
        original(opt)

    monkeypatch.setattr(step, "_warm_step", counting)
    return stepped


@pytest.mark.parametrize("method", ["fake", "meta"])
@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_warm_state_made_from_a_remembered_pattern_is_the_state_a_full_step_makes(
        name: str, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a second twin's warm-up: every kind was stepped by the first one, so no parameter steps; its state is made
    # from the patterns remembered, in this twin's fake mode
    make = _OPTIMIZERS[name]
    full = _warmed(make, method, True, monkeypatch)
    step._WARM.clear()
    stepped = _count_warm_steps(monkeypatch)
    first = _warmed(make, method, False, monkeypatch)
    steps_first = len(stepped)
    assert _warmed(make, method, False, monkeypatch) == first == full
    if not (len(first) == 1 and isinstance(first[0], str)):  # (a step that raised, ASGD's on fake tensors: no state)
        assert len(stepped) == steps_first  # the second warm-up stepped nothing
        assert bool(step._WARM) == (steps_first > 0)


def test_a_remembered_pattern_serves_only_its_own_kind_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    stepped = _count_warm_steps(monkeypatch)
    _warmed(lambda p: torch.optim.Adam(p), "fake", False, monkeypatch)
    assert stepped == [5]  # a.weight/b.weight alike, a.bias/b.bias alike; c.weight, scale, t alone
    _warmed(lambda p: torch.optim.Adam(p, amsgrad=True), "fake", False, monkeypatch)  # another option: stepped
    assert stepped == [5, 5]
    _warmed(lambda p: torch.optim.Adam(p, lr=0.5), "fake", False, monkeypatch)  # (every option is in the key)
    assert stepped == [5, 5, 5]
    _warmed(lambda p: torch.optim.Adam(p), "meta", False, monkeypatch)  # meta parameters: another kind
    assert stepped == [5, 5, 5, 5]
    _warmed(lambda p: torch.optim.Adam(p), "fake", False, monkeypatch)  # all seen: nothing steps
    assert stepped == [5, 5, 5, 5]


def test_warm_state_of_an_optimizer_outside_the_list_comes_from_a_full_step(monkeypatch: pytest.MonkeyPatch) -> None:
    class MyAdam(torch.optim.Adam):
        pass

    stepped = _count_warm_steps(monkeypatch)
    model = _Model()
    twin = make_twin(model, (torch.randn(2, 8),), {}, "fake", torch.device("cpu"))
    opt = make_optimizer(MyAdam(model.parameters()), twin.model, twin, "cpu")
    assert opt is not None
    with twin.context():
        warm_optimizer(opt)
    assert stepped == [len(list(model.parameters()))]
    trainable = [p for p in twin.model.parameters() if p.requires_grad]
    assert all(set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"} for p in trainable)


def test_warm_up_steps_one_parameter_of_each_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    stepped = _count_warm_steps(monkeypatch)
    model = _Model()
    twin = make_twin(model, (torch.randn(2, 8),), {}, "fake", torch.device("cpu"))
    opt = make_optimizer("adamw", twin.model, twin, "cpu")
    assert opt is not None
    with twin.context():
        warm_optimizer(opt)
    # a.weight and b.weight alike, a.bias and b.bias alike; c.weight, scale (float64), t (other strides) alone
    assert stepped == [5]
    assert len(opt.state) == 7


def test_a_twin_keeps_the_state_the_users_optimizer_had(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _Model()
    user = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    user.step()
    model.a.weight.grad = None
    user.state.pop(model.a.weight)  # one parameter without state: warmed alone, after the others
    twin = make_twin(model, (torch.randn(2, 8),), {}, "fake", torch.device("cpu"))
    opt = make_optimizer(user, twin.model, twin, "cpu")
    assert opt is not None
    with twin.context():
        warm_optimizer(opt)
    names = {id(p): n for n, p in twin.model.named_parameters()}
    order = [names[id(p)] for p in opt.state]
    assert order[-1] == "a.weight" and len(order) == len({*order})
    assert opt.state[twin.params[id(model.a.weight)]]["step"].constant.item() == 1
    assert opt.state[twin.params[id(model.b.weight)]]["step"].constant.item() == 1


def test_fake_twin_parameters_are_what_nn_parameter_makes() -> None:
    model = _Model()
    twin = make_twin(model, (torch.randn(2, 8),), {}, "fake", torch.device("cpu"))
    for (name, p), q in zip(model.named_parameters(), twin.model.parameters()):
        assert type(q) is FakeTensor and isinstance(q, nn.Parameter), name
        assert (q.shape, q.stride(), q.dtype, q.device, q.requires_grad, q.is_leaf, q.grad_fn) == \
            (p.shape, p.stride(), p.dtype, p.device, p.requires_grad, True, None), name
        made = nn.Parameter(q.detach(), requires_grad=p.requires_grad)
        assert (type(made), made.requires_grad, made.untyped_storage().nbytes()) == \
            (type(q), q.requires_grad, q.untyped_storage().nbytes())


def test_training_step_report_is_the_same_with_the_full_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    def run() -> dict[str, Any]:
        torch.manual_seed(0)
        model = nn.Sequential(*(m for _ in range(4) for m in (nn.Linear(16, 16), nn.ReLU())))
        return torchcost.analyze(model, torch.randn(2, 16), mode="train").to_dict()

    shortcut = run()
    monkeypatch.setattr(step, "_PER_PARAMETER", ())
    assert run() == shortcut


def test_a_step_counter_copied_fast_is_what_the_converter_makes() -> None:
    # warm_optimizer gives parameters of one kind copies of the first one's state; a step counter is a fake tensor
    # carrying its value (float32, 0-d: no item() memo), copied without the converter's walk of the real tensor
    from torch._subclasses.fake_tensor import FakeTensorMode

    from torchcost.collect.fakeops import FakeWrapper

    mode = FakeTensorMode()
    counter = mode.fake_tensor_converter.from_real_tensor(mode, torch.tensor(3.0), make_constant=True)
    pattern = step._pattern(counter)
    assert pattern is not None and pattern[0] == "constant"
    made = step._from_pattern(pattern, counter, FakeWrapper().wrap)
    reference = mode.fake_tensor_converter.from_real_tensor(mode, torch.tensor(3.0), make_constant=True)
    assert type(made) is type(reference) and made is not counter
    assert set(vars(made)) == set(vars(reference))
    assert torch._C._dispatch_keys(made) == torch._C._dispatch_keys(reference)
    assert (made.shape, made.stride(), made.dtype, made.device, made.requires_grad) == \
        (reference.shape, reference.stride(), reference.dtype, reference.device, reference.requires_grad)
    assert made.constant is not counter.constant and made.constant.item() == 3.0
    with mode:
        stepped = made.add_(1)  # as Adam's step: the fake mode runs it on the constant, and hands back this tensor
    assert stepped is made and made.constant.item() == 4.0 and counter.constant.item() == 3.0
    # an alias of the constant's storage written in place ends it, as for the converter's own: the mapping holds
    # the storages of counter's, reference's and made's constants (3 copies, 3 storages), made's among them
    mapped = len(mode.fake_tensor_converter.constant_storage_mapping)
    assert mapped >= 3
    mode.fake_tensor_converter.invalidate_constant_aliases(made.constant)
    assert made.constant is None


def test_a_twins_empty_containers_are_what_deepcopy_makes() -> None:
    # make_twin hands deepcopy ready copies of the modules' empty dicts, OrderedDicts and sets (their hook dicts):
    # the twin must get what deepcopy alone gives, sharing included, and nothing of the model's
    from collections import OrderedDict

    class Counted(OrderedDict):  # a subclass copies itself its own way: left to deepcopy
        def __deepcopy__(self, memo: dict[int, Any]) -> Counted:
            made = Counted()
            made.copied = True
            return made

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    shared: dict[str, int] = {}
    model[0].notes = shared
    model[1].notes = shared  # one object in two modules
    model[0].seen = set()
    model[1].custom = Counted()
    model[1].filled = OrderedDict(a=1)
    twin = make_twin(model, (torch.randn(2, 4),), {}, "fake", torch.device("cpu"))
    plain = copy.deepcopy(model)
    for (name, m), t, d in zip(model.named_modules(), twin.model.modules(), plain.modules()):
        for attr, value in vars(m).items():
            if isinstance(value, (dict, set)) and not value:
                copied, reference = vars(t)[attr], vars(d)[attr]
                assert copied is not value, (name, attr)
                assert type(copied) is type(reference) and copied == reference, (name, attr)
    assert twin.model[0].notes is twin.model[1].notes
    assert twin.model[1].custom.copied and twin.model[1].filled == {"a": 1}
    twin.model[0]._forward_hooks[0] = print
    assert not model[0]._forward_hooks


class _OwnAdamW(torch.optim.AdamW):
    """A subclass defined outside torch.optim: its step may run code of its own."""


def test_torchs_own_optimizer_steps_past_the_function_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # the run's function mode (CompositeCatcher) has nothing to do in a step of torch.optim's own code: it is off
    # there, and the report is the one with it on; a subclass defined elsewhere, or a step hook, keeps it on
    from torchcost.collect.composites import CompositeCatcher
    from torchcost.run import execute

    phases: list[str] = []
    through = CompositeCatcher.__torch_function__

    def counted(self: CompositeCatcher, func: Any, *args: Any, **kwargs: Any) -> Any:
        if func is not torch._C._set_grad_enabled:  # (leaving the run's enable_grad, after the step)
            phases.append(self.ops.phase)
        return through(self, func, *args, **kwargs)

    monkeypatch.setattr(CompositeCatcher, "__torch_function__", counted)

    def run(optimizer: Any = "adamw") -> tuple[dict[str, Any], int]:
        phases.clear()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        opt = optimizer(model.parameters()) if callable(optimizer) else optimizer
        report = torchcost.analyze(model, torch.randn(2, 4), mode="train", optimizer=opt).to_dict()
        return report, phases.count("optimizer")

    plain, calls = run()
    assert calls == 0
    # AdamW's step: 4 parameters (3x4 + 3 + 2x3 + 2 = 23 elements); per element 1 (weight decay's mul_) + 3 (lerp_)
    # + 1 (mul_) + 3 (addcmul_) + 1 (sqrt) + 1 (div) + 1 (add_ of eps) + 3 (addcdiv_) = 14 FLOPs: 23 * 14 = 322;
    # and each parameter's step counter += 1 (one element): 322 + 4 = 326
    optimizer = next(p for p in plain["phases"] if p["name"] == "optimizer")
    assert optimizer["flops"] == 326
    with monkeypatch.context() as m:
        m.setattr(execute, "plain_step", lambda opt: False)
        on, calls = run()
    assert calls > 0 and on == plain
    on, calls = run(lambda params: _OwnAdamW(params, lr=1e-3))
    assert calls > 0 and on["memory"].pop("optimizer").startswith("_OwnAdamW(")
    assert on == {**plain, "memory": {k: v for k, v in plain["memory"].items() if k != "optimizer"}}
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: None)
    try:
        on, calls = run()
    finally:
        handle.remove()
    assert calls > 0 and on == plain


_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish, lambda: nn.LeakyReLU(0.2), lambda: nn.Dropout(0.2),
                nn.Identity)


class _Attention(nn.Module):
    """Embedding, self-attention, layer norm and a head, the head's weight tied to the embedding's or its own."""

    def __init__(self, width: int, heads: int, bias: bool, tied: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, width)
        self.att = nn.MultiheadAttention(width, heads, batch_first=True, bias=bias)
        self.ln = nn.LayerNorm(width)
        self.out = nn.Linear(width, 50, bias=False)
        if tied:
            self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        a, _ = self.att(h, h, h, need_weights=False)
        out: torch.Tensor = self.out(self.ln(h + a))
        return out


@st.composite
def _step_cases(draw: Any) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    """A small CNN (strided convolutions, batch norms), an MLP (2-d or 3-d input, layer norms) or an attention
    model (tied or untied head); some parameters frozen; each optimizer analyze() names, or its default; bf16
    autocast on the first two."""
    kind = draw(st.sampled_from(["cnn", "mlp", "attention"]))
    x: torch.Tensor
    if kind == "cnn":
        c = ch = draw(st.sampled_from([1, 3]))
        layers: list[nn.Module] = []
        for _ in range(draw(st.integers(1, 3))):
            out = draw(st.sampled_from([4, 8]))
            layers.append(nn.Conv2d(ch, out, 3, padding=1, stride=draw(st.sampled_from([1, 2])),
                                    bias=draw(st.booleans())))
            if draw(st.booleans()):
                layers.append(nn.BatchNorm2d(out))
            layers.append(draw(st.sampled_from(_ACTIVATIONS))())
            ch = out
        model: nn.Module = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 5))
        x = torch.randn(draw(st.sampled_from([2, 3])), c, 12, 12)
    elif kind == "mlp":
        width = d = draw(st.sampled_from([8, 16]))
        layers = []
        for _ in range(draw(st.integers(1, 4))):
            out = draw(st.sampled_from([8, 16, 24]))
            layers.append(nn.Linear(d, out, bias=draw(st.booleans())))
            if draw(st.booleans()):
                layers.append(nn.LayerNorm(out, elementwise_affine=draw(st.booleans())))
            layers.append(draw(st.sampled_from(_ACTIVATIONS))())
            d = out
        model = nn.Sequential(*layers, nn.Linear(d, 3))
        batch = draw(st.sampled_from([1, 4]))
        rows = (draw(st.sampled_from([1, 5])),) if draw(st.booleans()) else ()
        x = torch.randn(batch, *rows, width)
    else:
        model = _Attention(draw(st.sampled_from([16, 32])), draw(st.sampled_from([1, 2, 4])), draw(st.booleans()),
                           draw(st.booleans()))
        x = torch.randint(0, 50, (draw(st.sampled_from([1, 2])), draw(st.sampled_from([4, 7]))))
    for p in list(model.parameters())[:draw(st.integers(0, 2))]:
        p.requires_grad_(False)
    options: dict[str, Any] = {}
    optimizer = draw(st.sampled_from([None, "sgd", "adam", "adamw"]))
    if optimizer is not None:
        options["optimizer"] = optimizer
    if kind != "attention" and draw(st.booleans()):
        options["amp"] = "bf16"
    return model, x, options


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(_step_cases())
def test_drawn_training_steps_report_the_same_with_the_fake_paths_off(
        case: tuple[nn.Module, torch.Tensor, dict[str, Any]]) -> None:
    """The shortcuts of a training step on a fake twin (ops answered from metadata, fake tensors made from the
    constructor's state, step counters copied past the converter, the warm-up state made per kind of parameter)
    never change a report, over mixes of layers, frozen parameters, tied weights, optimizers and autocast: the
    report is the one every op through the fake mode gives."""
    from benchmarks.switch_identity import fake_paths_off

    model, x, options = case
    short = torchcost.analyze(model, x, mode="train", **options).to_dict()
    with fake_paths_off():
        slow = torchcost.analyze(model, x, mode="train", **options).to_dict()
    assert short == slow
