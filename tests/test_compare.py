"""compare(): models, specs or finished reports side by side, one column each (the ``torchcost compare`` command and
its table: tests/cli/test_commands.py)."""

from __future__ import annotations

import pytest

import torchcost
from tests.formulas.test_conv import SEPARABLE_MACS, STANDARD_MACS
from torchcost.examples import DepthwiseSeparableConv, StandardConv


def test_compare_takes_modules_and_reports() -> None:
    report = torchcost.analyze(StandardConv(), input_size=(1, 3, 64, 64))
    c = torchcost.compare(report, DepthwiseSeparableConv(), input_size=(1, 3, 64, 64), names=["std", "dws"])
    assert c.names == ("std", "dws") and c.row("macs").values == (STANDARD_MACS, SEPARABLE_MACS)  # test_conv.py
    with pytest.raises(torchcost.InputError, match="without inputs"):
        torchcost.compare(StandardConv())
