"""Kernel memory measured by probes (collect/probe.py): the real CPU kernel of a call the workspace table does not
claim runs once under the allocator, after the run, and its transient bytes count at that op.

The truths are the CPU allocator's (tests/memory/truth.py). Shapes are small: every test takes well under a second.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import torchcost
from tests.memory.truth import eval_truth, train_truth
from torchcost.collect import probe
from torchcost.collect import workspace as ws

pytestmark = pytest.mark.usefixtures("one_thread")

_AVX512 = ws._measured_isa(ws.GROUPED_CONV_ISA)
A = torch.ops.aten


@pytest.fixture(autouse=True)
def _fresh_cache(no_store: None) -> Iterator[None]:
    """Each test measures for itself: the process-wide cache starts empty and is put back afterwards, and no
    store of an earlier process answers (a test of the store names its own folder)."""
    saved = dict(probe.CACHE)
    probe.CACHE.clear()
    yield
    probe.CACHE.clear()
    probe.CACHE.update(saved)


def _conv() -> tuple[nn.Module, torch.Tensor]:
    """A 3x3 f32 conv, groups = 1, large enough for oneDNN (batch 2): no table entry claims it."""
    torch.manual_seed(0)
    return nn.Conv2d(64, 64, 3, padding=1), torch.randn(2, 64, 56, 56)


def _lstm() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.LSTM(32, 64), torch.randn(20, 4, 32)


def _conv_args(x: torch.Tensor, w: torch.Tensor) -> tuple[Any, ...]:
    return (x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)


# -- the probe itself -----------------------------------------------------------------------------------------------


def test_an_op_without_internal_memory_measures_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # f32 mm is not probed (not in the policy); measured anyway, it holds nothing beyond its output
    a, b = torch.randn(64, 32), torch.randn(32, 48)
    assert probe.ask("aten::mm", A.mm.default, (a, b), {}, None)[0] is None
    monkeypatch.setattr(probe, "_wanted", lambda name, leaves: True)
    wanted = probe.ask("aten::mm", A.mm.default, (a, b), {}, None)[0]
    assert wanted is not None
    assert probe.measure([wanted]) == {wanted.key: 0}


_ONEDNN_BF16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_matmul_operand_blas_cannot_take_is_probed_and_its_copy_measured(dtype: torch.dtype) -> None:
    # a = x[:, ::2] of x[64, 96]: strides (96, 2), neither row- nor column-major, so aten's addmm_impl_cpu_ clones it
    # (64 * 48 elements) before the BLAS call; b[48, 32] is row-major. mm, and addmm with a bias, hold the clone:
    # 64 * 48 * 4 = 12,288 bytes in float32, 64 * 48 * 2 = 6,144 in bf16 and fp16
    a, b = torch.randn(64, 96, dtype=dtype)[:, ::2], torch.randn(48, 32, dtype=dtype)
    clone = 64 * 48 * a.element_size()
    for name, func, args in (("aten::mm", A.mm.default, (a, b)),
                             ("aten::addmm", A.addmm.default, (torch.randn(32, dtype=dtype), a, b))):
        wanted = probe.ask(name, func, args, {}, None)[0]
        assert wanted is not None
        if dtype == torch.float32 or not _ONEDNN_BF16:  # (oneDNN, where it takes the call, holds more of its own)
            assert probe.measure([wanted])[wanted.key] == clone
    # a broadcast row (stride 0 down the rows) is no BLAS layout either; a transposed operand is one
    assert probe.ask("aten::mm", A.mm.default, (torch.randn(1, 48).expand(64, 48), b.float()), {}, None)[0] is not None
    assert probe.ask("aten::mm", A.mm.default, (torch.randn(48, 64).t(), b.float()), {}, None)[0] is None


def test_a_lower_precision_matmul_is_probed_only_where_onednn_can_take_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # bf16/fp16 in BLAS layouts: torch hands them to oneDNN only where its device check passes (AVX512 or AMX);
    # elsewhere its own kernels run, and they hold nothing of the allocator's
    calls = []
    for dtype in (torch.bfloat16, torch.float16):
        for m, k, n in ((1, 64, 64), (64, 64, 1), (7, 33, 5), (128, 256, 96)):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype).t()  # (b as nn.Linear's weight)
            calls += [("aten::mm", A.mm.default, (a, b)),
                      ("aten::addmm", A.addmm.default, (torch.randn(n, dtype=dtype), a, b)),
                      ("aten::bmm", A.bmm.default, (a.expand(3, m, k), b.expand(3, k, n))),
                      ("aten::baddbmm", A.baddbmm.default, (torch.randn(3, m, n, dtype=dtype), a.expand(3, m, k),
                                                            b.expand(3, k, n)))]
    lower_onednn = {torch.bfloat16: _ONEDNN_BF16,
                    torch.float16: bool(torch.backends.mkldnn.is_available()
                                        and torch.ops.mkldnn._is_mkldnn_fp16_supported())}
    for name, func, args in calls:
        asked = probe.ask(name, func, args, {}, None)[0]
        assert (asked is not None) == lower_onednn[args[-1].dtype], (name, [t.shape for t in args])
    was = torch.backends.mkldnn.enabled
    torch._C._set_mkldnn_enabled(False)  # oneDNN off: torch's own kernels everywhere
    try:
        assert all(probe.ask(name, func, args, {}, None)[0] is None for name, func, args in calls)
    finally:
        torch._C._set_mkldnn_enabled(was)
    # measured anyway where oneDNN cannot take them: nothing
    monkeypatch.setattr(probe, "_wanted", lambda name, leaves: True)
    native = [probe.ask(name, func, args, {}, None)[0] for name, func, args in calls
              if not lower_onednn[args[-1].dtype]]
    found = probe.measure([p for p in native if p is not None])
    assert set(found.values()) <= {0} and len(found) == len(native)


def test_a_conv_probe_is_the_blocked_copies() -> None:
    # x[2, 64, 56, 56], w[64, 64, 3, 3], f32: oneDNN reorders the input into a channel-blocked copy (64 channels are
    # a multiple of 16: the plain size, 2*64*56*56*4 = 1,605,632) and the weight (64*64*9*4 = 147,456), both alive
    # while the output is computed: 1,753,088 bytes beyond the output
    x, w = torch.randn(2, 64, 56, 56), torch.randn(64, 64, 3, 3)
    wanted = probe.ask("aten::convolution", A.convolution.default, _conv_args(x, w), {}, None)[0]
    assert wanted is not None
    held = probe.measure([wanted])[wanted.key]
    if _AVX512:
        assert held == 1_753_088
    # the same call on meta and on fake tensors is the same probe (same key, a cache hit)
    runs = probe.runs()
    with FakeTensorMode() as fake:
        fx, fw = fake.from_tensor(x), fake.from_tensor(w)
    for args in (_conv_args(x.to("meta"), w.to("meta")), _conv_args(fx, fw)):
        again = probe.ask("aten::convolution", A.convolution.default, args, {}, None)[0]
        assert again is not None and again.key == wanted.key and probe.cached(again) == held
    assert probe.measure([wanted]) == {wanted.key: held} and probe.runs() == runs


def test_the_key_holds_strides_dtype_and_threads() -> None:
    x, w = torch.randn(2, 8, 16, 16), torch.randn(8, 8, 3, 3)
    key = probe.ask("aten::convolution", A.convolution.default, _conv_args(x, w), {}, None)[0]
    last = probe.ask("aten::convolution", A.convolution.default,
                     _conv_args(x.to(memory_format=torch.channels_last), w), {}, None)[0]
    half = probe.ask("aten::convolution", A.convolution.default,
                     _conv_args(x.bfloat16(), w.bfloat16()), {}, None)[0]
    torch.set_num_threads(2)
    two = probe.ask("aten::convolution", A.convolution.default, _conv_args(x, w), {}, None)[0]
    assert key is not None and last is not None and half is not None and two is not None
    assert len({key.key, last.key, half.key, two.key}) == 4


def test_the_size_cap_and_failures_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    x, w = torch.randn(2, 8, 16, 16), torch.randn(8, 8, 3, 3)
    monkeypatch.setattr(probe, "MAX_PROBE_BYTES", 1000)
    # refused for the cap, which follows the memory free: not an answer for good
    assert probe.ask("aten::convolution", A.convolution.default, _conv_args(x, w), {}, None) == (None, False)
    monkeypatch.undo()
    # a probe that raises gives no figure (and is not cached): the analysis goes on with the table's
    wanted = probe.ask("aten::convolution", A.convolution.default, _conv_args(x, w), {}, None)[0]
    assert wanted is not None

    def broken(*args: Any) -> Any:
        raise RuntimeError("no kernel")

    monkeypatch.setitem(probe.BUILDERS, "aten::convolution", broken)
    assert probe.measure([wanted]) == {} and probe.cached(wanted) is None
    model, x = nn.Conv2d(8, 8, 3, padding=1), torch.randn(2, 8, 16, 16)
    with probe.kernel_memory("table"):
        table = torchcost.analyze(model, x)
    assert torchcost.analyze(model, x).peak_memory == table.peak_memory


def test_no_probe_while_the_caller_profiles() -> None:
    x, w = torch.randn(2, 8, 16, 16), torch.randn(8, 8, 3, 3)
    wanted = probe.ask("aten::convolution", A.convolution.default, _conv_args(x, w), {}, None)[0]
    assert wanted is not None
    with torch.autograd.profiler.profile(profile_memory=True):
        assert probe.measure([wanted]) == {}
    assert wanted.key in probe.measure([wanted])


# -- in an analysis ----------------------------------------------------------------------------------------------------


def test_lstm_inference_matches_the_allocator() -> None:
    model, x = _lstm()
    truth = eval_truth(model, x)
    with probe.kernel_memory("table"):
        before = torchcost.analyze(model, x).peak_memory
    r = torchcost.analyze(model, x)
    # measured here: 137,216 B with the table alone (-60 %), 341,768 with the probe, the allocator's 341,768
    assert before < 0.5 * truth
    assert r.memory is not None and r.memory.at_peak.workspace > 0
    assert abs(r.peak_memory - truth) <= 0.02 * truth


class _EveryOther(nn.Module):
    """A product of every other feature: x[:, ::2] is no BLAS layout, so aten clones it inside the mm."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(48, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mm(x[:, ::2], self.w)


def test_a_strided_matmul_operand_matches_the_allocator() -> None:
    # x[64, 96], w[48, 32], float32: alive during the mm are x (24,576 B), w (6,144), the output (64*32*4 = 8,192)
    # and the clone of x[:, ::2] (64*48*4 = 12,288): 51,200 B. With the table alone (no probe) the clone is missing.
    torch.manual_seed(0)
    model, x = _EveryOther(), torch.randn(64, 96)
    assert eval_truth(model, x) == 24_576 + 6_144 + 8_192 + 12_288 == 51_200
    assert torchcost.analyze(model, x).peak_memory == 51_200
    with probe.kernel_memory("table"):
        assert torchcost.analyze(model, x).peak_memory == 51_200 - 12_288


def test_lstm_train_step_matches_the_allocator() -> None:
    # the forward's and the backward's probes (the backward's inputs from a real training forward)
    model, x = _lstm()
    r = torchcost.analyze(model, x, mode="train", optimizer="sgd")
    truth = train_truth(model, x, make_optimizer=lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9))
    assert r.memory is not None and r.memory.method == "fake"
    assert abs(r.peak_memory - truth) <= 0.02 * truth  # 705,544 B (-23 %) with the table alone


def test_onednn_f32_conv_matches_the_allocator() -> None:
    model, x = _conv()
    r = torchcost.analyze(model, x)
    truth = eval_truth(model, x)
    assert r.memory is not None and r.memory.at_peak.workspace > 0
    assert abs(r.peak_memory - truth) <= 0.02 * truth
    if _AVX512:
        assert r.memory.at_peak.workspace == 1_753_088 and r.peak_memory == truth


def test_probes_are_cached_across_analyses() -> None:
    model, x = _conv()
    runs = probe.runs()
    first = torchcost.analyze(model, x)
    assert probe.runs() == runs + 1
    second = torchcost.analyze(model, x)
    assert probe.runs() == runs + 1  # a cache hit: nothing ran again
    assert second.peak_memory == first.peak_memory
    assert first.memory is not None and second.memory is not None
    assert second.memory.timeline.bytes == first.memory.timeline.bytes


def _store_file(folder: Path) -> Path:
    files = list(folder.glob("probes-*.json"))
    assert len(files) == 1, files
    return files[0]


def _asked_probes(model: nn.Module, x: torch.Tensor) -> list[probe.Probe]:
    """The probes an eval analysis of ``model`` asks for (probe.measure's argument, or cached's)."""
    asked: list[probe.Probe] = []
    real = probe.cached

    def spy(p: probe.Probe) -> int | None:
        asked.append(p)
        return real(p)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probe, "cached", spy)
        torchcost.analyze(model, x)
    return asked


def test_a_later_process_takes_the_figures_from_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHCOST_CACHE_DIR", str(tmp_path))
    model, x = _conv()
    runs = probe.runs()
    first = torchcost.analyze(model, x)
    assert probe.runs() == runs + 1
    data = json.loads(_store_file(tmp_path).read_text())
    assert data["machine"] == probe.machine() and data["machine"]["torch"] == torch.__version__
    [(text, held)] = data["probes"].items()  # the one conv's forward call, by its op, arguments and threads
    [asked] = {p.key for p in _asked_probes(model, x)}  # (the second analysis asks the cache for it)
    assert text == hashlib.sha256(repr(asked).encode()).hexdigest()[:32]
    assert "'aten.convolution.default'" in repr(asked) and "shape=(2, 64, 56, 56)" in repr(asked)
    assert first.memory is not None and held == first.memory.at_peak.workspace > 0
    # a new process: its own cache empty, the file read again
    probe.CACHE.clear()
    monkeypatch.setattr(probe, "_STORES", {})
    second = torchcost.analyze(model, x)
    assert probe.runs() == runs + 1  # nothing measured: the store answered
    assert second.to_dict() == first.to_dict()


def test_a_store_of_another_machine_or_unreadable_is_not_taken(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHCOST_CACHE_DIR", str(tmp_path))
    model, x = _conv()
    runs = probe.runs()
    first = torchcost.analyze(model, x)
    path = _store_file(tmp_path)
    data = json.loads(path.read_text())
    for changed in ({**data, "machine": {**data["machine"], "build": "another torch"}},  # another build of torch
                    {**data, "probes": {k: -1 for k in data["probes"]}},  # not a figure
                    "not json"):
        path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
        probe.CACHE.clear()
        monkeypatch.setattr(probe, "_STORES", {})
        assert torchcost.analyze(model, x).to_dict() == first.to_dict()
        runs += 1
        assert probe.runs() == runs + 1  # measured again, and written back whole
        assert json.loads(path.read_text()) == data


def test_a_store_that_cannot_be_written_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("")
    monkeypatch.setenv("TORCHCOST_CACHE_DIR", str(blocked / "torchcost"))  # (under a file: no folder can be made)
    model, x = _conv()
    runs = probe.runs()
    first = torchcost.analyze(model, x)
    assert probe.runs() == runs + 1 and list(tmp_path.iterdir()) == [blocked]
    assert torchcost.analyze(model, x).to_dict() == first.to_dict() and probe.runs() == runs + 1  # the process's own


def test_no_store_is_kept_when_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # (where it would go were it on)
    monkeypatch.setenv("TORCHCOST_CACHE_DIR", "off")
    runs = probe.runs()
    torchcost.analyze(*_conv())
    assert probe.runs() == runs + 1 and probe.stored() == {} and list(tmp_path.iterdir()) == []


def test_the_table_policy_is_the_old_behaviour() -> None:
    model, x = _conv()
    runs = probe.runs()
    with probe.kernel_memory("table"):
        r = torchcost.analyze(model, x)
    assert probe.runs() == runs and r.memory is not None and r.memory.at_peak.workspace == 0
    # weights, bias, input and output, nothing inside the kernel: 147,456 + 256 + 1,605,632 + 1,605,632
    assert r.peak_memory == 3_358_976
    with pytest.raises(ValueError):
        probe.set_kernel_memory("always")  # type: ignore[arg-type]


@pytest.mark.skipif(not _AVX512, reason="the table's entries are measured on an AVX512 CPU without AMX")
def test_measure_policy_agrees_with_the_table_where_both_know() -> None:
    # a depthwise conv the table claims: "auto" takes the table (no probe), "measure" the probe; they agree
    torch.manual_seed(0)
    model, x = nn.Conv2d(20, 20, 3, padding=1, groups=20, bias=False), torch.randn(2, 20, 15, 15)
    runs = probe.runs()
    auto = torchcost.analyze(model, x)
    assert probe.runs() == runs
    with probe.kernel_memory("measure"):
        measured = torchcost.analyze(model, x)
    assert probe.runs() == runs + 1
    assert auto.memory is not None and measured.memory is not None
    assert measured.memory.at_peak.workspace == auto.memory.at_peak.workspace == 80_352


def test_a_meta_model_with_a_cpu_target_is_probed_too() -> None:
    model, x = _conv()
    real = torchcost.analyze(model, x)
    meta = torchcost.analyze(model.to("meta"), x.to("meta"), target="cpu")
    assert meta.peak_memory == real.peak_memory
    assert torchcost.analyze(model, x.to("meta"), target="cuda").memory.at_peak.workspace == 0  # type: ignore[union-attr]


# -- what a probe leaves alone ---------------------------------------------------------------------------------------


class _Seen(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_model_rng_and_callers_modes_are_left_alone() -> None:
    model, x = _lstm()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with probe.kernel_memory("table"):
        table = torchcost.analyze(model, x, mode="train", optimizer="sgd").peak_memory
    probe.CACHE.clear()
    r = torchcost.analyze(model, x, mode="train", optimizer="sgd")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert r.peak_memory > table
    # under the caller's no_grad, inference_mode, autocast and dispatch mode, the allocator's figures (the probes
    # ran with all of them off: the caller's mode sees no probe op; under autocast the model runs in bf16, and so
    # do the probes, from the bf16 arguments they were asked for). The truth is measured in an autocast region of
    # its own: the analysis leaves the region's cache of cast weights filled
    plain = eval_truth(model, x)
    callers: list[tuple[Any, int]] = [(torch.no_grad(), plain), (torch.inference_mode(), plain)]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # (else oneDNN refuses the bf16 LSTM: torch itself raises)
        callers.append((torch.autocast("cpu", dtype=torch.bfloat16), eval_truth(model, x, amp=torch.bfloat16)))
    for outer, truth in callers:
        probe.CACHE.clear()
        with outer:
            assert torchcost.analyze(model, x).peak_memory == truth
    probe.CACHE.clear()
    seen, without = _Seen(), _Seen()
    with seen:
        assert torchcost.analyze(model, x).peak_memory == plain
    with without, probe.kernel_memory("table"):
        torchcost.analyze(model, x)
    assert seen.ops == without.ops  # the run's own ops, not one of the probe's


def test_the_measured_peak_leaves_the_probes_out() -> None:
    # measure_memory=True runs the allocator meter around the run: the probes run after it
    model, x = _conv()
    r = torchcost.analyze(model, x, measure_memory=True)
    assert r.memory is not None and r.memory.measured_peak_bytes is not None
    assert r.memory.measured_peak_bytes == eval_truth(model, x)
    assert abs(r.peak_memory - r.memory.measured_peak_bytes) <= 0.02 * r.memory.measured_peak_bytes


def test_the_analyze_keyword_and_the_cli_flag_choose_the_policy() -> None:
    model, x = _conv()
    runs = probe.runs()
    table = torchcost.analyze(model, x, kernel_memory="table")
    assert probe.runs() == runs and table.peak_memory == 3_358_976  # as test_the_table_policy_is_the_old_behaviour
    auto = torchcost.analyze(model, x, kernel_memory="auto")
    assert probe.runs() == runs + 1 and auto.memory is not None and auto.memory.at_peak.workspace > 0
    assert probe.get_kernel_memory() == "auto"  # the keyword is for that run only
    with pytest.raises(torchcost.InputError, match="kernel_memory must be one of auto, measure, table"):
        torchcost.analyze(model, x, kernel_memory="sometimes")  # type: ignore[arg-type]
    from torchcost.cli import main

    assert main(["example:conv1d_series", "--kernel-memory", "table", "--format", "json", "--no-progress",
                 "-o", "/dev/null"]) == 0
