"""collect/metagaps.py: a twin's ``aten::_grouped_mm`` in float32 or float16, which torch 2.14's meta kernel refuses
(it takes bfloat16 only) and the CPU kernel runs, as CUDA's does through its fallback (the two share their checks and
their output rule, so a "cuda" target gets the same answers). The answers are compared with the CPU kernel's own
outputs and errors; a mixture-of-experts training step and generation in float32 are counted as in bfloat16, on a
fake twin of a CPU model and on a meta model (whose target is CUDA by default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
from torchcost.collect import metagaps

_GROUPED_MM = torch.ops.aten._grouped_mm.default
OFFS = torch.tensor([7, 14, 21, 28], dtype=torch.int32)


def _meta(value: Any) -> Any:
    """A meta tensor of ``value``'s sizes, strides and dtype (anything else as it is)."""
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    return value


# name -> (mat_a, mat_b, offs) in float32; each layout the kernels take
LAYOUTS: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]] = {
    "2d x 3d (experts)": lambda: (torch.randn(28, 64), torch.randn(4, 64, 128), OFFS),
    "2d x 3d, transposed experts, 130 columns (rows padded)": lambda: (
        torch.randn(28, 64), torch.randn(4, 130, 64).transpose(-2, -1), OFFS),
    "3d x 3d (batched)": lambda: (torch.randn(4, 8, 64), torch.randn(4, 64, 32), None),
    "3d x 3d, 30 columns": lambda: (torch.randn(4, 8, 64), torch.randn(4, 30, 64).transpose(-2, -1), None),
    "2d x 2d (weight gradients: offs split K)": lambda: (torch.randn(128, 32).t(), torch.randn(32, 64),
                                                         torch.tensor([8, 16, 24, 32], dtype=torch.int32)),
    "3d x 2d": lambda: (torch.randn(4, 28, 64), torch.randn(128, 64).t(), torch.tensor([16, 32, 48, 64],
                                                                                       dtype=torch.int32)),
}


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_output_is_the_cpu_kernels(layout: str, dtype: torch.dtype, target: str) -> None:
    a, b, offs = LAYOUTS[layout]()
    a, b = a.to(dtype), b.to(dtype)
    real = torch._grouped_mm(a, b, offs=offs)
    args = (_meta(a), _meta(b), _meta(offs))
    with pytest.raises(RuntimeError):  # (what this answers: the meta kernel refuses the call)
        _GROUPED_MM(*args)
    made = metagaps.answer(_GROUPED_MM, args, {}, target)
    assert made.device.type == "meta"
    assert (made.shape, made.stride(), made.dtype) == (real.shape, real.stride(), real.dtype)


REFUSED: dict[str, Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]] = {
    "no offsets beside a 2d matrix": lambda: ((torch.randn(28, 64), torch.randn(4, 64, 128)), {}),
    "int64 offsets": lambda: ((torch.randn(28, 64), torch.randn(4, 64, 128), OFFS.long()), {}),
    "contraction sizes differ": lambda: ((torch.randn(28, 64), torch.randn(4, 32, 128), OFFS), {}),
    "group counts differ": lambda: ((torch.randn(28, 64), torch.randn(3, 64, 128), OFFS), {}),
    "a 1d matrix": lambda: ((torch.randn(64), torch.randn(4, 64, 128), OFFS), {}),
    "rows not of whole 16 bytes": lambda: ((torch.randn(28, 64), torch.randn(4, 64, 130), OFFS), {}),
    "a bias": lambda: ((torch.randn(28, 64), torch.randn(4, 64, 128), OFFS), {"bias": torch.zeros(4, 128)}),
    "another output dtype": lambda: ((torch.randn(28, 64), torch.randn(4, 64, 128), OFFS),
                                     {"out_dtype": torch.bfloat16}),
}


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_call_the_cpu_kernel_refuses_is_refused_with_its_message(case: str, target: str) -> None:
    args, kwargs = REFUSED[case]()
    with pytest.raises(RuntimeError) as real:
        torch._grouped_mm(*args, **kwargs)
    with pytest.raises(RuntimeError) as answered:
        metagaps.answer(_GROUPED_MM, tuple(map(_meta, args)), {k: _meta(v) for k, v in kwargs.items()}, target)
    assert str(answered.value) == str(real.value).splitlines()[0]


def test_calls_no_known_kernel_takes_are_left_to_the_meta_kernel() -> None:
    a, b = torch.empty(28, 64, device="meta"), torch.empty(4, 64, 128, device="meta")
    offs = _meta(OFFS)
    assert metagaps.answer(_GROUPED_MM, (a, b, offs), {}, "mps") is None  # (a device whose kernel is not known)
    assert metagaps.answer(_GROUPED_MM, (a, b, offs), {}, None) is None
    assert metagaps.answer(_GROUPED_MM, (a.double(), b.double(), offs), {}, "cpu") is None  # (no kernel takes it)
    assert metagaps.answer(torch.ops.aten.mm.default, (a, a.t()), {}, "cpu") is None


class Experts(nn.Module):
    """Four experts of 64 -> 32, seven tokens each, as transformers' grouped-mm experts run them."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 64, 32) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offs = torch.tensor([7, 14, 21, 28], dtype=torch.int32, device=x.device)
        out: torch.Tensor = torch._grouped_mm(x, self.w, offs=offs)
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_float32_mixture_of_experts_training_step_is_counted_as_in_bfloat16(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), Experts()).to(dtype)
    report = torchcost.analyze(model, torch.randn(28, 16, dtype=dtype), mode="train")
    # forward: the Linear 28*16*64 = 28,672; the experts 28 tokens x 32 outputs x 64 = 57,344
    assert report.macs == 28 * 16 * 64 + 28 * 32 * 64 == 86_016
    # backward: the experts' input gradient (28 x 64 results, 32 each: 57,344) and weight gradient (4 x 64 x 32
    # results, 7 tokens each: 57,344), the Linear's weight gradient 16*64*28 = 28,672 (its input needs none)
    assert report.step_macs == 86_016 + 28 * 64 * 32 + 4 * 64 * 32 * 7 + 16 * 64 * 28 == 229_376
    backward = next(p for p in report.phases if p.name == "backward")
    assert {o.op: o.calls for o in backward.ops}["aten::_grouped_mm"] == 2
    assert report.memory is not None and report.memory.method == "fake"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_mixture_of_experts_on_meta_is_counted_for_its_cuda_target(dtype: torch.dtype) -> None:
    """A model on the meta device (target "cuda" by default): CUDA's kernel takes float32 and float16 through its
    fallback, so the analysis runs and counts what the CPU model's does."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(16, 64), Experts()).to(dtype)
    x = torch.empty(28, 16, dtype=dtype, device="meta")
    assert torchcost.analyze(model, x).macs == 28 * 16 * 64 + 28 * 32 * 64 == 86_016  # (as above)
    report = torchcost.analyze(model, x, mode="train")
    assert report.step_macs == 86_016 + 28 * 64 * 32 + 4 * 64 * 32 * 7 + 16 * 64 * 28 == 229_376  # (as above)


def test_a_float32_transformers_mixtral_trains_and_generates_as_in_bfloat16() -> None:
    from tests.serve.models import build

    ids = torch.randint(0, 128, (2, 14))
    steps, generations = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        model = build("mixtral", dtype)
        steps[dtype] = torchcost.analyze(model, kwargs={"input_ids": ids}, mode="train").step_macs
        # (40 new tokens: the decode steps between the sampled ones are plain forwards, under TwinAnswers)
        made = torchcost.analyze_generation(model, prompt_len=14, new_tokens=40, batch_size=2, reports=False)
        generations[dtype] = (made.prefill.macs, made.decode_macs)
    assert steps[torch.float32] == steps[torch.bfloat16]
    assert generations[torch.float32] == generations[torch.bfloat16]


class FillMin(nn.Module):
    """A linear layer whose masked outputs are filled with the dtype's minimum, made as SEW-D's and DeBERTa-like
    ``XSoftmax`` make it: ``torch.tensor(...)`` on the default device, the CPU, whatever the input's device."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        fill = torch.tensor(torch.finfo(y.dtype).min)
        out: torch.Tensor = y.masked_fill(y > 0, fill).softmax(-1)
        return out


@pytest.mark.parametrize("inplace", [False, True])
def test_masked_fill_with_a_cpu_value_on_meta_is_the_meta_kernels_output(inplace: bool) -> None:
    a, mask, value = torch.empty(3, 5, device="meta"), torch.empty(3, 5, dtype=torch.bool, device="meta"), \
        torch.tensor(-1.0)
    op = torch.ops.aten.masked_fill_.Tensor if inplace else torch.ops.aten.masked_fill.Tensor
    with pytest.raises(RuntimeError, match="same device"):  # (what this answers: the meta kernel refuses it)
        op(a, mask, value)
    for target in ("cpu", "cuda"):
        made = metagaps.answer(op, (a, mask, value), {}, target)
        assert (made.device.type, made.shape, made.stride(), made.dtype) == ("meta", (3, 5), (5, 1), torch.float32)
        assert (made is a) == inplace
    assert metagaps.answer(op, (a, mask, value), {}, "mps") is None  # (a device whose kernel is not known)
    assert metagaps.answer(op, (a, mask, torch.tensor([-1.0])), {}, "cpu") is None  # (no kernel takes a 1-d value)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_fill_value_made_on_the_cpu_counts_on_meta_as_on_the_cpu(mode: str) -> None:
    torch.manual_seed(0)
    model = FillMin()
    with torch.device("meta"):
        meta = FillMin()
    x = torch.randn(4, 8)
    real = torchcost.analyze(model, x, mode=mode, target="cpu")
    on_meta = torchcost.analyze(meta, x.to("meta"), mode=mode, target="cpu")
    # the Linear 4*8*6 = 192 MACs, 2*192 + 4*6 (bias) = 408 FLOPs; the comparison 1 an element (24), the fill free,
    # softmax 5 an element (120)
    assert real.macs == on_meta.macs == 4 * 8 * 6 == 192
    assert real.flops == on_meta.flops == 408 + 24 + 120 == 552
    assert (real.step_macs, real.step_flops) == (on_meta.step_macs, on_meta.step_flops)
