"""The roofline prediction against a made-up Hardware, with every time derived by hand beside it; MFU; JSON; render."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest
import torch
from torch import nn

import torchcost
from torchcost.errors import InputError
from torchcost.render.csv import render_csv
from torchcost.render.layout import TableOptions
from torchcost.render.markdown import render_markdown
from torchcost.report import CostReport
from torchcost.timing.hardware import Hardware
from torchcost.timing.roofline import call_seconds, mfu

# matrix float32 1 TFLOP/s at 50%, vector 0.1 TFLOP/s at 100%, memory 100 GB/s at 80%
HW = Hardware("made-up", {"float32": 1e12, "bfloat16": 4e12}, 1e11, 100e9, key="made-up", matmul_efficiency=0.5,
              vector_efficiency=1.0, memory_efficiency=0.8, interconnect="wire", interconnect_bandwidth=10e9)


def test_one_call_is_the_larger_of_compute_and_memory() -> None:
    # 1e6 MACs at 1e12 x 0.5: 2e6 / 5e11 = 4 us; + 1e5 other FLOPs at 1e11: 1 us; 400 kB at 80 GB/s: 5 us
    assert call_seconds(HW, "float32", 10**6, 10**5, 400_000) == (pytest.approx(5e-6), True)
    assert call_seconds(HW, "float32", 10**6, 10**5, 40_000) == (pytest.approx(5e-6), False)  # 4 + 1 us > 0.5 us
    # bfloat16 takes its own peak: 2e6 / 2e12 = 1 us
    assert call_seconds(HW, "bfloat16", 10**6, 0, 0) == (pytest.approx(1e-6), False)


def _linear(batch: int) -> CostReport:
    return torchcost.analyze(nn.Linear(1000, 1000, bias=False), torch.randn(batch, 1000), hardware=HW, memory=False)


def test_a_linear_layer_by_hand() -> None:
    # mm: 8 x 1000 x 1000 = 8e6 MACs -> 1.6e7 FLOPs / 5e11 = 32 us. Bytes: x 8*1000*4 + W 1000*1000*4 read,
    # y 8*1000*4 written = 4,064,000 B / 80e9 = 50.8 us: memory-bound
    p = _linear(8).predicted_time
    assert p is not None
    assert p.forward_s == pytest.approx(50.8e-6) == p.step_s
    assert p.memory_bound_share == 1.0 and p.module("").bound == "memory"  # type: ignore[union-attr]
    # batch 1000: 1e9 MACs -> 2e9 / 5e11 = 4 ms; bytes (3 * 1000*1000*4) / 80e9 = 0.15 ms: compute-bound
    p = _linear(1000).predicted_time
    assert p is not None
    assert p.forward_s == pytest.approx(4e-3) and p.memory_bound_share == 0.0
    # samples/s: a float input has no tokens: 1000 samples / 4 ms
    assert (p.samples, p.tokens, p.per_s_unit) == (1000, 0, "samples/s") and p.per_s == pytest.approx(250_000)
    assert (p.hardware, p.dtype, p.peak_flops, p.matmul_efficiency) == ("made-up", "float32", 1e12, 0.5)


def test_sum_of_each_calls_max_not_max_of_sums() -> None:
    model = nn.Sequential(nn.Linear(1000, 1000, bias=False), nn.ReLU())
    p = torchcost.analyze(model, torch.randn(1000, 1000), hardware=HW, memory=False).predicted_time
    assert p is not None
    # mm: 4 ms compute (above). relu: 1e6 FLOPs / 1e11 = 10 us; 8e6 B (read + write) / 80e9 = 100 us: memory
    assert p.forward_s == pytest.approx(4e-3 + 100e-6)
    first, second = p.module("0"), p.module("1")
    assert first is not None and second is not None
    assert first.seconds == pytest.approx(4e-3) and second.seconds == pytest.approx(100e-6)
    assert second.bound == "memory" and p.module("").bound == "compute"  # type: ignore[union-attr]
    assert p.memory_bound_share == pytest.approx(100e-6 / 4.1e-3)


def test_call_overhead_is_added_per_call() -> None:
    slow = Hardware("slow", {"float32": 1e12}, 1e11, 100e9, matmul_efficiency=0.5, memory_efficiency=0.8,
                    call_overhead=1e-3)
    p = torchcost.analyze(nn.Linear(1000, 1000, bias=False), torch.randn(8, 1000), hardware=slow,
                          memory=False).predicted_time
    assert p is not None and p.forward_s == pytest.approx(50.8e-6 + 1e-3)


def test_a_training_step_on_meta_with_tokens_and_mfu() -> None:
    model = nn.Sequential(nn.Embedding(100, 64), nn.Linear(64, 100)).to("meta")
    ids = torch.randint(0, 100, (4, 16), device="meta")
    r = torchcost.analyze(model, ids, mode="train", optimizer="sgd", hardware=HW, step_time=0.5, memory=False)
    p = r.predicted_time
    assert p is not None
    assert [x.name for x in p.phases] == [x.name for x in r.phases]
    assert p.step_s == pytest.approx(sum(x.seconds for x in p.phases)) and p.step_s > p.forward_s > 0
    assert p.forward_s == pytest.approx(p.phases[0].seconds)
    assert p.module("").step_seconds == pytest.approx(p.step_s)  # type: ignore[union-attr]  # the loss is the model's
    assert (p.tokens, p.per_s_unit) == (64, "tokens/s") and p.per_s == pytest.approx(64 / p.step_s)
    # MFU: the step's FLOPs over 0.5 s x the float32 dense peak 1e12
    assert (p.step_time, p.step_time_source) == (0.5, "given")
    assert p.mfu == pytest.approx(r.step_flops / (0.5 * 1e12)) == mfu(r.step_flops, 0.5, 1e12)


def test_step_time_needs_hardware() -> None:
    with pytest.raises(InputError, match="step_time"):
        torchcost.analyze(nn.Linear(2, 2), torch.randn(1, 2), step_time=1.0)
    with pytest.raises(InputError, match="unknown hardware"):
        torchcost.analyze(nn.Linear(2, 2), torch.randn(1, 2), hardware="abacus")


def test_the_tf32_switch_follows_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    hw = Hardware("tf", {"float32": 1e12, "tf32": 8e12}, 1e12, 1e15)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    # a convolution's 1e6 MACs at the TF32 rate: 2e6 / (8e12 x 0.8) = 0.3125 us; a matmul at float32 ("highest")
    assert call_seconds(hw, "float32", 10**6, 0, 0, conv=True)[0] == pytest.approx(2e6 / 6.4e12)
    assert call_seconds(hw, "float32", 10**6, 0, 0)[0] == pytest.approx(2e6 / 0.8e12)


def _schema() -> dict[str, object]:
    return json.loads((resources.files("torchcost") / "schema" / "report.schema.json").read_text())


def test_json_round_trip_and_schema() -> None:
    r = torchcost.analyze(nn.Sequential(nn.Linear(8, 8), nn.GELU()), torch.randn(4, 8), hardware=HW, step_time=1e-3)
    data = r.to_dict()
    assert data["schema_version"] == 3 and data["predicted_time"]["hardware"] == "made-up"
    jsonschema.Draft202012Validator(_schema()).validate(data)
    back = CostReport.from_json(r.to_json())
    assert back == r and back.predicted_time == r.predicted_time
    assert "predicted_time" not in torchcost.analyze(nn.Linear(2, 2), torch.randn(1, 2)).to_dict()


def test_renderers_show_what_the_report_holds() -> None:
    r = torchcost.analyze(nn.Sequential(nn.Linear(1000, 1000, bias=False), nn.ReLU()), torch.randn(1000, 1000),
                          hardware=HW, step_time=0.01, memory=False)
    text = r.table(columns=("bytes", "intensity", "predicted", "bound"))
    assert "Predicted on made-up (float32 dense 1 TFLOP/s at 50%, 100 GB/s at 80%):\n  forward 4.10 ms" in text
    assert "243,902 samples/s" in text  # 1000 / 4.1 ms
    # MFU: 2,001,000,000 FLOPs (2e9 + 1e6 relu) / (0.01 s x 1e12) = 20.0%
    assert "MFU 20.0%" in text
    assert "FLOP/" in text and "Predicted" in text and "memory" in text and "compute" in text
    md = render_markdown(r, TableOptions(columns=("predicted", "bound")))
    assert "| Predicted | Bound |" in md and "4.00 ms | compute |" in md
    csv_text = render_csv(r, TableOptions(fold=False, columns=("bytes", "predicted")))
    header, root = csv_text.splitlines()[:2]
    assert header.endswith(",bytes,predicted_s")
    # bytes: mm 3 * 4e6 = 12e6 + relu 8e6 = 20,000,000
    assert root.split(",")[-2] == "20000000"
    with pytest.raises(InputError, match="unknown column"):
        TableOptions(columns=("speed",))
    assert "Predicted on" not in torchcost.analyze(nn.Linear(2, 2), torch.randn(1, 2)).table()


def test_communication_is_wire_bytes_over_the_interconnect() -> None:
    from dataclasses import replace

    from torchcost.report import CollectiveCount
    from torchcost.timing.roofline import predict

    r = torchcost.analyze(nn.Linear(4, 4), torch.randn(2, 4), memory=False)
    # an all-gather of 8 MB on 8 ranks sends 7/8 of it (7e6 B); an all-reduce of 1 MB on 4 ranks 2 x 3/4 (1.5e6 B)
    ranked = replace(r, collectives=(
        CollectiveCount("c10d::_allgather_base_", "all_gather", 1, 8_000_000, 8, "forward"),
        CollectiveCount("c10d::allreduce_", "all_reduce", 1, 1_000_000, 4, "backward")))
    p = predict({}, ranked, HW)
    assert p.comm_s == pytest.approx(8.5e6 / 10e9) and p.interconnect == "wire"  # 0.85 ms at 10 GB/s
    assert p.forward_s == 0.0 and p.mfu == 0.0


def test_mfu_from_a_measured_time() -> None:
    r = torchcost.analyze(nn.Linear(64, 64), torch.randn(8, 64), hardware=HW, time=torchcost.TimeOptions(
        repeats=2, warmup=0, per_module=False), memory=False)
    p, t = r.predicted_time, r.measured_time
    assert p is not None and t is not None
    # eval: the forward's FLOPs over the measured forward's median x the float32 peak 1e12
    assert (p.step_time, p.step_time_source) == (t.forward_s, "measured")
    assert p.mfu == pytest.approx(r.flops / (t.forward_s * 1e12))
    given = torchcost.analyze(nn.Linear(64, 64), torch.randn(8, 64), hardware=HW, step_time=2.0, memory=False)
    assert given.predicted_time is not None and given.predicted_time.step_time_source == "given"
