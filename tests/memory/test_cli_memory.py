"""The memory flags of the command line: --train, --optimizer, --amp, --target, --memory-budget."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import schema, validate
from torchcost.cli import main


def test_train_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example:standard_conv", "--train", "--optimizer", "sgd", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Peak memory, training step (MiB):" in out
    assert "optimizer: SGD(lr=0.01, momentum=0.9" in out
    assert "Activations" in out and "Peak mem" in out  # the memory columns


def test_optimizer_implies_train_and_json_has_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example:standard_conv", "--optimizer", "adam", "--amp", "bf16", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "train"
    memory = data["memory"]
    assert memory["mode"] == "train" and memory["amp"] == "bf16" and memory["optimizer"].startswith("Adam(")
    assert memory["peak_bytes"] == max(memory["timeline"]["bytes"])


def test_memory_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example:standard_conv", "--meta", "--memory-budget", "2GiB", "--target", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "Largest batch within 2.00 GiB (cuda: predicted peak + 1.00 GiB reserve + 5% fragmentation):" in out
    assert main(["example:standard_conv", "--memory-budget", "1GiB", "--target", "cpu", "--format", "json"]) == 0
    fit = json.loads(capsys.readouterr().out)["max_batch_size"]
    assert fit["target"] == "cpu" and fit["reserve_bytes"] == 0 and fit["batch_size"] > 1
    assert fit["peak_bytes"] <= 2**30


def test_memory_budget_json_validates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example:standard_conv", "--memory-budget", "1GiB", "--target", "cpu", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    validate(data, "report.schema.json")  # the report's keys, plus max_batch_size
    fit = data["max_batch_size"]
    described = set(schema("report.schema.json")["$defs"]["batchFit"]["properties"])
    assert set(fit) == described - {"rank", "world"}  # every key described; the two parallel ones only with --fsdp...
    assert fit["probes"][0][0] == 1 and fit["fragmentation"] == 0.0  # the search starts at 1; cpu: no allowance


def test_bad_memory_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example:standard_conv", "--memory-budget", "lots"]) == 2
    assert "not a memory size" in capsys.readouterr().err
    assert main(["example:standard_conv", "--memory-budget", "1GiB", "--format", "csv"]) == 2
    assert main(["example:standard_conv", "--optimizer", "lion"]) == 2
