"""hf configs a user might write, made from the shipped gpt2 config (one layer) with some fields changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torchcost

GPT2 = Path(torchcost.__file__).parent / "configs" / "gpt2.json"


def hf_config(tmp_path: Path, **changes: Any) -> str:
    """The spec ``hf:PATH`` of a config.json in ``tmp_path``: gpt2 with n_layer=1 and ``changes``."""
    data = json.loads(GPT2.read_text())
    data.update({"n_layer": 1, **changes})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return f"hf:{path}"
