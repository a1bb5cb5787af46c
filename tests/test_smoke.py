"""The simplest end-to-end check: the default example run for real on the CPU gives the hand count.

The count is derived once, in tests/test_tutorials.py, and checked there on the meta device; here with real tensors.
"""

import torchcost
from tests.test_tutorials import SIMPLE_CNN_FLOPS, SIMPLE_CNN_MACS, SIMPLE_CNN_PARAMS
from torchcost.examples import build


def test_simple_cnn_totals() -> None:
    model, inputs = build("simple_cnn")
    r = torchcost.analyze(model, *inputs)
    assert r.device == "cpu"
    assert (r.params, r.macs, r.flops) == (SIMPLE_CNN_PARAMS, SIMPLE_CNN_MACS, SIMPLE_CNN_FLOPS)
