"""The HTML page, the notebook display, the DataFrame and the plot, without a browser: one file with no reference to
anything outside it, within its size budgets; the command line's --format html, --plot, and its table off a
terminal, which never wraps a row."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import torchcost
from torchcost.cli import main
from torchcost.errors import InputError
from torchcost.render.html import MAX_POINTS, icicle_data, render_html, timeline_data
from torchcost.report import CostReport, MemoryTimeline
from torchcost.resolve import resolve

Case = Callable[[str], tuple[CostReport, str]]

_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?!data:|#)|url\(\s*["']?(?!data:)|@import|https?://""", re.I)


def test_one_file_with_nothing_outside(case: Case) -> None:
    report, description = case("resnet50")
    page = render_html(report, description=description)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<script") == 2  # the data and the script, both inline
    assert not _EXTERNAL.search(page.replace("http://www.w3.org/2000/svg", ""))
    assert "default-src 'none'" in page  # the browser refuses any load, should one slip in


def test_size_budget_resnet50(case: Case) -> None:
    report, description = case("resnet50")
    assert len(render_html(report, description=description).encode()) < 3 * 2**20


def test_size_budget_llama_70b() -> None:
    start = time.monotonic()
    resolved = resolve("hf:llama-3-70b", meta=True)
    report = torchcost.analyze(resolved.model, *resolved.args, kwargs=resolved.kwargs)
    page = report.to_html()
    assert len(page.encode()) < 15 * 2**20
    assert time.monotonic() - start < 30


def test_icicle_folds_repeats_only_when_large() -> None:
    model = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(6)])
    report = torchcost.analyze(model, torch.randn(2, 4))
    full = icicle_data(report)
    assert len(full["nodes"]) == len(report.modules) == 1 + 6 * 3
    folded = icicle_data(report, fold=True)["nodes"]
    # the model, block 0 with its 2 layers, then blocks 1 ... 5 as one node standing for 5
    assert [n[1] for n in folded] == ["", "0", "0.0", "0.1", "1 … 5"]
    assert folded[-1][9] == 5 and folded[-1][6] == 5 * report.module("1").flops


def test_timeline_decimation_keeps_the_peak(case: Case) -> None:
    report, _ = case("gpt2_train")
    assert report.memory is not None
    n = 20_000
    peak = 12_345
    values = [1000 + (i * 7919) % 500 for i in range(n)]
    values[peak] = 10**6
    timeline = MemoryTimeline(tuple(f"op{i % 3}" for i in range(n)), tuple("m" for _ in range(n)),
                              tuple("forward" if i < n // 2 else "backward" for i in range(n)), tuple(values))
    from dataclasses import replace

    memory = replace(report.memory, timeline=timeline, peak_index=peak, peak_bytes=10**6)
    data = timeline_data(memory)
    assert data["n"] == n and data["decimated"]
    assert len(data["x"]) <= MAX_POINTS + 2
    assert peak in data["x"] and max(data["y"]) == 10**6
    assert data["bands"] == [["forward", 0, n // 2 - 1], ["backward", n // 2, n - 1]]
    full = timeline_data(report.memory)
    assert full["x"] == list(range(len(report.memory.timeline))) and not full["decimated"]


def test_repr_html_and_to_pandas(case: Case) -> None:
    report, _ = case("simple_cnn")
    shown = report._repr_html_()
    assert "<table>" in shown and "<svg" in shown and "<script" not in shown
    assert "features.0" in shown
    frame = report.to_pandas()
    assert len(frame) == len(report.modules)
    assert frame.loc["features.0", "flops"] == report.module("features.0").flops
    assert frame.loc["features.0", "parent"] == "features"
    assert {"params", "macs", "flops", "output_shape", "activation_bytes", "step_flops"} <= set(frame.columns)


def test_to_pandas_without_pandas(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    report, _ = case("simple_cnn")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(InputError, match=r"needs pandas.*torchcost\[notebook\]"):
        report.to_pandas()


def test_plot_without_matplotlib(case: Case, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from torchcost.render.plot import plot_report

    report, _ = case("simple_cnn")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"needs matplotlib.*torchcost\[plot\]"):
        plot_report(report, tmp_path / "x.png")


def test_cli_html_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    page, png = tmp_path / "r.html", tmp_path / "r.png"
    assert main(["example:simple_cnn", "--format", "html", "-o", str(page), "--plot", str(png)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "<h1>SimpleCNN</h1>" in text and 'id="m0-icicle"' in text
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 800
    assert main(["compare", "example:standard_conv", "example:depthwise_separable", "--format", "html",
                 "-o", str(tmp_path / "c.html")]) == 0
    assert "0.361x" in (tmp_path / "c.html").read_text(encoding="utf-8")


def test_cli_html_with_memory_budget(tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    assert main(["example:standard_conv", "--format", "html", "-o", str(page), "--memory-budget", "2GiB"]) == 0
    text = page.read_text(encoding="utf-8")
    assert 'class="tc-fit tc-fit-ok"' in text and "Largest batch within the budget" in text


def test_table_off_a_terminal_never_wraps_a_row(capsys: pytest.CaptureFixture[str]) -> None:
    # gpt2's shapes ({logits: [1, 64, 50257]}) and names used to wrap at 120 columns when piped to a file
    assert main(["hf:gpt2", "--config", "n_layer=2", "--seq-len", "64", "--meta"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    end = next(i for i, line in enumerate(lines) if line.startswith("Total params:"))
    body = lines[rule + 1:end]
    assert len(body) == 34  # one line per module of the 2-layer gpt2, none wrapped
    assert all(line.rstrip().endswith("B") for line in body)  # each ends with its peak memory (the full width)
    assert "{logits: [1, 64, 50257]}" in lines[rule + 1]
    assert main(["hf:gpt2", "--config", "n_layer=2", "--seq-len", "64", "--meta", "--width", "100"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 100  # --width still rules
