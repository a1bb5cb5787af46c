"""The table: exact golden text at a fixed width without colour, the footer, and depth/folding defaults."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import torchcost
from tests.fixtures.models import ConvBN, Repeated, UsesCustomOp
from torchcost.collect.probe import kernel_memory
from torchcost.examples import build
from torchcost.render.layout import MAX_ROWS, rows

Golden = Callable[[str, str], None]


def test_golden_conv1d_series(golden: Golden) -> None:
    model, inputs = build("conv1d_series")
    with kernel_memory("table"):  # no probe: a probe's bytes depend on the CPU and the thread count
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
    with kernel_memory("table"):  # tensors only: the kernels' own memory (a probe's, CPU-dependent) is left out
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


# -- a training step: FLOPs by phase -----------------------------------------------------------------------------

def _linear_step() -> torchcost.CostReport:
    # Linear(1000, 1000, bias=False) on 8 x 1000, SGD with momentum: forward 8 x 1000 x 1000 = 8,000,000 MACs =
    # 16,000,000 FLOPs; backward only the weight gradient (the input needs none): 8,000,000 MACs = 16,000,000 FLOPs;
    # SGD: buf = buf * m + g (2 FLOPs), p -= lr * buf (2): 4 x 1,000,000 = 4,000,000; the step of the Linear:
    # 36,000,000. The loss (outside every module) and its backward are in the model's row and the total only.
    model = nn.Sequential(nn.Linear(1000, 1000, bias=False))
    return torchcost.analyze(model, torch.randn(8, 1000), mode="train", optimizer="sgd", memory=False)


def test_train_table_shows_flops_by_phase() -> None:
    r = _linear_step()
    lines = r.table(width=120).splitlines()
    # two-line headers, so the columns are as narrow as their figures; no recompute column: nothing checkpointed
    assert lines[0].split() == ["Fwd", "Bwd", "Opt", "Step", "%"]
    assert lines[1].split() == ["Layer", "(type)", "Output", "shape", "Params", "FLOPs", "FLOPs", "FLOPs", "FLOPs",
                                "step"]
    linear = next(line for line in lines if "0 (Linear)" in line)
    share = f"{100 * 36_000_000 / r.step_flops:.2f}%"
    assert linear.split() == ["0", "(Linear)", "[8,", "1000]", "1.00", "M", "16.00", "M", "16.00", "M", "4.00", "M",
                              "36.00", "M", share]
    assert r.module("0").backward_flops == 16_000_000 and r.module("0").optimizer_flops == 4_000_000
    assert any(line.startswith("Training step FLOPs: forward 16.00 M,") for line in lines)
    assert not any(line.startswith("Per token") for line in lines)  # a float input: no tokens


def test_train_table_too_wide_drops_output_shapes_not_figures() -> None:
    text = _linear_step().table(width=80)
    assert "Output shape" not in text and "[8, 1000]" not in text.split("Total params")[0]
    linear = next(line for line in text.splitlines() if "0 (Linear)" in line)
    assert "36.00 M" in linear and "…" not in text


def test_train_table_recompute_column_when_checkpointed() -> None:
    class Ckpt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(100, 100, bias=False), nn.ReLU())  # ReLU saves its output

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=False)
            return out

    r = torchcost.analyze(Ckpt(), torch.randn(4, 100), mode="train", optimizer="sgd", memory=False)
    lines = r.table(width=120).splitlines()
    assert lines[0].split() == ["Fwd", "Bwd", "Recomp", "Opt", "Step", "%"]
    linear = next(line for line in lines if "block.0 (Linear)" in line).split()
    # its forward again in backward (ReLU's saved output is re-made from it): 4 x 100 x 100 = 40,000 MACs =
    # 80,000 FLOPs, the same in the Fwd and Recomp columns; backward: weight gradient only, 80,000 FLOPs too
    assert linear[4:12] == ["10.00", "K", "80.00", "K", "80.00", "K", "80.00", "K"]  # params 100 x 100


def test_train_footer_per_token_and_the_6nd_rule() -> None:
    # Embedding(100, 10) + Linear(10, 100): 1,000 + 1,000 = 2,000 trainable params; input_ids 2 x 8 = 16 tokens.
    # 6ND a token: 6 x 2,000 = 12,000 FLOPs; the exact step a token: step_flops / 16.
    model = nn.Sequential(nn.Embedding(100, 10), nn.Linear(10, 100, bias=False))
    r = torchcost.analyze(model, torch.randint(0, 100, (2, 8)), mode="train", optimizer="sgd", memory=False)
    assert r.flops == 32_000 and r.phase("optimizer").flops == 4 * 2_000  # 16 x 10 x 100 MACs; SGD 4 a param
    off = 100 * (12_000 * 16 - r.step_flops) / r.step_flops
    expected = (f"Per token (16 tokens): {r.step_flops / 16 / 1000:.2f} K FLOPs; 6ND rule: 12.00 K "
                f"(6 x 2.00 K, off by {off:+.1f}%)")
    assert expected in r.table().splitlines()
    from torchcost.render.markdown import render_markdown

    md = render_markdown(r)
    assert f"- {expected}" in md.splitlines()


def test_tokens_are_the_integer_first_inputs_elements() -> None:
    from dataclasses import replace

    model = nn.Sequential(nn.Embedding(100, 10), nn.Linear(10, 100, bias=False))
    ids = torch.randint(0, 100, (2, 8))
    r = torchcost.analyze(model, ids, mode="train", optimizer="sgd", memory=False)
    assert r.tokens == 16  # input_ids 2 x 8
    assert torchcost.analyze(model, ids).tokens == 16  # eval reports it too (its table has no per-token line)
    assert torchcost.analyze(nn.Linear(4, 4), torch.randn(3, 4)).tokens == 0  # a float input: no tokens
    assert torchcost.CostReport.from_json(r.to_json()) == r and r.to_dict()["tokens"] == 16
    old = {k: v for k, v in r.to_dict().items() if k != "tokens"}  # a document written before the field
    assert torchcost.CostReport.from_dict(old).tokens == 0
    # the table reads the field, it does not recount: 32 tokens halve the per-token figure, 0 drops the line
    lines = replace(r, tokens=32).table().splitlines()
    assert any(line.startswith(f"Per token (32 tokens): {r.step_flops / 32 / 1000:.2f} K FLOPs;") for line in lines)
    assert not any(line.startswith("Per token") for line in replace(r, tokens=0).table().splitlines())


def test_train_markdown_and_csv_columns() -> None:
    from torchcost.render.csv import COLUMNS, TRAIN_COLUMNS, render_csv
    from torchcost.render.markdown import render_markdown

    r = _linear_step()
    md = render_markdown(r).splitlines()
    assert md[0] == "| Layer | Type | Output shape | Params | Fwd FLOPs | Bwd FLOPs | Opt FLOPs | Step FLOPs | % step |"
    assert md[1] == "|:--|:--|:--|--:|--:|--:|--:|--:|--:|"
    assert md[3].startswith("| `0` | Linear | [8, 1000] | 1.00 M | 16.00 M | 16.00 M | 4.00 M | 36.00 M |")
    csv_lines = render_csv(r).splitlines()
    assert csv_lines[0] == ",".join(COLUMNS + TRAIN_COLUMNS)
    # forward macs/flops as in eval, then backward 8,000,000 MACs / 16,000,000 FLOPs, no recompute, SGD 4,000,000
    assert csv_lines[2] == '0,Linear,1,1,"[8, 1000]",1000000,0,8000000,16000000,1,8000000,16000000,0,0,4000000,36000000'
    eval_csv = render_csv(torchcost.analyze(nn.Sequential(nn.Linear(1000, 1000, bias=False)), torch.randn(8, 1000)))
    assert eval_csv.splitlines()[0] == ",".join(COLUMNS)


def test_train_footer_splits_backward_macs_into_input_and_weight_gradients() -> None:
    # Linear(1000, 1000, bias=False) on 8 x 1000: the weight gradient g^T x is 8 x 1000 x 1000 = 8,000,000 MACs; the
    # input needs no gradient, so none is made for it; the loss's backward is element-wise (no MACs)
    assert "Backward MACs: 8.00 M = input gradients 0 + weight gradients 8.00 M" in _linear_step().table().splitlines()
    # with an input that requires grad, g W is another 8 x 1000 x 1000 = 8,000,000 MACs, an input gradient
    x = torch.randn(8, 1000, requires_grad=True)
    r = torchcost.analyze(nn.Sequential(nn.Linear(1000, 1000, bias=False)), x, mode="train", optimizer="sgd",
                          memory=False)
    back = r.phase("backward")
    assert (back.macs, back.input_grad_macs, back.weight_grad_macs) == (16_000_000, 8_000_000, 8_000_000)
    assert "Backward MACs: 16.00 M = input gradients 8.00 M + weight gradients 8.00 M" in r.table().splitlines()
    assert not any(line.startswith("Backward MACs") for line in torchcost.analyze(nn.Linear(4, 4), torch.randn(2, 4))
                   .table().splitlines())  # eval: no backward
