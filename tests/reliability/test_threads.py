"""Threads: analyze() from several threads gives each the report it would get alone, and leaves torch's global
flags as they were (docs/architecture.md, "Guarantees: threads and signals").

Analyses are serialised by a process-wide lock (run/concurrency.py); an analysis started from inside another in the
same thread is refused rather than deadlocked. A plain forward of the model in another thread while it is analysed
must not reach the report: torch's global module hooks fire in every thread, so the scope tracker ignores the calls
of threads other than the analysing one (collect/scope.py). Every thread is joined with a timeout.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import torchcost
from tests.fixtures.models import Raising, SmallTransformer
from torchcost.errors import ModelError
from torchcost.report import CostReport

ROOT = Path(__file__).resolve().parents[2]
JOIN_S = 60.0


class Pause(nn.Module):
    """Lets go of the GIL in the middle of a module call (as a slow layer or a data loader would), so that another
    thread's module calls land while this one is open."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.001)
        return x


def paused_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 16), Pause(), nn.Sequential(nn.Linear(16, 32), Pause(), nn.ReLU()),
                         nn.Linear(32, 8), Pause())


def per_module(report: CostReport) -> list[tuple[str, int, int, int]]:
    return [(m.name, m.macs, m.flops, m.calls) for m in report.modules]


def run_threads(*targets: Callable[[], None]) -> None:
    """Run the targets in threads started together; re-raise the first failure; fail if one does not finish."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrapped(target: Callable[[], None]) -> None:
        try:
            start.wait(timeout=JOIN_S)
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(t,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_S)
    assert not any(t.is_alive() for t in threads), f"a thread did not finish in {JOIN_S} s"
    if errors:
        raise errors[0]


def test_two_threads_analysing_the_same_model_get_the_right_report() -> None:
    model, x = paused_net(), torch.randn(4, 16)
    expected = per_module(torchcost.analyze(model, x))
    wrong: list[int] = []

    def analyse() -> None:
        for _ in range(6):
            if per_module(torchcost.analyze(model, x)) != expected:
                wrong.append(1)

    run_threads(analyse, analyse)
    assert not wrong, f"{len(wrong)} of 12 reports had wrong per-module counts"


def test_overlapping_analyses_leave_the_fastpath_flag_as_it_was() -> None:
    x = torch.randn(2, 5, 32)
    models = [SmallTransformer().eval(), SmallTransformer().eval()]
    expected = per_module(torchcost.analyze(models[0], x))
    assert torch.backends.mha.get_fastpath_enabled()
    reports: list[CostReport] = []

    def analyse(model: nn.Module) -> Callable[[], None]:
        def go() -> None:
            for _ in range(6):
                reports.append(torchcost.analyze(model, x))
        return go

    run_threads(analyse(models[0]), analyse(models[1]))
    assert torch.backends.mha.get_fastpath_enabled(), "the MultiheadAttention fast-path flag was left False"
    assert all(per_module(r) == expected for r in reports)


def test_a_plain_forward_in_another_thread_does_not_reach_the_report() -> None:
    # needs collect/scope.py to ignore module calls from threads other than the one that installed the hooks
    model, x = paused_net(), torch.randn(4, 16)
    expected = per_module(torchcost.analyze(model, x))
    done = threading.Event()
    forwards: list[int] = []
    wrong: list[int] = []

    def forward() -> None:
        with torch.no_grad():
            while not done.is_set():
                model(x)
                forwards.append(1)

    def analyse() -> None:
        try:
            for _ in range(10):
                if per_module(torchcost.analyze(model, x)) != expected:
                    wrong.append(1)
        finally:
            done.set()

    run_threads(forward, analyse)
    assert forwards, "the other thread never ran a forward"
    assert not wrong, f"{len(wrong)} of 10 reports counted the other thread's module calls"


def test_a_failed_analysis_lets_the_next_thread_in() -> None:
    with pytest.raises(ModelError):
        torchcost.analyze(Raising(), torch.randn(1, 3, 8, 8))
    reports: list[CostReport] = []
    run_threads(lambda: reports.append(torchcost.analyze(nn.Linear(4, 2), torch.randn(1, 4))))
    assert reports[0].macs == 8


NESTED = r"""
import sys
sys.path.insert(0, sys.argv[1])
import torch
from torch import nn
import torchcost
from torchcost.errors import TorchcostError

class AnalysesItself(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
    def forward(self, x):
        torchcost.analyze(nn.Linear(4, 4), torch.randn(1, 4))
        return self.fc(x)

try:
    torchcost.analyze(AnalysesItself(), torch.randn(1, 4))
except TorchcostError as exc:
    print("REFUSED", exc)
report = torchcost.analyze(nn.Linear(4, 2), torch.randn(1, 4))  # the lock was released
print("AFTER", report.macs)
"""


def test_an_analysis_inside_a_forward_is_refused_not_deadlocked() -> None:
    # in a child process: a deadlock must fail this test, not hang the session
    done = subprocess.run([sys.executable, "-c", NESTED, str(ROOT)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REFUSED analyze() was called while an analysis was running in the same thread" in done.stdout
    assert "AFTER 8" in done.stdout
