"""A training step at the default batch of 1 that a batch norm refuses (one value per channel): the CLI and compare()
analyse it at batch 2 and say so; a batch the user gave is never changed; the --memory-budget search starts at 2.

The model: Linear(8, 4) then BatchNorm1d(4), whose training statistics over a batch of 1 torch refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import torchcost
from tests.cli.conftest import torchcost as run
from tests.cli.conftest import validate
from torchcost.api import analyze_spec
from torchcost.errors import ShapeError
from torchcost.render.fit import fit_lines

NET = ("from torch import nn\n\n\n"
       "class Head(nn.Module):\n"
       "    input_size = (1, 8)\n\n"
       "    def __init__(self) -> None:\n"
       "        super().__init__()\n"
       "        self.fc = nn.Linear(8, 4)\n"
       "        self.bn = nn.BatchNorm1d(4)\n\n"
       "    def forward(self, x):\n"
       "        return self.bn(self.fc(x))\n")
WHY = ("batch 2, not the default 1: at 1, batch norm 'bn' (BatchNorm1d) has one value per channel in training "
       "(input [1, 4])")


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.fc(x))
        return out


@pytest.fixture
def spec(tmp_path: Path) -> str:
    (tmp_path / "headnet.py").write_text(NET)
    return f"{tmp_path / 'headnet.py'}:Head"


def test_cli_trains_at_batch_two_and_says_why(spec: str) -> None:
    r = run(spec, "--train")
    assert r.rc == 0, r.err
    assert WHY in r.out.splitlines()[0]
    r = run(spec, "--train", "--format", "json")
    assert r.rc == 0, r.err
    data = json.loads(r.out)
    validate(data, "report.schema.json")
    assert data["input_shape"] == [{"shape": [2, 8], "dtype": "float32"}]
    assert data["macs"] == 2 * 8 * 4 == 64  # the Linear at batch 2: 2 rows x 8 inputs x 4 outputs


def test_a_batch_the_user_gave_is_kept(spec: str) -> None:
    r = run(spec, "--train", "--batch-size", "1")
    assert r.rc == 2
    assert len(r.err_lines) == 1
    assert "layer 'bn' (BatchNorm1d) failed on input [1, 4]" in r.err and "--batch-size 2" in r.err
    r = run(spec)  # eval: batch norm uses its running statistics, batch 1 is fine
    assert r.rc == 0 and "batch 2" not in r.out


def test_analyze_spec_and_compare(spec: str) -> None:
    build = {"train": True}
    resolved, report = analyze_spec(spec, build, lambda r: torchcost.analyze(r.model, *r.args, mode="train"))
    assert resolved.description.endswith(WHY)
    assert [tuple(t.shape) for t in resolved.args] == [(2, 8)]
    assert report.macs == 64  # 2 * 8 * 4
    with pytest.raises(ShapeError, match="more than 1 value per channel"):
        analyze_spec(spec, {"train": True, "batch_size": 1},
                     lambda r: torchcost.analyze(r.model, *r.args, mode="train"))
    table = torchcost.compare(spec, spec, names=["a", "b"], mode="train")
    assert [r.macs for r in table.reports] == [64, 64]


def test_batch_search_starts_at_two() -> None:
    budget = 2000  # bytes, a cpu target: no allowance, the budget is the room
    fit = torchcost.max_batch_size(Head(), torch.randn(2, 8), budget=budget, mode="train", target="cpu")
    peaks = dict(fit.probes)
    assert fit.smallest == 2 and min(peaks) == 2 and 1 not in peaks
    assert fit.batch_size >= 2 and peaks[fit.batch_size] <= budget < peaks[fit.batch_size + 1]
    assert fit_lines(fit)[-1].startswith("  from batch 2: at batch 1 a batch norm's training statistics")
    nothing = torchcost.max_batch_size(Head(), torch.randn(2, 8), budget=peaks[2] - 1, mode="train", target="cpu")
    assert nothing.batch_size == 0 and nothing.smallest == 2 and "(not even batch 2 fits)" in fit_lines(nothing)[0]
    eval_fit = torchcost.max_batch_size(Head(), torch.randn(2, 8), budget=budget, target="cpu")
    assert eval_fit.smallest == 1 and 1 in dict(eval_fit.probes)
