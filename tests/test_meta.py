"""The same model analysed with real tensors and on the meta device gives identical counts, shapes and per-module
values; a meta analysis of a model far too big for this machine runs without allocating it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
from tests.cli.conftest import python
from tests.fixtures.models import ConvBN, LSTMNet, SmallTransformer, TiedLM, TwiceCalled
from torchcost.examples import build

# what must agree: everything the user reads. Left out: the device itself, the free ops (views and copies, which the
# backends choose differently) and the enclosed ops (what a composite such as attention or an LSTM lowered to on each
# backend: one fused kernel on CPU, a decomposition on meta; it is priced as a whole either way), and memory (measured
# by the memory collector, tested with it).
_BACKEND_SPECIFIC = {"device", "free_ops", "enclosed_ops", "memory"}
_MODULE_MEMORY = {"activation_bytes", "peak_memory"}
# The later phases of a training step run the kernels of the memory target, which is "cpu" for a CPU model and
# "cuda" for a meta one: Adam's single-tensor path against its foreach one, CPU math attention against CUDA's
# efficient kernel (whose backward recomputes the attention matrix). They are compared on one target below.
_STEP = {"phases", "step_macs", "step_flops"}
_MODULE_STEP = {"backward_macs", "backward_flops", "self_backward_macs", "self_backward_flops", "recompute_macs",
                "recompute_flops", "optimizer_flops", "input_grad_macs", "weight_grad_macs"}


def _ops(ops: list[dict[str, Any]]) -> tuple[Any, ...]:
    # ops that carry MACs must match one for one; the others by their FLOPs in total: in training, dropout runs as
    # bernoulli_ + div_ + mul on CPU and as one native_dropout on meta (and CUDA), 2 FLOPs per element either way
    return (sorted((o["op"], o["calls"], o["macs"], o["flops"]) for o in ops if o["macs"]),
            sum(o["flops"] for o in ops if not o["macs"]))


def comparable(r: torchcost.CostReport) -> dict[str, Any]:
    d = {k: v for k, v in r.to_dict().items() if k not in _BACKEND_SPECIFIC | _STEP}
    d["ops"] = _ops(d["ops"])
    d["modules"] = [{k: (_ops(v) if k == "ops" else v) for k, v in m.items() if k not in _MODULE_MEMORY | _MODULE_STEP}
                    for m in d["modules"]]
    return d


def real_and_meta(factory: Callable[[], nn.Module], inputs: Callable[[str], tuple[torch.Tensor, ...]],
                  mode: str = "eval") -> tuple[torchcost.CostReport, torchcost.CostReport]:
    torch.manual_seed(0)
    real = factory()
    with torch.device("meta"):
        meta = factory()
    return torchcost.analyze(real, *inputs("cpu"), mode=mode), torchcost.analyze(meta, *inputs("meta"), mode=mode)


def floats(*shape: int) -> Callable[[str], tuple[torch.Tensor, ...]]:
    return lambda device: (torch.randn(*shape, device=device) if device != "meta"
                           else torch.empty(*shape, device=device),)


def ids(*shape: int) -> Callable[[str], tuple[torch.Tensor, ...]]:
    return lambda device: (torch.zeros(*shape, dtype=torch.long, device=device),)


CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[str], tuple[torch.Tensor, ...]]]] = {
    "conv_bn": (ConvBN, floats(2, 3, 8, 8)),
    "transformer": (SmallTransformer, floats(2, 5, 32)),
    "lstm": (LSTMNet, floats(2, 6, 8)),
    "tied": (TiedLM, ids(2, 5)),
    "twice": (TwiceCalled, floats(3, 8)),
}


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_real_equals_meta(case: str, mode: str) -> None:
    factory, inputs = CASES[case]
    real, meta = real_and_meta(factory, inputs, mode)
    assert (real.device, meta.device) == ("cpu", "meta")
    assert comparable(real) == comparable(meta)
    assert real.macs > 0 and real.uncounted == ()


@pytest.mark.parametrize("case", [
    "conv_bn", "lstm", "tied", "transformer", "twice",
])
def test_training_step_real_equals_meta_on_one_target(case: str) -> None:
    factory, inputs = CASES[case]
    torch.manual_seed(0)
    real = factory()
    with torch.device("meta"):
        meta = factory()
    a = torchcost.analyze(real, *inputs("cpu"), mode="train")
    b = torchcost.analyze(meta, *inputs("meta"), mode="train", target="cpu")
    assert [(p.name, p.macs, p.flops) for p in a.phases] == [(p.name, p.macs, p.flops) for p in b.phases]
    assert a.step_flops == b.step_flops > a.flops


@pytest.mark.parametrize("name", ["conv1d_series", "standard_conv", "depthwise_separable"])
def test_examples_real_equals_meta(name: str) -> None:
    real_model, real_inputs = build(name)
    meta_model, meta_inputs = build(name, device="meta")
    assert comparable(torchcost.analyze(real_model, *real_inputs)) == \
        comparable(torchcost.analyze(meta_model, *meta_inputs))


def test_real_inputs_into_meta_model() -> None:
    # a meta model given real inputs runs on meta copies of them: same counts as all-meta
    with torch.device("meta"):
        model = ConvBN()
    a = torchcost.analyze(model, torch.randn(2, 3, 8, 8))
    b = torchcost.analyze(model, torch.empty(2, 3, 8, 8, device="meta"))
    assert comparable(a) == comparable(b)
    assert a.device == "meta"


def test_input_size_on_meta() -> None:
    with torch.device("meta"):
        model = ConvBN()
    r = torchcost.analyze(model, input_size=(2, 3, 8, 8))
    # conv 3->8 k3 p1 on 8x8: 2 * 8 * 64 outputs x 27 MACs; fc: 2 rows x 8 x 4
    assert r.macs == 2 * 8 * 64 * 27 + 2 * 8 * 4
    assert r.module("conv").output_shape.shape == (2, 8, 8, 8)  # type: ignore[union-attr]


# Run in a fresh process: a high-water mark is per process, and this one's already holds whatever earlier tests
# allocated (tests/test_errors.py keeps a 1.6 GB model alive), so growth below it would go unseen here.
_HUGE_ON_META = """
import json, resource, sys
from pathlib import Path

import torch
from torch import nn

import torchcost

STATUS = Path("/proc/self/status")


def rss(field):
    # VmRSS / VmHWM: this process's own figures (ru_maxrss would also count the parent's RSS, kept across fork + exec)
    if STATUS.exists():
        line = next(x for x in STATUS.read_text().splitlines() if x.startswith(field + ":"))
        return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # elsewhere: the peak so far, in bytes on macOS
    return peak if sys.platform == "darwin" else peak * 1024


n = 100_000
with torch.device("meta"):
    model = nn.Sequential(*[nn.Linear(n, n) for _ in range(4)])  # 4 x 10^10 params: 160 GB in float32
    torchcost.analyze(nn.Linear(2, 2), input_size=(1, 2))  # the first run's lazy imports are not the model's
try:
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the RSS now
except OSError:
    pass  # then the growth below is over-estimated by the earlier peak's excess over the RSS, never under-estimated
before = rss("VmRSS")
r = torchcost.analyze(model, input_size=(8, n))
print(json.dumps({"grown": rss("VmHWM") - before, "params": r.params, "macs": r.macs,
                  "param_bytes": r.param_bytes, "device": r.device}))
"""


def test_huge_model_on_meta_allocates_nothing() -> None:
    # how long it takes is measured by benchmarks/meta.py (llama-3-8b and -70b on meta), not asserted here
    run = python(_HUGE_ON_META)
    assert run.rc == 0, run.err
    r = json.loads(run.out.strip().splitlines()[-1])
    n = 100_000
    assert r["params"] == 4 * (n * n + n)
    assert r["macs"] == 4 * 8 * n * n  # 8 rows x n x n per layer
    assert r["param_bytes"] == 4 * (n * n + n) * 4
    assert r["device"] == "meta"
    # one float32 weight alone would be 40 GB; allow 200 MB of interpreter noise
    assert r["grown"] < 200 * 2**20, f"peak RSS grew by {r['grown'] / 2**20:.0f} MiB"


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_attention_inside_multihead_attention_is_priced_as_one_op(device: str) -> None:
    # F.multi_head_attention_forward calls F.scaled_dot_product_attention inside itself; on CPU that is one fused
    # kernel, on meta a decomposition into bmm/softmax. Either way it must be priced as the attention op.
    with torch.device(device):
        model = SmallTransformer(dim=32, heads=4)
    r = torchcost.analyze(model, floats(2, 5, 32)(device)[0])
    attention = {o.op: o for o in r.ops}["aten::scaled_dot_product_attention"]
    # per layer: Q K^T 2 x 4 heads x 5 x 5 x 8 (head dim 32 / 4) = 1,600 MACs, and P V as many; 2 layers
    assert attention.calls == 2
    assert attention.macs == 2 * (2 * 4 * 5 * 5 * 8 + 2 * 4 * 5 * 5 * 8) == 6_400
    assert "aten::bmm" not in {o.op for o in r.ops}
