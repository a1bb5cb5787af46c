"""docs/conventions.md agrees with the code: its worked examples are re-derived here and run (the simple_cnn one in
tests/test_tutorials.py), and every per-element figure its activation table states for a module is the one torchcost
charges."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

import torchcost
from tests.test_tutorials import SIMPLE_CNN_FLOPS, SIMPLE_CNN_MACS, SIMPLE_CNN_PARAMS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "conventions.md").read_text()


def _in_doc(number: int) -> bool:
    return f"{number:,}" in DOC


def test_worked_example_simple_cnn() -> None:
    # the totals are derived by hand, and checked against analyze(), in tests/test_tutorials.py
    assert _in_doc(SIMPLE_CNN_MACS) and _in_doc(SIMPLE_CNN_FLOPS) and _in_doc(SIMPLE_CNN_PARAMS)


def test_worked_example_transformer_encoder_layer() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    r = torchcost.analyze(layer, torch.randn(2, 5, 8))
    macs = 10 * 8 * 24 + (100 * 4 + 100 * 4) + 10 * 8 * 8 + 10 * 8 * 16 + 10 * 16 * 8
    # q/k/v bias 240, scale 100, softmax 500, out bias 80, 2 residual adds 160, 2 LayerNorms 2*640, linear1 bias 160,
    # ReLU 160, linear2 bias 80
    other = 240 + 100 + 500 + 80 + 160 + 2 * 640 + 160 + 160 + 80
    assert r.macs == macs == 5_920
    assert r.flops == 2 * macs + other == 14_600
    assert r.module("self_attn").flops == 7_640
    assert r.module("self_attn.out_proj").flops == 0
    assert _in_doc(r.macs) and _in_doc(r.flops) and _in_doc(7_640)


ARGS: dict[str, tuple[object, ...]] = {"Threshold": (0.1, 2.0)}
KWARGS: dict[str, dict[str, object]] = {"Softmax": {"dim": -1}, "LogSoftmax": {"dim": -1}, "Softmin": {"dim": -1}}
MODE = {"Dropout": "train"}  # its row is "Dropout, training"


def test_activation_table_matches_the_code() -> None:
    # every row "| Name, Name | n | ..." of the doc's tables that names nn modules is run on 24 elements
    checked = []
    for names, per in re.findall(r"^\| ([A-Za-z0-9, ]+) \| (\d+) \|", DOC, flags=re.MULTILINE):
        for name in names.split(", "):
            cls = getattr(nn, name.strip(), None)
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                continue
            module = cls(*ARGS.get(name, ()), **KWARGS.get(name, {}))
            r = torchcost.analyze(module, torch.randn(2, 3, 4), mode=MODE.get(name, "eval"))
            assert r.flops == int(per) * 24, name
            checked.append(name)
    assert len(checked) >= 20, checked
