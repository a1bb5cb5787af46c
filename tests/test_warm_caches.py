"""An analysis leaves what it learned in the process for the next one: the fake twin's answers (collect/fakeops.py),
the trusted plans of direct leaves (collect/leaves.py), the optimizer's tapes and warm-up state (collect/tape.py,
run/step.py), the kernel memory of planned calls (collect/memory.py), the models whose forward read values
(run/plan.py). Issue 16's speed work added them; none may change a figure. Here a model is analysed, then changed in
place (a layer frozen, replaced, cast, its settings rewritten) or analysed again under other global settings or
options (another optimizer, amp, a cuda target, meta, a simulated rank of sharded training), and its second report
must be the report a fresh process gives for the model as it is then: every case's reference comes from one
subprocess, where each case has sizes of its own so that no case warms another's answers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from benchmarks.report_identity import _VOLATILE, _first_difference
from torch import nn

import torchcost
from torchcost.parallel.config import Parallel

ROOT = Path(__file__).resolve().parents[1]


def _mlp(width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, 24), nn.ReLU(), nn.Dropout(0.1), nn.Linear(24, 8), nn.LayerNorm(8))


def _cnn(width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=1, groups=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, width))


def _no_bias(m: nn.Sequential) -> None:
    first = cast("nn.Linear", m[0])
    m[0] = nn.Linear(first.in_features, first.out_features, bias=False)


def _no_affine(m: nn.Sequential) -> None:
    norm = cast("nn.LayerNorm", m[4])
    norm.elementwise_affine = False
    norm.register_parameter("weight", None)
    norm.register_parameter("bias", None)


def _padded(m: nn.Sequential) -> None:
    cast("nn.Conv2d", m[0]).padding = (2, 2)


def _strided(m: nn.Sequential) -> None:
    cast("nn.Conv2d", m[3]).stride = (2, 2)


def _batch_stats(m: nn.Sequential) -> None:
    norm = cast("nn.BatchNorm2d", m[1])
    norm.track_running_stats, norm.running_mean, norm.running_var, norm.num_batches_tracked = False, None, None, None


@contextlib.contextmanager
def _no_onednn() -> Iterator[None]:
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # (mkldnn.flags() warns when it restores)
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


@contextlib.contextmanager
def _float64_default() -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # (the optimizer's step counters are made in it: 8 bytes, not 4)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@dataclass(frozen=True)
class Case:
    build: Callable[[int], nn.Sequential]
    input: Callable[[int], torch.Tensor]
    mode: str
    change: Callable[[nn.Sequential], None] | None = None  # done to the model after its first analysis
    setting: Callable[[], contextlib.AbstractContextManager[None]] | None = None  # held over the second analysis
    double: bool = False  # the model and its input cast to float64 after the first analysis
    options: tuple[tuple[str, Any], ...] = ()  # analyze()'s options for the second analysis (an optimizer: made
    # from the model)


def _rows(width: int) -> torch.Tensor:
    return torch.randn(3, width)


def _images(width: int) -> torch.Tensor:
    return torch.randn(2, 3, 10 + width % 7, 12)


def _freeze(m: nn.Sequential) -> None:
    m[0].requires_grad_(False)


def _no_dropout(m: nn.Sequential) -> None:
    cast("nn.Dropout", m[2]).p = 0.0  # (on the CPU, dropout with p = 0 runs no op at all)


def _plain_sgd(m: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(m.parameters(), lr=0.1)  # (no momentum: no state)


CASES: dict[str, Case] = {}
for _mode in ("eval", "train"):
    CASES[f"mlp-{_mode}-no-bias"] = Case(_mlp, _rows, _mode, change=_no_bias)
    CASES[f"mlp-{_mode}-float64"] = Case(_mlp, _rows, _mode, double=True)
    CASES[f"mlp-{_mode}-no-affine"] = Case(_mlp, _rows, _mode, change=_no_affine)
    CASES[f"cnn-{_mode}-padding"] = Case(_cnn, _images, _mode, change=_padded)
    CASES[f"cnn-{_mode}-stride"] = Case(_cnn, _images, _mode, change=_strided)
    CASES[f"cnn-{_mode}-batch-stats"] = Case(_cnn, _images, _mode, change=_batch_stats)
    CASES[f"cnn-{_mode}-no-onednn"] = Case(_cnn, _images, _mode, setting=_no_onednn)
CASES["mlp-train-frozen"] = Case(_mlp, _rows, "train", change=_freeze)
CASES["mlp-train-no-dropout"] = Case(_mlp, _rows, "train", change=_no_dropout)
CASES["mlp-train-float64-default"] = Case(_mlp, _rows, "train", setting=_float64_default)
CASES["cnn-train-float64-default"] = Case(_cnn, _images, "train", setting=_float64_default)
CASES["mlp-train-sgd"] = Case(_mlp, _rows, "train", options=(("optimizer", _plain_sgd),))
CASES["mlp-train-bf16"] = Case(_mlp, _rows, "train", options=(("amp", "bf16"),))
CASES["cnn-train-cuda-target"] = Case(_cnn, _images, "train", options=(("target", "cuda"),))
CASES["cnn-eval-on-meta"] = Case(_cnn, _images, "eval", options=(("device", "meta"),))
CASES["mlp-train-fsdp2-rank0"] = Case(_mlp, _rows, "train", options=(("parallel", Parallel(fsdp=2, rank=0)),))
CASES["cnn-train-fsdp2-rank1"] = Case(_cnn, _images, "train", options=(("parallel", Parallel(fsdp=2, rank=1)),))

def _width(name: str) -> int:
    return 16 + sorted(CASES).index(name)  # (each case its own sizes: no case answers another's calls)


def _report(model: nn.Module, x: torch.Tensor, case: Case) -> dict[str, Any]:
    setting = case.setting() if case.setting is not None else contextlib.nullcontext()
    options = {k: v(model) if k == "optimizer" else v for k, v in case.options}
    with setting:
        d = torchcost.analyze(model, x, mode=case.mode, **options).to_dict()  # type: ignore[arg-type]
    for key in _VOLATILE:
        d.pop(key, None)
    plain: dict[str, Any] = json.loads(json.dumps(d))
    return plain


def _as_changed(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The case's model and input as they are after the change, built so."""
    case, width = CASES[name], _width(name)
    model, x = case.build(width), case.input(width)
    if case.change is not None:
        case.change(model)
    if case.double:
        model, x = model.double(), x.double()
    return model, x


# serving (torchcost.serve): a tiny causal LM of a family (tests/serve/models.py), a prompt, new tokens, a batch
GENERATIONS: dict[str, tuple[str, int, int, int]] = {
    "llama-12-3": ("llama", 12, 3, 1), "llama-20-5-b2": ("llama", 20, 5, 2),
    "gemma2-window-18-4": ("gemma2", 18, 4, 1), "mixtral-experts-14-3-b2": ("mixtral", 14, 3, 2)}


def _generation(name: str) -> dict[str, Any]:
    from tests.serve.models import build
    from torchcost.serve import analyze_generation

    family, prompt, new, batch = GENERATIONS[name]
    # (the experts' kernel, aten::_grouped_mm, has a meta kernel for half precision only: tests/serve/test_kv_cache.py)
    dtype = torch.bfloat16 if family == "mixtral" else torch.float32
    d = analyze_generation(build(family, dtype), prompt_len=prompt, new_tokens=new, batch_size=batch).to_dict()
    plain: dict[str, Any] = json.loads(json.dumps(d, default=str))
    for report in (plain.get("prefill_report"), plain.get("decode_report")):
        for key in _VOLATILE:
            if isinstance(report, dict):
                report.pop(key, None)
    return plain


def references(threads: int) -> dict[str, dict[str, Any]]:
    """Each case's model as changed, analysed once, and each generation analysed once (in a fresh process: the
    subprocess below), with this process's thread count (a kernel's own memory depends on it: collect/memory.py's
    ``_kernel_settings``)."""
    torch.set_num_threads(threads)
    out = {}
    for name, case in CASES.items():
        model, x = _as_changed(name)
        out[name] = _report(model, x, case)
    for name in GENERATIONS:
        out[name] = _generation(name)
    return out


@pytest.fixture(scope="module")
def fresh() -> dict[str, dict[str, Any]]:
    code = "import json, sys; from tests.test_warm_caches import references; "
    code += f"json.dump(references({torch.get_num_threads()}), sys.stdout)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return result


def test_generations_analysed_after_each_other_get_a_fresh_processs_reports(fresh: dict[str, dict[str, Any]]) -> None:
    """A serving analysis keeps its steps' answers for the process too (collect/fakeops.py's ``TwinAnswers``, the
    decode steps resuming a cache): the generations analysed here after each other, in reverse order and then in
    order, give what each gives alone in a fresh process."""
    names = list(GENERATIONS)
    here = {name: _generation(name) for name in reversed(names)}
    for name in names:
        assert _generation(name) == here[name], name
        assert here[name] == fresh[name], f"{name}: {_first_difference(here[name], fresh[name])}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_model_changed_after_an_analysis_gets_a_fresh_processs_report(
        name: str, fresh: dict[str, dict[str, Any]]) -> None:
    case, width = CASES[name], _width(name)
    torch.manual_seed(1)
    model, x = case.build(width), case.input(width)
    first = _report(model, x, Case(case.build, case.input, case.mode))  # (no setting: the process's defaults)
    again = _report(model, x, Case(case.build, case.input, case.mode))
    assert again == first  # (the repeat: planned leaves and replayed tapes give the first report)
    if case.change is not None:
        case.change(model)
    if case.double:
        model, x = model.double(), x.double()
    second = _report(model, x, case)
    assert second != first, "the change must show in the report, or this case checks nothing"
    assert second == fresh[name], _first_difference(second, fresh[name])

