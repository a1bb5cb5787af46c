"""Odd models (issue 9): TorchScript, lazy modules, inference_mode, a forward that changes state it owns, a model
holding what cannot be copied, sparse gradients, and the RNG. Each is analysed correctly or refused with one
InputError line naming the module, and comes back exactly as it was (docs/architecture.md, "Guarantees: the model").
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

import torchcost
from tests.fixtures.models import ConvBN


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text == text.strip() and len(text) < 400, text
    return text


def modes_of(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


# -- TorchScript: refused up front, before anything is touched ----------------------------------------------------

def jit(make: Callable[[], nn.Module]) -> Any:
    with warnings.catch_warnings():  # torch.jit.script / trace are deprecated (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return make()


class WithScriptedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = jit(lambda: torch.jit.script(nn.Linear(4, 2)))

    def forward(self, x: torch.Tensor) -> Any:
        return self.head(self.body(x))


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("make", "named"), [
    (lambda: jit(lambda: torch.jit.script(nn.Linear(4, 2))), "the model (RecursiveScriptModule of Linear)"),
    (lambda: jit(lambda: torch.jit.trace(nn.Linear(4, 2), torch.randn(1, 4))),
     "the model (TopLevelTracedModule of Linear)"),
    (WithScriptedHead, "module 'head' (RecursiveScriptModule of Linear)"),
])
def test_torchscript_is_refused_naming_the_module(make: Callable[[], nn.Module], named: str, mode: str) -> None:
    # was: AttributeError 'OrderedDictWrapper' object has no attribute 'clear' from the guard, flags left changed
    model = make()
    model.train(mode == "eval")  # the opposite of the run's mode, so a flag left changed would show
    before = modes_of(model)
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(model, torch.randn(1, 4), mode=mode)
    text = one_line(info.value)
    assert named in text and "TorchScript" in text and "eager module" in text
    assert modes_of(model) == before


# -- lazy modules: refused, and left lazy ---------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "memory"), [("eval", True), ("eval", False), ("train", True)])
def test_lazy_module_is_refused_and_stays_lazy(mode: str, memory: bool) -> None:
    # was: "Attempted to use an uninitialized parameter", or (memory=False) a report, and the LazyLinear came back
    # as a materialised Linear
    model = nn.Sequential(nn.Linear(4, 4), nn.LazyLinear(3))
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(model, torch.randn(2, 4), mode=mode, memory=memory)
    text = one_line(info.value)
    assert "module '1' (LazyLinear)" in text and "not initialized" in text
    assert type(model[1]) is nn.LazyLinear and isinstance(model[1].weight, UninitializedParameter)


# -- inference_mode around analyze: the same report as outside it ---------------------------------------------------

class ConvBNLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # 8x8 -> 6x6
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).flatten(1))


# conv: 4 * 6 * 6 outputs x 3 * 3 * 3 = 144 * 27 = 3888; fc: 144 * 5 = 720; batch norm: no multiply-accumulates
CONV_BN_LINEAR_MACS = 4 * 6 * 6 * 3 * 3 * 3 + 4 * 6 * 6 * 5  # = 4608


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_inference_mode_counts_as_outside(mode: str) -> None:
    # was: MACs 0, with conv2d, linear and batch_norm listed as uncounted
    model, x = ConvBNLinear().eval(), torch.randn(1, 3, 8, 8)
    outside = torchcost.analyze(model, x, mode=mode)
    with torch.inference_mode():
        inside = torchcost.analyze(model, x, mode=mode)
        assert torch.is_inference_mode_enabled()
    assert outside.macs == inside.macs == CONV_BN_LINEAR_MACS
    assert inside.uncounted == () and inside == outside


def test_inference_tensors_work_outside_inference_mode() -> None:
    # a model and an input made under inference_mode: their tensors are inference tensors, which may not be
    # written outside it (the guard's restore did)
    with torch.inference_mode():
        model, x = ConvBNLinear().eval(), torch.randn(1, 3, 8, 8)
        before = {k: v.clone() for k, v in model.state_dict().items()}
    for mode in ("eval", "train"):
        assert torchcost.analyze(model, x, mode=mode).macs == CONV_BN_LINEAR_MACS
        with torch.inference_mode():
            assert torchcost.analyze(model, input_size=(1, 3, 8, 8), mode=mode).macs == CONV_BN_LINEAR_MACS
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- a forward that changes state it owns ----------------------------------------------------------------------------

class Stateful(nn.Module):
    """A forward that updates an EMA parameter and buffer in place, writes into its weight through a view, scales a
    plain tensor attribute in place, counts its calls, logs, caches, and drops and adds attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.ema = nn.Parameter(torch.zeros(4, 4), requires_grad=False)
        self.register_buffer("ema_bias", torch.zeros(4))
        self.scale = torch.ones(4)
        self.calls = 0
        self.log: list[Any] = []
        self.seen: dict[str, Any] = {"first": None}
        self.tags = {"a"}
        self.cache = torch.zeros(2)
        self.temporary = "dropped in forward"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.ema.mul_(0.9).add_(self.fc.weight, alpha=0.1)
            self.ema_bias.mul_(0.9).add_(self.fc.bias, alpha=0.1)
            self.scale.mul_(2)
            self.fc.weight[0].zero_()
        self.calls += 1
        self.log.append(tuple(x.shape))
        self.seen["first"] = x
        self.seen["last"] = x
        self.tags.add("b")
        self.cache = x
        del self.temporary
        self.added = True
        return self.fc(x) * self.scale


def test_state_changed_by_forward_is_restored() -> None:
    for mode in ("eval", "train"):
        model = Stateful()
        model.ema.data.normal_()
        values = {k: v.clone() for k, v in model.state_dict().items()}
        scale, cache, log, seen, tags = model.scale.clone(), model.cache, model.log, model.seen, model.tags
        report = torchcost.analyze(model, torch.randn(2, 4), mode=mode)
        assert report.module("fc").macs == 2 * 4 * 4  # batch 2 x in 4 x out 4 = 32
        assert all(torch.equal(v, values[k]) for k, v in model.state_dict().items()), mode
        assert torch.equal(model.scale, scale) and model.cache is cache
        assert model.calls == 0 and model.temporary == "dropped in forward" and not hasattr(model, "added")
        assert model.log is log and log == []
        assert model.seen is seen and seen == {"first": None}
        assert model.tags is tags and tags == {"a"}


def test_grad_flags_changed_by_forward_are_restored() -> None:
    class Freezes(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.weight.requires_grad_(False)
            return super().forward(x)

    model = Freezes(4, 2)
    torchcost.analyze(model, torch.randn(1, 4))
    assert model.weight.requires_grad


class Rehooks(nn.Module):
    """A forward that registers hooks on its child (one prepended), removes one registered before, and reorders and
    extends an OrderedDict of its own: torch's hook dicts are OrderedDicts, put back by the guard."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.seen: list[str] = []
        self.first = self.fc.register_forward_hook(lambda m, i, o: self.seen.append("first"))
        self.second = self.fc.register_forward_hook(lambda m, i, o: self.seen.append("second"), prepend=True)
        self.history = OrderedDict(a=1, b=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fc.register_forward_hook(lambda m, i, o: None)
        self.fc.register_forward_pre_hook(lambda m, i: None, prepend=True)
        self.first.remove()
        self.history.move_to_end("a")
        self.history["c"] = 3
        out: torch.Tensor = self.fc(x)
        return out


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_hooks_added_and_removed_by_forward_are_put_back_in_order(mode: str) -> None:
    # was (eval): the hook dicts emptied with dict's own methods, which left the OrderedDict's key list behind:
    # every later forward of the model raised KeyError from torch's hook loop
    model = Rehooks()
    hooks, history = model.fc._forward_hooks, model.history
    report = torchcost.analyze(model, torch.randn(2, 4), mode=mode)
    assert report.module("fc").macs == 2 * 4 * 4  # batch 2 x in 4 x out 4 = 32
    assert model.fc._forward_hooks is hooks
    assert list(hooks.items()) == [(model.second.id, hooks[model.second.id]), (model.first.id, hooks[model.first.id])]
    assert list(model.fc._forward_pre_hooks.items()) == []
    assert model.history is history and list(history.items()) == [("a", 1), ("b", 2)]
    assert model.seen == []
    model(torch.randn(2, 4))  # the model runs as before: its forward removes "first", so "second" alone is heard
    assert model.seen == ["second"]


class Tapped(nn.Module):
    """A forward hook whose closure holds the model, storing its layer's output in a dict of the model's: the usual
    way to read features, which a twin's run calls too (a deep copy shares functions)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.taps: dict[str, torch.Tensor] = {}
        self.fc.register_forward_hook(lambda m, i, o: self.taps.__setitem__("fc", o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out


@pytest.mark.parametrize("run", [
    lambda m: torchcost.analyze(m, torch.randn(2, 4)),  # the model itself
    lambda m: torchcost.analyze(m, torch.randn(2, 4), mode="train"),  # a fake twin
    lambda m: torchcost.analyze(m, torch.randn(2, 4), device="meta"),  # a meta twin
    lambda m: torchcost.analyze(m, torch.randn(2, 4), mode="train", time=torchcost.TimeOptions(repeats=1, warmup=0)),
    lambda m: torchcost.max_batch_size(m, torch.randn(2, 4), budget="64 MiB", limit=64),  # probes on a meta copy
    lambda m: torchcost.analyze(m, torch.randn(2, 4), mode="train", parallel=torchcost.Parallel(fsdp=2)),
], ids=["eval", "train", "meta", "timed-step", "max_batch_size", "fsdp"])
def test_what_a_twin_writes_into_the_model_through_a_hook_is_put_back(run: Callable[[nn.Module], Any]) -> None:
    # was (all but eval): the dict held the twin's fake or meta output (or the copy's) after the analysis
    model = Tapped()
    taps, hooks = model.taps, dict(model.fc._forward_hooks)
    run(model)
    assert model.taps is taps and taps == {}
    assert dict(model.fc._forward_hooks) == hooks


# -- a model holding what cannot be deep-copied ----------------------------------------------------------------------

class Locked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.lock = threading.Lock()
        self.helpers = [threading.Lock(), "a note"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            return self.fc(x)


def test_training_step_on_a_model_holding_a_lock() -> None:
    # was: TypeError "cannot pickle '_thread.lock' object" from the twin's deep copy
    model = Locked()
    lock, helpers = model.lock, model.helpers
    report = torchcost.analyze(model, torch.randn(3, 4), mode="train")
    assert report.macs == 3 * 4 * 2  # = 24
    assert report.memory is not None and report.memory.gradient_bytes == (2 * 4 + 2) * 4  # = 40: fc's gradients
    assert model.lock is lock and not lock.locked() and model.helpers is helpers


def test_a_module_that_cannot_be_copied_is_one_input_error() -> None:
    class NoCopies(nn.Linear):
        def __deepcopy__(self, memo: dict[int, Any]) -> NoCopies:
            raise TypeError("NoCopies cannot be copied")

    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(NoCopies(4, 2), torch.randn(1, 4), mode="train")
    text = one_line(info.value)
    assert "training step runs on a copy" in text and "NoCopies cannot be copied" in text


# -- sparse gradients ------------------------------------------------------------------------------------------------

class SparseLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4, sparse=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(ids))


@pytest.mark.parametrize("optimizer", [None, "adam", torch.optim.AdamW])
def test_sparse_embedding_with_a_dense_optimizer_is_refused(optimizer: Any) -> None:
    # was: "the training step failed in optimizer: Adam does not support sparse gradients", after the whole run
    model = SparseLM()
    if isinstance(optimizer, type):
        optimizer = optimizer(model.parameters())
    with pytest.raises(torchcost.InputError) as info:
        torchcost.analyze(model, torch.randint(0, 10, (2, 3)), mode="train", optimizer=optimizer)
    text = one_line(info.value)
    assert "module 'embed' (Embedding)" in text and "sparse" in text and "optimizer='sgd'" in text


@pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")  # Adagrad's step, torch's own warning
@pytest.mark.parametrize("optimizer", ["sgd", torch.optim.Adagrad])
def test_sparse_embedding_with_sgd_or_adagrad(optimizer: Any) -> None:
    # was: NotImplementedError "Cannot access storage of SparseTensorImpl" counting the gradients' bytes
    model = SparseLM()
    if isinstance(optimizer, type):
        optimizer = optimizer(model.parameters())
    report = torchcost.analyze(model, torch.randint(0, 10, (2, 3)), mode="train", optimizer=optimizer)
    assert report.macs == 2 * 3 * 4 * 2  # the Linear: 6 rows x 4 in x 2 out = 48; a lookup multiplies nothing
    # eval and the dense default are unaffected
    assert torchcost.analyze(model, torch.randint(0, 10, (2, 3))).macs == 48


# -- the RNG: nothing this analysis did not draw is rewound ----------------------------------------------------------

class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc(x)) + torch.rand_like(x)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_other_threads_draws_are_never_rewound(mode: str) -> None:
    # was: analyze() forked the global RNG and set it back at the end, so another thread drew the same values again
    # (train: a fake twin, dropout included, draws nothing; eval: ConvBN on real tensors draws nothing either)
    model, x = (Noisy(), torch.randn(2, 16)) if mode == "train" else (ConvBN(), torch.randn(2, 3, 8, 8))
    drawn: list[float] = []
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            drawn.append(torch.rand(1, dtype=torch.float64).item())  # 2**53 values: a repeat means a rewind

    thread = threading.Thread(target=draw, daemon=True)
    thread.start()
    try:
        for _ in range(5):
            torchcost.analyze(model, x, mode=mode)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and drawn
    assert len(set(drawn)) == len(drawn), f"{len(drawn) - len(set(drawn))} of {len(drawn)} draws repeated"


def test_rng_comes_back_as_it_was() -> None:
    # a training step runs on fake tensors, which draw nothing; an eval run of a forward that draws on real tensors
    # (torch.rand_like) puts the state back, since this analysis drew it
    model, x = Noisy(), torch.randn(2, 16)
    for mode in ("train", "eval"):
        before = torch.get_rng_state()
        torchcost.analyze(model, x, mode=mode)
        assert torch.equal(torch.get_rng_state(), before), mode


# -- spectral norm: the power iteration is real work, shown where it runs ----------------------------------------

@pytest.mark.parametrize("mode, norm_macs", [
    ("eval", 16 * 8 + 16),  # sigma = u . (W v): mv 16*8 = 128, vdot 16 -> 144
    ("train", 3 * 16 * 8 + 16),  # plus one power iteration, mv(W^T, u) and mv(W, v): 128 + 128 + 144 = 400
])
def test_spectral_norm_parametrization_is_its_own_row(mode: str, norm_macs: int) -> None:
    from torch.nn.utils import parametrizations

    layer = parametrizations.spectral_norm(nn.Linear(8, 16))
    r = torchcost.analyze(layer, torch.randn(1, 8), mode=mode)
    assert r.root.self_macs == 8 * 16  # = 128: the layer's own addmm, one sample
    assert r.module("parametrizations.weight.0").macs == norm_macs
    assert r.macs == 8 * 16 + norm_macs


@pytest.mark.parametrize("mode, macs", [("eval", 128 + 144), ("train", 128 + 400)])
def test_old_spectral_norm_hook_is_charged_to_its_layer(mode: str, macs: int) -> None:
    from torch.nn.utils import spectral_norm

    layer = spectral_norm(nn.Linear(8, 16))
    r = torchcost.analyze(layer, torch.randn(1, 8), mode=mode)
    assert r.macs == r.root.self_macs == macs  # addmm 128 plus the hook's mv/dot, as in the parametrization case
    assert {"aten::addmm", "aten::mv", "aten::dot"} <= {o.op for o in r.root.ops}
