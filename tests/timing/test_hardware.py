"""The hardware table: dense (not 2:4-sparse) peaks, each entry with its source; names; the measured CPU's cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torchcost.errors import InputError
from torchcost.timing import cpu as cpu_mod
from torchcost.timing.hardware import HARDWARE, Hardware, get_hardware, hardware_key, hardware_names

T = 1e12

# The BF16 tensor-core figure each datasheet prints WITH sparsity (the starred one); dense is half of it.
SPARSE_BF16 = {
    "a100-40gb": 624, "a100-80gb": 624,  # A100 datasheet: BF16 Tensor Core 312 | 624*
    "h100-sxm": 1979, "h100-pcie": 1513, "h100-nvl": 1671,  # H100 datasheet: 1,979* / 1,513* / 1,671*
    "h200": 1979,  # H200 datasheet: 1,979*
    "l4": 242,  # L4 datasheet: 242*
    "mi300x": 2614.9,  # MI300X datasheet: 2,614.9 with sparsity, 1,307.4 dense
}


@pytest.mark.parametrize("key", sorted(SPARSE_BF16))
def test_bf16_is_the_dense_figure(key: str) -> None:
    assert HARDWARE[key].peak_flops["bfloat16"] == pytest.approx(SPARSE_BF16[key] / 2 * T, rel=2e-3)


def test_the_headline_figures() -> None:
    h100 = HARDWARE["h100-sxm"]
    assert h100.peak_flops["bfloat16"] == 989.4 * T  # not 1,979: that is the sparsity figure
    assert h100.peak_flops["float8"] == pytest.approx(3958 / 2 * T, rel=1e-3)  # FP8 3,958*
    assert h100.peak_flops["tf32"] == pytest.approx(989 / 2 * T, rel=1e-3)  # TF32 989*
    assert h100.memory_bandwidth == 3.35e12 and HARDWARE["h200"].memory_bandwidth == 4.8e12
    # L40S prints its dense BF16 beside the sparse one: 362.05 | 733*; RTX 4090 (FP32 accumulate) 165.2 | 330.4*
    assert HARDWARE["l40s"].peak_flops["bfloat16"] == 362.05 * T
    assert HARDWARE["rtx-4090"].peak_flops["bfloat16"] == pytest.approx(330.4 / 2 * T, rel=1e-3)


@pytest.mark.parametrize("key", sorted(HARDWARE))
def test_every_entry_is_plausible_and_has_a_source(key: str) -> None:
    hw = HARDWARE[key]
    peaks = hw.peak_flops
    assert "datasheet" in hw.source or "whitepaper" in hw.source
    assert hw.key == key and hw.memory_bytes > 0 and hw.memory_bandwidth > 0
    assert peaks["bfloat16"] == peaks["float16"]
    assert 2 <= peaks["bfloat16"] / peaks["float32"] <= 20  # tensor cores over FP32: 2x (4090) to 16x (A100)
    assert peaks["tf32"] == pytest.approx(peaks["bfloat16"] / 2, rel=0.02)  # TF32 runs at half the BF16 rate
    if "float8" in peaks:
        assert peaks["float8"] == pytest.approx(2 * peaks["bfloat16"], rel=0.02)
    assert peaks["bfloat16"] < 1.4e15  # no dense BF16 in the table reaches 1.4 PFLOP/s; sparse figures would
    assert 0 < hw.matmul_efficiency <= 1 and 0 < hw.memory_efficiency <= 1
    assert hw.interconnect and hw.interconnect_bandwidth > 0


def test_names_and_aliases() -> None:
    assert get_hardware("H100 SXM") is HARDWARE["h100-sxm"] is get_hardware("h100") is get_hardware("h100_sxm")
    assert hardware_key("4090") == "rtx-4090" and "cpu" in hardware_names()
    with pytest.raises(InputError, match="unknown hardware 'tpu'"):
        get_hardware("tpu")
    mine = Hardware("mine", {"bfloat16": 100 * T}, 10 * T, 1e12)
    assert get_hardware(mine) is mine
    assert mine.matrix_flops("float32") == 10 * T  # no float32 entry: the vector rate
    slower = HARDWARE["h100-sxm"].with_efficiency(matmul=0.5)
    assert slower.matmul_efficiency == 0.5 and slower.memory_efficiency == HARDWARE["h100-sxm"].memory_efficiency


def test_a_made_up_hardware_is_checked() -> None:
    with pytest.raises(InputError, match="unknown dtype keys"):
        Hardware("x", {"int4": 1.0}, 1.0, 1.0)
    with pytest.raises(InputError, match="matmul_efficiency"):
        Hardware("x", {"float32": 1.0}, 1.0, 1.0, matmul_efficiency=1.5)


def test_the_cpu_is_measured_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHCOST_CACHE_DIR", str(tmp_path / "torchcost"))
    monkeypatch.setattr(cpu_mod, "_MEMO", {})
    runs: list[int] = []

    def fake(threads: int) -> tuple[float, float, float, float]:
        runs.append(threads)
        return 50e9, 20e9, 5e9, 2e-6

    monkeypatch.setattr(cpu_mod, "_measure", fake)
    hw = cpu_mod.measure_cpu(1)
    assert (hw.peak_flops["float32"], hw.memory_bandwidth, hw.vector_flops, hw.call_overhead) == (50e9, 20e9, 5e9,
                                                                                                   2e-6)
    assert hw.key == "cpu" and hw.matmul_efficiency == 1.0 and runs == [1]
    stored = json.loads((tmp_path / "torchcost" / "cpu-peaks.json").read_text())
    key = cpu_mod.cpu_key(1)
    assert key.endswith(f"|1 threads|torch {torch.__version__}") and stored[key]["flops"] == 50e9
    assert cpu_mod.measure_cpu(1) is hw and runs == [1]  # in-process cache
    monkeypatch.setattr(cpu_mod, "_MEMO", {})
    assert cpu_mod.measure_cpu(1) == hw and runs == [1]  # the file cache
    cpu_mod.measure_cpu(1, refresh=True)
    assert runs == [1, 1]
