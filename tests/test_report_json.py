"""The report's JSON, schema version 2 (docs/json-schema.md): the training step's figures, and version-1 documents."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest
import torch
from torch import nn

import torchcost
from torchcost.errors import InputError


def _schema() -> dict:
    return json.loads((resources.files("torchcost") / "schema" / "report.schema.json").read_text())


def _token_step() -> torchcost.CostReport:
    # Embedding(100, 10) + Linear(10, 100, bias=False): 1,000 + 1,000 = 2,000 trainable params; input_ids 2 x 8
    model = nn.Sequential(nn.Embedding(100, 10), nn.Linear(10, 100, bias=False))
    return torchcost.analyze(model, torch.randint(0, 100, (2, 8)), mode="train", optimizer="sgd", memory=False)


def test_version_2_carries_the_per_token_figures_of_a_training_step() -> None:
    r = _token_step()
    data = r.to_dict()
    assert data["schema_version"] == 3  # 3 added bytes moved and the time fields (issue 13)
    jsonschema.Draft202012Validator(_schema()).validate(data)
    # 16 tokens; the 6ND rule: 6 x 2,000 trainable params x 16 tokens = 192,000 FLOPs
    assert data["per_token"] == {"tokens": 16, "step_flops_per_token": r.step_flops / 16, "six_nd_flops": 192_000}
    assert torchcost.CostReport.from_dict(data) == r  # derived: dropped on reading
    eval_data = torchcost.analyze(nn.Sequential(nn.Embedding(100, 10)), torch.randint(0, 100, (2, 8))).to_dict()
    assert "per_token" not in eval_data  # 6ND is a training rule
    assert "per_token" not in torchcost.analyze(nn.Linear(4, 4), torch.randn(2, 4), mode="train",
                                                memory=False).to_dict()  # a float input: no tokens


def test_a_version_1_document_reads_back() -> None:
    # what torchcost wrote before the training step was counted: no phases, step totals or tokens
    r = torchcost.analyze(nn.Linear(10, 20), torch.randn(3, 10))
    old = {k: v for k, v in r.to_dict().items() if k not in ("phases", "step_macs", "step_flops", "tokens")}
    old["schema_version"] = 1
    back = torchcost.CostReport.from_dict(old)
    # Linear(10, 20) on 3 x 10: 3 x 10 x 20 = 600 MACs; the run was the forward, so the step is the forward
    assert (back.macs, back.step_macs, back.step_flops, back.phases) == (600, 600, back.flops, ())
    assert back.schema_version == 3 and back.to_dict()["schema_version"] == 3


@pytest.mark.parametrize("version", [0, 4, None, "2"])
def test_an_unknown_version_is_refused(version: object) -> None:
    data = torchcost.analyze(nn.Linear(2, 2), torch.randn(1, 2)).to_dict()
    data["schema_version"] = version
    with pytest.raises(InputError, match="schema version"):
        torchcost.CostReport.from_dict(data)
