"""The table: exact golden text at a fixed width without colour, the footer, and depth/folding defaults."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import torchcost
from tests.fixtures.models import ConvBN, Repeated, UsesCustomOp
from torchcost.examples import build
from torchcost.render.layout import MAX_ROWS, rows

Golden = Callable[[str, str], None]


def test_golden_conv1d_series(golden: Golden) -> None:
    model, inputs = build("conv1d_series")
    r = torchcost.analyze(model, *inputs)
    text = r.table(width=100)
    golden("conv1d_series_w100.txt", text)
    assert "\x1b[" not in text  # no colour codes
    assert max(len(line) for line in text.splitlines()) <= 100


def test_print_shows_the_table_and_footer(capsys: pytest.CaptureFixture[str]) -> None:
    model, inputs = build("conv1d_series")
    print(torchcost.analyze(model, *inputs))
    lines = capsys.readouterr().out.rstrip("\n").splitlines()
    assert lines[0].split()[:4] == ["Layer", "(type)", "Output", "shape"]  # the table's header first
    # conv1 Conv1d(1, 32, 5): 32*5 + 32 = 192; conv2 Conv1d(32, 64, 3): 64*32*3 + 64 = 6,208; fc Linear(512, 1): 513
    assert "Total params: 6,913 (6.91 K)" in lines  # 192 + 6,208 + 513
    assert lines[-1] == "(eval mode, float32, cpu; counts per docs/conventions.md)"


def test_table_rows_and_numbers() -> None:
    model, inputs = build("conv1d_series")
    text = torchcost.analyze(model, *inputs).table(width=100)
    # the hand counts of test_tutorials.test_example_conv1d_series, human-readable in rows, exact in the footer
    assert "Total params: 6,913 (6.91 K)" in text
    assert "MACs: 104,576 (104.58 K)" in text
    assert "FLOPs: 214,593 (214.59 K)" in text
    conv2 = next(line for line in text.splitlines() if "conv2 (Conv1d)" in line)
    # conv2: 6,208 params, 98,304 MACs, 197,632 FLOPs = 92.10% of 214,593;
    # activations: its output 64*16*4 B = 4,096 B = 4.00 KiB;
    # peak while it runs: params 6,913*4 = 27,652 B + input 1*36*4 = 144 B + its input (pooled) 32*18*4 = 2,304 B
    #   + its output 4,096 B = 34,196 B = 33.39 KiB
    assert conv2.split() == ["conv2", "(Conv1d)", "[1,", "64,", "16]", "6.21", "K", "98.30", "K", "197.63", "K",
                             "92.10%", "4.00", "KiB", "33.39", "KiB"]


def test_colour_only_when_asked() -> None:
    model, inputs = build("standard_conv")
    r = torchcost.analyze(model, *inputs)
    assert "\x1b[" not in r.table()
    assert "\x1b[" in r.table(color=True)


def test_footer_sizes_in_mib() -> None:
    model = nn.Linear(1024, 1024)
    r = torchcost.analyze(model, torch.randn(256, 1024))
    lines = r.table(width=120).splitlines()
    # input 256 x 1024 float32 = 1 MiB; params (1024 * 1024 + 1024) x 4 B = 4 MiB + 4 KiB; output 1 MiB
    assert "Input size (MiB): 1.00" in lines
    assert "Params size (MiB): 4.00" in lines
    assert r.param_bytes == (1024 * 1024 + 1024) * 4
    assert "Output activations, sum of leaf module outputs (MiB): 1.00" in lines
    assert "Total of the above (MiB): 6.00" in lines
    assert "Total params: 1,049,600 (1.05 M)" in lines
    assert "Trainable params: 1,049,600" in lines
    assert "Non-trainable params: 0" in lines
    assert "Uncounted ops: none" in lines


def test_footer_real_element_sizes() -> None:
    # bfloat16 is 2 bytes an element: params (1024 * 1024 + 1024) x 2 B = 2 MiB + 2 KiB
    model = nn.Linear(1024, 1024).to(torch.bfloat16)
    r = torchcost.analyze(model, input_size=(512, 1024))
    assert r.param_bytes == (1024 * 1024 + 1024) * 2
    assert r.input_bytes == 512 * 1024 * 2  # input_size takes the model's dtype: 1 MiB
    text = r.table()
    assert "Params size (MiB): 2.00" in text and "Input size (MiB): 1.00" in text
    assert "bfloat16" in text


def test_footer_lists_uncounted_ops_and_buffers() -> None:
    r = torchcost.analyze(UsesCustomOp(), torch.randn(3, 4))
    text = r.table(width=120)
    assert "Uncounted ops (arithmetic with no formula, not in the totals): torchcost_fixtures::scaled_tanh x1" in text
    r = torchcost.analyze(ConvBN(), torch.randn(2, 3, 8, 8))
    # BatchNorm2d(8): running_mean 8 + running_var 8 + num_batches_tracked 1
    assert "Buffers: 17" in r.table()


def test_small_model_shows_every_leaf() -> None:
    r = torchcost.analyze(ConvBN(), torch.randn(2, 3, 8, 8))
    text = r.table()
    for leaf in ("conv (Conv2d)", "bn (BatchNorm2d)", "act (ReLU)", "drop (Dropout)", "pool (AdaptiveAvgPool2d)",
                 "fc (Linear)"):
        assert leaf in text


def test_identical_blocks_fold() -> None:
    model = Repeated(blocks=12, dim=16)
    r = torchcost.analyze(model, torch.randn(2, 16))
    shown = rows(r)
    names = [row.name for row in shown]
    # the first block in full (with its leaves), then one row for the 11 identical ones
    assert names == ["(model)", "0", "0.0", "0.1", "1 ... 11"]
    folded = shown[-1]
    assert folded.folded == 11 and folded.type == "11 x Sequential"
    # each block: Linear(16, 16) = 272 params, 2 rows x 16 x 16 = 512 MACs
    assert (folded.params, folded.macs) == (11 * 272, 11 * 512)
    text = r.table(width=100)
    assert "1 ... 11 (11 x Sequential)" in text and "identical to 0" in text
    # fold=False shows all of them
    assert len(rows(r, fold=False)) == 1 + 12 * 3


def test_two_identical_blocks_do_not_fold() -> None:
    r = torchcost.analyze(Repeated(blocks=2), torch.randn(2, 16))
    assert [row.name for row in rows(r)] == ["(model)", "0", "0.0", "0.1", "1", "1.0", "1.1"]


def test_large_model_gets_a_shallower_default_depth() -> None:
    # 30 blocks of different widths (nothing folds), 3 leaves each: 1 + 30 * 4 = 121 rows at full depth
    widths = [8 + i for i in range(31)]
    model = nn.Sequential(*[nn.Sequential(nn.Linear(widths[i], widths[i + 1]), nn.ReLU(), nn.Dropout())
                            for i in range(30)])
    r = torchcost.analyze(model, torch.randn(1, 8))
    assert len(rows(r, depth=2)) == 1 + 30 * 4
    shown = rows(r)
    assert len(shown) <= MAX_ROWS
    assert [row.name for row in shown] == ["(model)", *[str(i) for i in range(30)]]
    assert "29 (Sequential)" in r.table() and "29.0 (Linear)" not in r.table()
    assert "29.0 (Linear)" in r.table(depth=2)


def test_sort_and_top() -> None:
    model, inputs = build("conv1d_series")
    text = torchcost.analyze(model, *inputs).table(sort="flops", top=2)
    body = [line for line in text.splitlines() if "(Conv1d)" in line or "(Linear)" in line]
    assert [line.split()[0] for line in body] == ["conv2", "conv1"]
