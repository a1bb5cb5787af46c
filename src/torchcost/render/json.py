"""JSON: the whole report, exact integers, in the versioned schema of docs/json-schema.md
(src/torchcost/schema/report.schema.json). Depth, sorting and folding do not apply: JSON always holds every module."""

from __future__ import annotations

import json

from torchcost.fit import BatchFit
from torchcost.render.fit import fit_dict
from torchcost.report import CostReport

__all__ = ["render_json"]


def render_json(report: CostReport, *, fit: BatchFit | None = None, indent: int | None = 2) -> str:
    """``report.to_dict()``, and with ``fit`` (the --memory-budget answer) its ``max_batch_size`` key too."""
    extra = {} if fit is None else {"max_batch_size": fit_dict(fit)}
    return json.dumps({**report.to_dict(), **extra}, indent=indent) + "\n"
