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


def test_compare_makes_token_inputs_with_input_dtype() -> None:
    import torch
    from torch import nn

    # Embedding(100, 16) + Linear(16, 4) on 2 x 8 token ids: 2 x 8 x 16 x 4 = 1,024 MACs; with 32 outputs: 2,048
    small = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 4))
    wide = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 8))
    c = torchcost.compare(small, wide, input_size=(2, 8), input_dtype=torch.int64)
    assert c.row("macs").values == (1_024, 2_048)
    with pytest.raises(torchcost.errors.DtypeError, match=r"layer '0' \(Embedding\)"):  # float ids: named
        torchcost.compare(small, wide, input_size=(2, 8), dtype=torch.float32)


def test_compare_builds_specs_for_the_step_it_analyses(monkeypatch: pytest.MonkeyPatch) -> None:
    # mode="train" builds each spec with train=True (a detection model's targets: tests/cli/test_commands.py)
    import torchcost.api as api
    from torchcost.resolve import resolve

    asked: list[bool] = []

    def recording(spec: str, **build: object) -> object:
        asked.append(bool(build.get("train")))
        return resolve(spec, **build)  # type: ignore[arg-type]

    monkeypatch.setattr(api, "resolve", recording)
    c = torchcost.compare("example:standard_conv", "example:depthwise_separable", mode="train")
    assert asked == [True, True] and c.row("step_macs").values == (884_736, 368_640)  # tests/cli/test_commands.py
    torchcost.compare("example:standard_conv", "example:depthwise_separable")
    assert asked[2:] == [False, False]
