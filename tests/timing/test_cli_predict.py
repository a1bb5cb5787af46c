"""The command line's prediction flags: --gpu/--hardware, --step-time, --columns."""

from __future__ import annotations

import json

import pytest

from torchcost.cli import main
from torchcost.timing.hardware import HARDWARE


def test_gpu_footer_columns_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example:simple_cnn", "--gpu", "h100-sxm", "--step-time", "0.001", "--columns",
                 "bytes,intensity,predicted,bound", "--no-progress", "--meta"]) == 0
    out = capsys.readouterr().out
    assert "Predicted on NVIDIA H100 SXM (float32 dense 67 TFLOP/s at 80%, 3.35 TB/s at 90%):\n  forward" in out
    assert "MFU " in out and "Bound" in out and "FLOP/" in out
    assert main(["example:simple_cnn", "--hardware", "H100_SXM", "--format", "json", "--no-progress", "--meta"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["predicted_time"]["hardware"] == "h100-sxm"
    assert data["predicted_time"]["peak_flops"] == HARDWARE["h100-sxm"].peak_flops["float32"]


def test_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example:simple_cnn", "--step-time", "1"]) == 2
    assert "--step-time goes with --gpu" in capsys.readouterr().err
    assert main(["example:simple_cnn", "--gpu", "abacus"]) == 2
    assert "unknown hardware 'abacus'" in capsys.readouterr().err
    assert main(["example:simple_cnn", "--columns", "speed"]) == 2
    assert "unknown column 'speed'" in capsys.readouterr().err
