"""The layout every table shares (render/layout.py): row labels and cells, which rows the options select, the option
defaults that decide behaviour, the Markdown table builder and the console."""

from __future__ import annotations

import pytest
import torch

import torchcost
from tests.fixtures.models import Repeated, TiedLM, TwiceCalled
from torchcost.render.csv import render_csv
from torchcost.render.layout import (
    TableOptions,
    console,
    count_cells,
    row_label,
    rows,
    select,
    table_lines,
)
from torchcost.render.markdown import render_markdown
from torchcost.render.text import render_text
from torchcost.report import CostReport


@pytest.fixture(scope="module")
def twice() -> CostReport:
    return torchcost.analyze(TwiceCalled(), torch.randn(1, 8))


@pytest.fixture(scope="module")
def tied() -> CostReport:
    return torchcost.analyze(TiedLM(), torch.randint(0, 100, (1, 4)))


def test_row_label(twice: CostReport) -> None:
    model, fc = rows(twice)
    assert row_label(model, flat=False) == row_label(model, flat=True) == "TwiceCalled"  # the model: its class
    assert row_label(fc, flat=False) == "  fc (Linear) x2"  # indented by depth; called twice
    assert row_label(fc, flat=True) == "fc (Linear) x2"


def test_folded_row_label_has_no_call_count() -> None:
    r = torchcost.analyze(Repeated(blocks=12, dim=16), torch.randn(2, 16))
    folded = rows(r)[-1]
    assert (folded.folded, folded.calls) == (11, 11)  # 11 blocks, called once each
    assert row_label(folded, flat=False) == "  1 ... 11 (11 x Sequential)"


def test_count_cells(twice: CostReport, tied: CostReport) -> None:
    _, fc = rows(twice)
    # Linear(8, 8): 64 + 8 = 72 params; 2 calls x 64 MACs; 2 x (2 x 64 + 8 bias) = 272 FLOPs of the model's 280
    # (+ 8 for the relu between the calls): 97.14%
    assert count_cells(fc, twice) == ["72", "128", "272", "97.14%"]
    embed = next(row for row in rows(tied) if row.name == "embed")
    assert count_cells(embed, tied)[0] == "1.60 K (shared)"  # Embedding(100, 16) = 1,600, tied to head


def test_sort_and_top_select_the_leaves(tied: CostReport) -> None:
    # params: embed 1,600, head 1,600 (the tied weight), body 16 * 16 + 16 = 272; ties by name
    assert [r.name for r in select(tied, TableOptions(sort="params"))] == ["embed", "head", "body"]
    assert [r.name for r in select(tied, TableOptions(sort="params", top=2))] == ["embed", "head"]
    # top alone sorts by flops: head 2 x 4 x 16 x 100 = 12,800 first, the lookup (0 FLOPs) last
    assert [r.name for r in select(tied, TableOptions(top=3))] == ["head", "body", "embed"]


def test_bad_sort_is_an_input_error(tied: CostReport) -> None:
    with pytest.raises(torchcost.InputError,
                       match="sort must be one of flops, macs, params, step, backward, got 'bogus'"):
        select(tied, TableOptions(sort="bogus"))
    with pytest.raises(torchcost.TorchcostError):
        tied.table(sort="bogus")


def test_step_and_backward_sorts_need_a_training_step(tied: CostReport) -> None:
    for key in ("step", "backward"):
        with pytest.raises(torchcost.InputError, match=f"sort='{key}' needs a training step.*flops, macs, params"):
            select(tied, TableOptions(sort=key))


@pytest.fixture(scope="module")
def three() -> CostReport:
    # a = Linear(100, 300), b = Linear(300, 80), c = Linear(80, 250), no bias, on 4 x 100 (no grad); SGD with momentum,
    # 4 FLOPs a parameter. a: 30,000 params, forward 4 x 30,000 = 120,000 MACs = 240,000 FLOPs, backward the weight
    # gradient only (its input needs none) 240,000, optimizer 120,000, step 600,000. b: 24,000 params, forward 96,000
    # MACs = 192,000, backward input + weight gradients 384,000, optimizer 96,000, step 672,000. c: 20,000 params,
    # forward 80,000 MACs = 160,000, backward 320,000, optimizer 80,000, step 560,000. The loss is the model's own.
    model = torch.nn.Sequential()
    model.add_module("a", torch.nn.Linear(100, 300, bias=False))
    model.add_module("b", torch.nn.Linear(300, 80, bias=False))
    model.add_module("c", torch.nn.Linear(80, 250, bias=False))
    return torchcost.analyze(model, torch.randn(4, 100), mode="train", optimizer="sgd", memory=False)


def test_train_sorts_by_step_backward_and_forward(three: CostReport) -> None:
    figures = {r.name: (r.flops, r.backward_flops, r.optimizer_flops, r.step_flops)
               for r in select(three, TableOptions(sort="flops"))}
    assert figures == {"a": (240_000, 240_000, 120_000, 600_000), "b": (192_000, 384_000, 96_000, 672_000),
                       "c": (160_000, 320_000, 80_000, 560_000)}

    def order(**options: object) -> list[str]:
        return [r.name for r in select(three, TableOptions(**options))]  # type: ignore[arg-type]

    assert order(sort="flops") == order(sort="macs") == order(sort="params") == ["a", "b", "c"]
    assert order(sort="step") == ["b", "a", "c"]
    assert order(sort="backward") == ["b", "c", "a"]
    assert order(top=2) == ["b", "a"]  # top alone, in a training step: by step FLOPs


def test_defaults_table_folds_csv_does_not() -> None:
    r = torchcost.analyze(Repeated(blocks=12, dim=16), torch.randn(2, 16))
    assert r.table() == render_text(r, TableOptions()) == render_text(r)  # table()'s defaults are TableOptions'
    assert "1 ... 11 (11 x Sequential)" in r.table()
    assert "`1 ... 11`" in render_markdown(r)
    # csv: every module one by one, the model + 12 blocks + 24 leaves, after the header
    assert len(render_csv(r).splitlines()) == 1 + 1 + 12 + 24


def test_flat_only_with_sort_or_top() -> None:
    assert not TableOptions().flat
    assert TableOptions(sort="macs").flat and TableOptions(top=1).flat


def test_table_lines_escape_cells() -> None:
    lines = table_lines(("a|b", "c"), (":--", "--:"), [["x\\y", "1\n2"]])
    assert lines == ["| a\\|b | c |", "|:--|--:|", "| x\\\\y | 1 2 |"]


def test_console_colour_only_when_asked() -> None:
    for color in (False, True):
        out = console(None, color)
        assert out.width == 120
        with out.capture() as captured:
            out.print("[bold]x[/bold]")
        assert ("\x1b[" in captured.get()) is color
