"""Model safety: analyze() leaves the model, its inputs and torch exactly as it found them, also when forward raises.

Checked for every submodule: device, dtype, train/eval mode, requires_grad, hooks, attribute names, state_dict keys
and values (BatchNorm statistics and num_batches_tracked included); the input tensors; the global RNG; torch's global
module hooks; the attributes of torch, torch.nn.functional, torch.Tensor, nn.Module (identity); the MHA fast-path flag,
grad mode and the dispatch/function mode stacks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
import torch

# torch's TorchDispatchMode lazily imports torch._dynamo on its first dispatch, and that import (torch's own, once per
# process, whoever triggers it) wraps torch.manual_seed in a dynamo-disable shim. Import it here so the snapshots below
# compare what torchcost does, not torch's one-time import.
import torch._dynamo
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_mod

import torchcost
from tests.fixtures.models import ConvBN, InplaceInput, LSTMNet, Raising, SmallTransformer, TiedLM
from torchcost.examples import build

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")
_NAMESPACES = {"torch": torch, "F": F, "Tensor": torch.Tensor, "TensorBase": torch._C.TensorBase,
               "Module": nn.Module, "module_mod": module_mod, "torch.nn": torch.nn}


@dataclass
class Snapshot:
    modules: dict[str, dict[str, Any]]
    state: dict[str, torch.Tensor]
    hooks: dict[str, dict[Any, Any]]
    namespaces: dict[str, dict[str, Any]]
    rng: torch.Tensor
    flags: dict[str, Any]


def snapshot(model: nn.Module) -> Snapshot:
    modules = {}
    for name, m in model.named_modules():
        modules[name] = {
            "training": m.training,
            "attrs": set(m.__dict__),
            "hooks": {h: dict(getattr(m, h, {})) for h in _HOOK_DICTS},
            "params": {n: (id(p), p.device, p.dtype, p.requires_grad, p.grad) for n, p in m._parameters.items()
                       if p is not None},
            "buffers": {n: (id(b), b.device, b.dtype) for n, b in m._buffers.items() if b is not None},
        }
    state = {k: v.detach().clone() if v.device.type != "meta" else v for k, v in model.state_dict().items()}
    hooks = {k: dict(v) for k, v in vars(module_mod).items() if k.startswith("_global_") and isinstance(v, dict)}
    namespaces = {ns: dict(vars(obj)) for ns, obj in _NAMESPACES.items()}
    mha = torch.backends.mha.get_fastpath_enabled()
    flags = {"mha": mha, "grad": torch.is_grad_enabled(), "dtype": torch.get_default_dtype(),
             "dispatch_stack": torch._C._len_torch_dispatch_stack(),
             "function_stack": torch._C._len_torch_function_stack(),
             # (collect/leaves.py switches both off around a leaf module: they must come back on)
             "torch_function": torch._C._is_torch_function_enabled(),
             "python_key_excluded": torch._C._dispatch_tls_is_dispatch_key_excluded(torch._C.DispatchKey.Python),
             "inference": torch.is_inference_mode_enabled()}
    return Snapshot(modules, state, hooks, namespaces, torch.get_rng_state(), flags)


def assert_same(before: Snapshot, model: nn.Module) -> None:
    after = snapshot(model)
    assert after.modules.keys() == before.modules.keys()
    for name, b in before.modules.items():
        a = after.modules[name]
        assert a["training"] == b["training"], f"{name!r} mode changed"
        assert a["attrs"] == b["attrs"], f"{name!r} attributes changed: {a['attrs'] ^ b['attrs']}"
        assert a["hooks"] == b["hooks"], f"{name!r} hooks changed"
        assert a["params"] == b["params"], f"{name!r} parameters changed"
        assert a["buffers"] == b["buffers"], f"{name!r} buffers changed"
    assert after.state.keys() == before.state.keys()
    for k, v in before.state.items():
        now = after.state[k]
        assert now.dtype == v.dtype and now.device == v.device and now.shape == v.shape, k
        if v.device.type != "meta":
            assert torch.equal(now, v), f"{k} changed"
    assert after.hooks == before.hooks, "torch's global module hooks changed"
    for ns, attrs in before.namespaces.items():
        now_attrs = after.namespaces[ns]
        replaced = [k for k, v in attrs.items() if now_attrs.get(k, v) is not v or k not in now_attrs]
        assert not replaced, f"{ns}: {replaced} replaced"
        # new names are only submodules torch imports lazily (torch._inductor, torch.onnx, ...)
        added = [k for k in now_attrs.keys() - attrs.keys() if not isinstance(now_attrs[k], type(torch))]
        assert not added, f"{ns}: {added} added"
    assert torch.equal(after.rng, before.rng), "global RNG state moved"
    assert after.flags == before.flags


def analyze_checked(model: nn.Module, *inputs: torch.Tensor, raises: type[BaseException] | None = None,
                    **kw: Any) -> torchcost.CostReport | None:
    copies = [x.clone() for x in inputs]
    before = snapshot(model)
    if raises is None:
        report = torchcost.analyze(model, *inputs, **kw)
    else:
        with pytest.raises(raises):
            torchcost.analyze(model, *inputs, **kw)
        report = None
    assert_same(before, model)
    for x, c in zip(inputs, copies):
        assert x.device == c.device and x.shape == c.shape and x.dtype == c.dtype
        if x.device.type != "meta":
            assert torch.equal(x, c), "the input tensor changed"
    return report


def mixed_modes(model: nn.Module) -> nn.Module:
    """Train mode overall, with some submodules in eval: each must come back in its own mode."""
    model.train()
    for i, m in enumerate(model.modules()):
        if i % 2:
            m.eval()
    return model


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_train_mode_model_untouched(mode: str) -> None:
    model = ConvBN().train()
    model.bn.running_mean.fill_(0.5)  # not the initial value, so a reset would show too
    model.bn.num_batches_tracked.fill_(7)
    analyze_checked(model, torch.randn(4, 3, 8, 8), mode=mode)
    assert model.training and model.bn.training
    assert int(model.bn.num_batches_tracked) == 7


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mixed_modes_and_flags(mode: str) -> None:
    model = mixed_modes(ConvBN())
    model.conv.weight.requires_grad_(False)
    model.fc.register_forward_hook(lambda m, i, o: None)
    model.register_forward_pre_hook(lambda m, i: None)
    analyze_checked(model, torch.randn(2, 3, 8, 8), mode=mode)
    assert not model.conv.weight.requires_grad and model.conv.bias is not None and model.conv.bias.requires_grad
    assert len(model.fc._forward_hooks) == 1 and len(model._forward_pre_hooks) == 1


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forward_raises(mode: str) -> None:
    model = Raising().train()
    model.bn.num_batches_tracked.fill_(3)
    analyze_checked(model, torch.randn(4, 3, 8, 8), raises=torchcost.ModelError, mode=mode)
    assert not hasattr(model, "scratch")
    assert int(model.bn.num_batches_tracked) == 3


def test_shape_error_leaves_model_untouched() -> None:
    model, _ = build("standard_conv")
    analyze_checked(mixed_modes(model), torch.randn(1, 5, 8, 8), raises=torchcost.ShapeError, mode="train")


def test_inplace_op_on_input() -> None:
    x = torch.randn(3, 4)
    analyze_checked(InplaceInput(), x)
    analyze_checked(InplaceInput().train(), x, mode="train")


def test_inplace_op_on_kwargs_input() -> None:
    x = torch.randn(3, 4)
    copy = x.clone()
    torchcost.analyze(InplaceInput(), kwargs={"x": x})
    assert torch.equal(x, copy)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_attention_and_rnn_models(mode: str) -> None:
    # nn.TransformerEncoderLayer in eval takes the MHA fast path unless disabled: the flag must come back as it was
    for flag in (True, False):
        torch.backends.mha.set_fastpath_enabled(flag)
        try:
            analyze_checked(SmallTransformer(), torch.randn(2, 5, 32), mode=mode)
            analyze_checked(mixed_modes(LSTMNet()), torch.randn(2, 6, 8), mode=mode)
            assert torch.backends.mha.get_fastpath_enabled() is flag
        finally:
            torch.backends.mha.set_fastpath_enabled(True)


def test_tied_and_int_inputs() -> None:
    model = TiedLM()
    analyze_checked(model, torch.randint(0, 100, (2, 5)), mode="train")
    assert model.head.weight is model.embed.weight


def test_dropout_does_not_move_global_rng() -> None:
    model = ConvBN().train()
    analyze_checked(model, torch.randn(2, 3, 8, 8), mode="train")
    # and input_size inputs come from torchcost's own generator
    before = torch.get_rng_state()
    torchcost.analyze(model, input_size=(2, 3, 8, 8), mode="train")
    assert torch.equal(torch.get_rng_state(), before)


class _LayerDrop(nn.Module):
    """Skips each of its layers at random in training, drawing the number on the CPU (transformers' LayerDrop:
    ``torch.rand([])`` with no device), also when the model is on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if not (self.training and torch.rand([]) < 0.5):
                x = layer(x)
        return x


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_forward_drawing_on_the_cpu_leaves_the_rng_as_it_was(device: str) -> None:
    # round 34: on meta (a twin, told of no op) the draws moved the caller's generator
    with torch.device(device):
        model = _LayerDrop()
    x = torch.randn(2, 8).to(device)
    torch.manual_seed(3)
    analyze_checked(model, x, mode="train")
    torch.manual_seed(3)
    r = torchcost.analyze(model, x, mode="train")
    # the same generator state gives the same layers on either device: count them from the draws themselves
    torch.manual_seed(3)
    ran = sum(not bool(torch.rand([]) < 0.5) for _ in range(10))
    assert r.macs == ran * 2 * 8 * 8


def test_meta_model_untouched() -> None:
    with torch.device("meta"):
        model = mixed_modes(ConvBN())
    analyze_checked(model, torch.empty(2, 3, 8, 8, device="meta"), mode="train")
    analyze_checked(model, torch.empty(2, 5, 8, 8, device="meta"), raises=torchcost.ShapeError)
    assert all(p.device.type == "meta" for p in model.parameters())


def test_real_inputs_to_meta_model_stay_real() -> None:
    with torch.device("meta"):
        model = ConvBN()
    x = torch.randn(2, 3, 8, 8)
    copy = x.clone()
    torchcost.analyze(model, x)
    assert x.device.type == "cpu" and torch.equal(x, copy)


def test_double_precision_model() -> None:
    model = ConvBN().double().train()
    analyze_checked(model, torch.randn(2, 3, 8, 8, dtype=torch.float64), mode="train")
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_second_run_is_identical() -> None:
    # nothing left behind changes a later run: the same report twice
    model = ConvBN().train()
    x = torch.randn(2, 3, 8, 8)
    assert torchcost.analyze(model, x, mode="train") == torchcost.analyze(model, x, mode="train")


class _NumpyDraws(nn.Module):
    """Draws from numpy's global generator and Python's ``random`` in its forward, as wav2vec2's SpecAugment draws
    its masks from ``np.random``: how many rows go through the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        rows = int(np.random.randint(1, 5)) + random.randint(0, 2)
        return self.fc(x[:rows])


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_numpy_and_python_generators_are_put_back(device: str, mode: str) -> None:
    np = pytest.importorskip("numpy")
    with torch.device(device):
        model = _NumpyDraws()
    x = torch.randn(8, 8).to(device)
    np.random.seed(5)
    random.seed(5)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    r = torchcost.analyze(model, x, mode=mode)
    # the caller's next draws are the ones the analysis made: the rows it counted, 8 x 8 MACs each
    assert random.getstate() == python_state and (np.random.get_state()[1] == numpy_state[1]).all()
    rows = int(np.random.randint(1, 5)) + random.randint(0, 2)
    assert r.macs == rows * 8 * 8
    np.random.seed(5)
    random.seed(5)
    assert torchcost.analyze(model, x, mode=mode).macs == r.macs  # (the same states, the same count)
