"""Measured time (``analyze(..., time=...)``, ``torchcost SPEC --time``): the repeats asked for run, every called
module gets a time, the counts are those of an untimed run, and the model comes back untouched, also when its
forward raises while being timed. Timings themselves are noisy on a shared machine: only their signs are checked."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import nn

import torchcost
from tests.fixtures.models import ConvBN, TwiceCalled
from tests.test_safety import assert_same, snapshot
from torchcost import cli
from torchcost.report import CostReport
from torchcost.timing.measure import TimeOptions, time_options

FAST = TimeOptions(repeats=3, warmup=1)


def _counts(report: CostReport) -> dict[str, Any]:
    data = report.to_dict()
    data.pop("measured_time", None)
    return data


def test_repeats_medians_and_modules() -> None:
    model, x = ConvBN().eval(), torch.randn(2, 3, 8, 8)
    report = torchcost.analyze(model, x, time=FAST)
    t = report.measured_time
    assert t is not None
    assert (t.repeats, t.hooked_repeats, t.warmup, t.mode, t.device, t.clock) == (3, 3, 1, "eval", "cpu",
                                                                                 "perf_counter")
    assert t.threads == torch.get_num_threads()
    assert 0 < t.forward_min_s <= t.forward_s <= t.forward_max_s
    assert t.hooked_forward_s > 0
    assert t.step_s is None and t.backward_s is None
    # every module that ran has an entry, under its name, with rates from the report's own counts
    called = {m.name for m in report.modules if m.calls}
    assert {m.name for m in t.modules} == called
    for entry in t.modules:
        cost = report.module(entry.name)
        assert entry.seconds > 0 and entry.calls == cost.calls
        assert math.isclose(entry.flops_per_s, cost.flops / entry.seconds)
    assert math.isclose(t.flops_per_s, report.flops / t.forward_s)
    # the counts are those of a run without timing
    assert _counts(report) == _counts(torchcost.analyze(model, x))


def test_time_argument_forms() -> None:
    assert time_options(False) is None and time_options(None) is None
    assert time_options(True) == TimeOptions()
    assert time_options(7) == TimeOptions(repeats=7)
    assert time_options(FAST) is FAST
    for bad in ("yes", 1.5):
        with pytest.raises(torchcost.InputError):
            time_options(bad)
    with pytest.raises(torchcost.InputError, match="repeats"):
        TimeOptions(repeats=0)
    with pytest.raises(torchcost.InputError, match="warmup"):
        TimeOptions(warmup=-1)
    report = torchcost.analyze(nn.Linear(4, 2), torch.randn(1, 4), time=2)
    assert report.measured_time is not None and report.measured_time.repeats == 2
    assert torchcost.analyze(nn.Linear(4, 2), torch.randn(1, 4)).measured_time is None


def test_module_called_twice_sums_its_calls() -> None:
    report = torchcost.analyze(TwiceCalled(), torch.randn(2, 8), time=FAST)
    assert report.measured_time is not None
    twice = [m for m in report.measured_time.modules if m.calls == 2]
    assert twice, "the module called twice per forward is timed over both calls"


def test_max_seconds_and_progress() -> None:
    said: list[str] = []
    options = TimeOptions(repeats=1000, warmup=1, max_seconds=1e-4, progress=said.append)
    t = torchcost.analyze(nn.Linear(64, 64), torch.randn(8, 64), time=options).measured_time
    assert t is not None and 1 <= t.repeats < 1000 and 1 <= t.hooked_repeats < 1000
    assert said[0].startswith("timing: warm-up") and any("module hooks" in s for s in said)


def test_model_untouched_and_writes_undone() -> None:
    model = ConvBN()
    model.bn.running_mean.fill_(0.5)
    model.fc.register_forward_hook(lambda m, i, o: None)
    model.train()  # timed in eval mode, handed back in train mode

    class Ema(nn.Module):  # writes into its own buffer on every forward, under no_grad
        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.register_buffer("seen", torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.add_(1)
            self.inner.conv.weight.mul_(1.0)  # and into a parameter, in place
            return self.inner(x)

    wrapper, x = Ema(), torch.randn(2, 3, 8, 8)
    before = snapshot(wrapper)
    torchcost.analyze(wrapper, x, time=FAST)
    assert_same(before, wrapper)
    assert float(wrapper.seen) == 0 and model.training
    assert all(not getattr(m, h) for m in wrapper.modules() if m is not model.fc
               for h in ("_forward_hooks", "_forward_pre_hooks"))


class _RaisesLater(nn.Module):
    """Raises on its Nth forward while timed, after writing into its buffer, adding an attribute and drawing from
    the RNG. The counter lives in a dict inside a dict attribute, which no restore reaches: the counting run makes
    call 1, the warm-up call 2, the plain timed runs 3-5, the hooked ones 6-8."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("stat", torch.ones(4))
        self.state = {"counter": {"calls": 0, "fail_at": fail_at}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counter = self.state["counter"]
        counter["calls"] += 1
        if counter["calls"] >= counter["fail_at"]:
            with torch.no_grad():
                self.stat.mul_(3)
            self.scratch = 1
            torch.rand(2)
            raise RuntimeError("fails while being timed")
        return self.fc(x) * self.stat


@pytest.mark.parametrize("fail_at", [2, 4, 7])  # in the warm-up, the plain runs, the hooked runs
def test_forward_raises_while_timed(fail_at: int) -> None:
    model, x = _RaisesLater(fail_at), torch.randn(2, 4)
    state = model.state
    before = snapshot(model)
    with pytest.raises(torchcost.ModelError, match="timed"):
        torchcost.analyze(model, x, time=FAST)
    assert state["counter"]["calls"] == fail_at, "it failed where it was meant to"
    assert_same(before, model)
    assert torch.equal(model.stat, torch.ones(4)) and not hasattr(model, "scratch")


def test_train_step_timed_on_a_copy() -> None:
    model = ConvBN().train()
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grad, x = model.fc.weight.grad.clone(), torch.randn(2, 3, 8, 8)
    before = snapshot(model)
    report = torchcost.analyze(model, x, mode="train", optimizer=opt, time=FAST)
    assert_same(before, model)
    assert torch.equal(model.fc.weight.grad, grad) and model.conv.weight.grad is None
    assert not opt.state, "the user's optimizer is never stepped"
    t = report.measured_time
    assert t is not None and t.mode == "train" and t.step_s is not None and t.step_min_s is not None
    assert t.backward_s is not None and t.optimizer_s is not None and t.step_flops_per_s is not None
    assert 0 < t.step_min_s <= t.step_s and t.backward_s > 0 and t.optimizer_s > 0
    assert {m.name for m in t.modules} == {m.name for m in report.modules if m.calls}
    assert _counts(report) == _counts(torchcost.analyze(model, x, mode="train", optimizer=opt))


def test_meta_model_refused_in_one_line() -> None:
    with torch.device("meta"):
        model = nn.Linear(4, 4)
    with pytest.raises(torchcost.InputError, match=r"real weights|meta") as info:
        torchcost.analyze(model, input_size=(1, 4), time=True)
    assert "\n" not in str(info.value)
    with pytest.raises(torchcost.InputError, match="meta"):
        torchcost.analyze(nn.Linear(4, 4), input_size=(1, 4), device="meta", time=True)


def test_json_round_trip_and_renderers() -> None:
    report = torchcost.analyze(ConvBN(), torch.randn(2, 3, 8, 8), time=FAST)
    back = CostReport.from_json(report.to_json())
    assert back.measured_time == report.measured_time
    assert back.to_dict() == report.to_dict()
    text = report.table()
    assert "Measured time on cpu" in text and "3 repeats after 1 warm-up" in text
    assert "Measured" not in torchcost.analyze(ConvBN(), torch.randn(2, 3, 8, 8)).table()


def test_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources

    schema = json.loads((resources.files("torchcost") / "schema" / "report.schema.json").read_text())
    assert "measured_time" in schema["properties"]
    part = {"$defs": schema["$defs"], "$ref": "#/$defs/measuredTime"}
    for mode in ("eval", "train"):
        report = torchcost.analyze(ConvBN(), torch.randn(2, 3, 8, 8), mode=mode, time=FAST)
        jsonschema.Draft202012Validator(part).validate(report.to_dict()["measured_time"])


def test_cli_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["example:standard_conv", "--time", "--repeats", "2", "--warmup", "1", "--format", "json",
                     "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["measured_time"]["repeats"] == 2 and data["measured_time"]["warmup"] == 1
    assert CostReport.from_dict(data).measured_time is not None
    assert cli.main(["example:standard_conv", "--time", "--repeats", "2", "--no-progress"]) == 0
    assert "Measured time on cpu" in capsys.readouterr().out
    assert cli.main(["example:standard_conv", "--repeats", "2"]) == 2
    assert "--repeats goes with --time" in capsys.readouterr().err
    assert cli.main(["example:standard_conv", "--meta", "--time"]) == 2
    err = capsys.readouterr().err
    assert "real" in err and err.count("\n") == 1


def test_gpu_check_without_cuda(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                tmp_path: Any) -> None:
    from benchmarks import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "check")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA" in out
    assert not list(tmp_path.iterdir()), "nothing measured, nothing written"


def test_gpu_check_names_and_tables() -> None:
    from benchmarks.gpu_check import TimeRow, hardware_for, markdown

    names = {"NVIDIA H200": "h200", "NVIDIA H100 80GB HBM3": "h100-sxm", "NVIDIA H100 PCIe": "h100-pcie",
             "NVIDIA H100 NVL": "h100-nvl", "NVIDIA A100-SXM4-40GB": "a100-40gb", "NVIDIA A100-SXM4-80GB": "a100-80gb",
             "NVIDIA L4": "l4", "NVIDIA L40S": "l40s", "NVIDIA GeForce RTX 4090": "rtx-4090",
             "AMD Instinct MI300X": "mi300x", "Tesla T4": None}
    for name, key in names.items():
        assert hardware_for(name) == key, name
    assert hardware_for("NVIDIA A100", total_memory=40 * 2**30) == "a100-40gb"
    from torchcost.timing.hardware import hardware_names

    assert {k for k in names.values() if k} <= set(hardware_names()), "every name maps to a table entry"
    row = TimeRow("gpt2", "train", 0.1, 0.09, 0.12, 20, 0.08, -20.0, 1e12, 0.3, {"forward": 0.03})
    result = {"device_name": "NVIDIA H200", "hardware": "h200", "torch": "x", "cuda": "y", "seconds": 10.0,
              "budget_s": 420.0, "smoke": False, "time": [row.__dict__], "memory": []}
    text = markdown(result)
    assert "| gpt2 | train | 100.00 | 90.00-120.00 | 20 | 80.00 | -20.0 % | 1.0 | 30.0 % |" in text
