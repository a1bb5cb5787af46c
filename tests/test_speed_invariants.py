"""What the speed work of issue 16 must keep: the fast paths give what the general ones gave, and the run leaves the
process as it found it (no extra dispatch mode for the model guard)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

import torchcost
from torchcost.collect import composites
from torchcost.trees import op_tensors as _op_tensors
from torchcost.trees import tensors_in


def test_op_tensors_match_the_general_walk() -> None:
    a, b, c = torch.ones(2), torch.zeros(3), torch.ones(1)
    cases = [
        ((a, 1, 2.0, None, [b, c]), {}),
        ((a,), {"out": b, "dim": [0, 1]}),
        (([a, None, b], (c,)), {"dtype": torch.float32}),
        ((), {"x": {"y": a}, "z": (b, [c])}),
    ]
    for args, kwargs in cases:
        assert [id(t) for t in _op_tensors(args, kwargs)] == [id(t) for t in tensors_in((args, kwargs))]


def test_only_functions_reaching_a_composite_are_reentered() -> None:
    functions = [f for _, f in inspect.getmembers(F, inspect.isfunction) if f.__module__ == "torch.nn.functional"]
    reentered = {f.__name__ for f in functions if composites._classify(f) is composites._Kind.REENTER}
    assert "multi_head_attention_forward" in reentered
    assert not reentered & {"relu", "batch_norm", "layer_norm", "hardtanh", "dropout", "linear", "gelu"}


def test_mha_attention_is_priced_whole() -> None:
    mha = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(1, 5, 16)
    report = torchcost.analyze(mha, x, x, x, kwargs={"need_weights": False})
    assert any(o.op == "aten::scaled_dot_product_attention" for o in report.ops)


def test_report_sums_match_the_module_walks_with_tied_and_frozen_weights() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.body = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 8))
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.emb.weight
            self.body[0].weight.requires_grad_(False)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(self.body(self.emb(ids)))
            return out

    model = Tied().eval()
    report = torchcost.analyze(model, torch.randint(0, 10, (3,)))
    params = list(model.parameters())
    assert report.params == sum(p.numel() for p in params)
    assert report.trainable_params == sum(p.numel() for p in params if p.requires_grad)
    assert report.buffers == sum(b.numel() for b in model.buffers())
    assert report.param_bytes == sum(p.numel() * p.element_size() for p in params)
    by_name = {m.name: m for m in report.root.walk()}
    for name, module in model.named_modules():
        node = by_name[name]
        sub = {id(p): p for p in module.parameters()}
        assert node.params == sum(p.numel() for p in sub.values())
        assert node.trainable_params == sum(p.numel() for p in sub.values() if p.requires_grad)
    assert by_name["head"].shared_params == 80 and by_name["emb"].shared_params == 80


def test_buffer_written_in_eval_is_restored_without_a_second_dispatch_mode() -> None:
    class Ema(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("ema", torch.zeros(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.ema.mul_(0.5).add_(x.mean(0))
            return x * 2

    model = Ema()
    torchcost.analyze(model, torch.ones(2, 4))
    assert torch.equal(model.ema, torch.zeros(4))
    seen: list[object] = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            seen.append(torch.utils._python_dispatch._get_current_dispatch_mode_stack())
            return func(*args, **(kwargs or {}))

    with Spy():
        torchcost.analyze(model, torch.ones(2, 4))
    assert seen and max(len(stack) for stack in seen) <= 2  # the spy and torchcost's one collector
    assert torch.equal(model.ema, torch.zeros(4))


def test_memory_figures_survive_storage_churn() -> None:
    """Many storages born and dying within one run (weak references reused): the figures stay those of a fresh
    process's run."""
    model = nn.Sequential(*(m for _ in range(50) for m in (nn.Linear(16, 16), nn.ReLU())))
    x = torch.randn(4, 16)
    first = torchcost.analyze(model, x).to_dict()
    for _ in range(3):
        assert torchcost.analyze(model, x).to_dict() == first


_PEEKED: list[tuple[int, str]] = []  # (outside the module: torchcost puts a module's own lists back after a run)


class _Peek(nn.Module):
    """Records what a progress display would show while the forward runs past it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchcost.collect.recording import live_status

        _PEEKED.append(live_status())
        return x


def test_live_status_names_the_phase_and_the_ops_seen_so_far() -> None:
    from torchcost.collect.recording import live_status

    peek = _Peek()
    model = nn.Sequential(nn.Linear(4, 3), peek).eval()
    started, doing = live_status()
    assert doing == ""  # nothing runs
    torchcost.analyze(model, torch.randn(2, 4))
    # Linear on a 2-D input dispatches aten::t (the weight's transpose) and aten::addmm: 2 ops before the peek
    assert _PEEKED == [(started + 1, "forward, 2 ops")]
    assert live_status() == (started + 1, "")  # the run is over: nothing is shown

    phases: list[str] = []

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        phases.append(live_status()[1].split(",")[0])
        return out.pow(2).mean()

    _PEEKED.clear()
    torchcost.analyze(model, torch.randn(2, 4), mode="train", loss_fn=loss_fn)
    assert [s.split(",")[0] for _, s in _PEEKED] == ["forward"] and phases == ["loss"]


def test_probe_progress_is_cleared_after_measuring(no_store: None) -> None:
    from torchcost.collect import probe

    conv = nn.Conv2d(3, 5, 3, groups=1)
    probe.CACHE.clear()
    torchcost.analyze(conv, torch.randn(1, 3, 9, 9), kernel_memory="measure")
    assert probe.PROGRESS == [0, 0]
