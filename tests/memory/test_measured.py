"""The allocator's measured peak beside the prediction (issue 10): a CPU run on real tensors under a profiler session
agrees with tests/memory/truth.py's oracle, a twin is never measured, and the CUDA arithmetic (no GPU here) on a
stand-in for torch.cuda's statistics."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import torchcost
from tests.memory.models import small_mlp
from tests.memory.truth import eval_truth
from torchcost.collect.allocator import running_peak
from torchcost.formulas import REGISTRY
from torchcost.render.layout import memory_lines
from torchcost.report import CostReport, MemoryReport
from torchcost.run import execute
from torchcost.run.concurrency import exclusive
from torchcost.run.execute import Measured, allocator_meter
from torchcost.run.step import StepOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def _measured_run(model: torch.nn.Module, x: torch.Tensor, mode: str, measure_cpu: bool) -> tuple[int, int | None]:
    """(predicted peak, measured peak) of one run through run/execute.py, the prediction's start added."""
    options = StepOptions(mode, "adamw" if mode == "train" else None, None, None, "cpu")  # type: ignore[arg-type]
    with exclusive():
        ran = execute.run(model, (x,), {}, REGISTRY, options, True, torch.device("cpu"), measure_cpu=measure_cpu)
        assert ran.recording.memory is not None
        trace = ran.recording.memory.trace()
        return trace.peak_bytes, ran.measured.peak(trace.start_bytes)


def test_cpu_real_eval_measured_equals_truth() -> None:
    model, x = small_mlp(), torch.randn(32, 256)
    predicted, measured = _measured_run(model, x, "eval", measure_cpu=True)
    truth = eval_truth(model, x)
    assert measured == truth
    assert truth * 0.98 <= predicted <= truth * 1.02, f"predicted {predicted:,} vs measured {truth:,}"


def test_cpu_not_measured_unless_asked() -> None:
    _, measured = _measured_run(small_mlp(), torch.randn(32, 256), "eval", measure_cpu=False)
    assert measured is None


def test_twin_is_never_measured() -> None:
    _, measured = _measured_run(small_mlp(), torch.randn(8, 256), "train", measure_cpu=True)
    assert measured is None
    report = torchcost.analyze(small_mlp(), torch.randn(8, 256), mode="train")
    assert report.memory is not None and report.memory.measured_peak_bytes is None


def test_running_peak_keeps_the_order_of_same_time_events() -> None:
    assert running_peak([]) == 0
    assert running_peak([(2, -100), (1, 100), (3, 50)]) == 100
    assert running_peak([(1, 100), (1, -100), (1, 60)]) == 100  # a stable sort: recorded order within a time


class _FakeCuda:
    """torch.cuda's peak statistics for one device: 1,000 B held before the run, 5,120 B at most during it."""

    def __init__(self) -> None:
        self.allocated, self.peak = 1_000, 9_999_999  # a stale peak from before the run
        self.calls: list[tuple[str, torch.device]] = []

    def reset_peak_memory_stats(self, device: torch.device) -> None:
        self.calls.append(("reset", device))
        self.peak = self.allocated

    def memory_allocated(self, device: torch.device) -> int:
        return self.allocated

    def max_memory_allocated(self, device: torch.device) -> int:
        self.calls.append(("max", device))
        return self.peak


def _fake_cuda(monkeypatch: pytest.MonkeyPatch) -> _FakeCuda:
    fake = _FakeCuda()
    for name in ("reset_peak_memory_stats", "memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    # the cuBLAS workspaces made before the measurement (they need a GPU): noted instead
    monkeypatch.setattr(execute, "_warm_cublas", lambda device, backward: fake.calls.append(("warm", backward)))
    return fake


def test_cuda_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_cuda(monkeypatch)
    measured, device = Measured(), torch.device("cuda", 0)
    with allocator_meter(measured, device, measure_cpu=False):
        fake.allocated, fake.peak = 3_048, 6_120  # the run rose 5,120 B above the 1,000 B held at its start
        fake.allocated = 1_512
    # the workspaces are made first (outside the rise), then the peak statistics reset
    assert fake.calls == [("warm", False), ("reset", device), ("max", device)]
    assert measured.above_start == 5_120 and measured.by == "cuda allocator"
    assert measured.peak(40_960) == 46_080  # on the prediction's footing: its start_bytes + the rise


def test_cuda_unmeasured_when_the_run_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch)
    measured = Measured()
    with pytest.raises(RuntimeError), allocator_meter(measured, torch.device("cuda"), measure_cpu=False):
        raise RuntimeError("the model failed")
    assert measured.above_start is None and measured.peak(1) is None


def test_no_cpu_session_inside_the_callers_profiler() -> None:
    measured = Measured()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        with allocator_meter(measured, torch.device("cpu"), measure_cpu=True):
            torch.ones(10)
    assert measured.above_start is None


def _with_measured(report: CostReport, measured: int | None, by: str) -> CostReport:
    assert report.memory is not None
    return replace(report, memory=replace(report.memory, measured_peak_bytes=measured, measured_by=by))


def test_footer_and_json() -> None:
    report = torchcost.analyze(small_mlp(), torch.randn(4, 256))
    plain = memory_lines(report)
    assert not any("measured by" in line for line in plain)
    assert report.memory is not None
    assert "measured_peak_bytes" not in report.memory.to_dict()  # unmeasured reports' JSON is unchanged
    peak = report.memory.peak_bytes
    low = _with_measured(report, peak * 2, "cpu allocator (profiler)")
    lines = memory_lines(low)
    assert lines[1].startswith("  measured by the allocator: ") and "prediction 50.0 % low" in lines[1]
    assert "cpu allocator (profiler)" in lines[1] and lines[2:] == plain[1:]
    assert "prediction exact" in memory_lines(_with_measured(report, peak, "cuda allocator"))[1]
    assert "prediction 100.0 % high" in memory_lines(_with_measured(report, peak // 2, "x"))[1]
    assert all(len(line) <= 100 for line in lines)
    assert low.memory is not None
    data = low.memory.to_dict()
    assert data["measured_peak_bytes"] == peak * 2 and data["measured_by"] == "cpu allocator (profiler)"
    assert MemoryReport.from_dict(data) == low.memory
    assert MemoryReport.from_dict(report.memory.to_dict()) == report.memory


def test_analyze_measures_the_cpu_allocator_when_asked() -> None:
    torch.manual_seed(0)
    model, x = small_mlp(), torch.randn(32, 256)
    r = torchcost.analyze(model, x, measure_memory=True)
    assert r.memory is not None and r.memory.measured_peak_bytes == eval_truth(model, x)
    assert r.memory.measured_by.startswith("cpu")
