"""Model specs are the user's input: a config or file that cannot be built is one SpecError line (CLI exit 2),
never an internal error, and never the end of the program (sys.exit in a spec or a forward)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import torchcost
from tests.reliability.configs import hf_config
from torchcost.resolve import resolve


@pytest.mark.parametrize("changes, says", [
    ({"n_layer": "two"}, "n_layer"),  # a field of the wrong type
    ({"n_embd": None}, "n_embd"),  # a null field
    ({"architectures": ["GPT2Config"]}, "not a transformers model class"),  # a config class, not a model
    ({"architectures": ["logging"]}, "not a transformers model class"),  # not a class at all
    ({"torch_dtype": "float17"}, "float17"),  # a dtype that does not exist
    ({"architectures": ["LlamaForCausalLM"]}, "cannot build the model"),  # a model class of another family
])
def test_hf_config_errors_are_spec_errors(tmp_path: Path, changes: dict[str, Any], says: str) -> None:
    with pytest.raises(torchcost.SpecError, match=says) as info:
        resolve(hf_config(tmp_path, **changes))
    assert "\n" not in str(info.value)


def test_trust_remote_code_is_refused(tmp_path: Path) -> None:
    spec = hf_config(tmp_path, auto_map={"AutoModel": "evil.modeling.Evil"}, _name_or_path="someone/evil")
    with pytest.raises(torchcost.SpecError, match="trust_remote_code is refused"):
        resolve(spec, kwargs={"trust_remote_code": True})


@pytest.mark.parametrize("spec", ["builtins:exit", "sys:exit"])
def test_a_spec_naming_exit_is_a_spec_error(spec: str) -> None:
    with pytest.raises(torchcost.SpecError, match=r"sys\.exit"):
        resolve(spec)


def test_a_file_that_exits_at_import_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "exits.py"
    path.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(torchcost.SpecError, match=r"sys\.exit\(3\)"):
        resolve(f"{path}:Net")


def test_a_forward_that_exits_is_a_model_error() -> None:
    class Exits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise SystemExit(0)

    with pytest.raises(torchcost.ModelError, match=r"sys\.exit\(0\)"):
        torchcost.analyze(Exits(), torch.zeros(1))
