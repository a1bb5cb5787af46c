"""JSON: the whole report, exact integers, in the versioned schema of docs/json-schema.md
(src/torchcost/schema/report.schema.json). Depth, sorting and folding do not apply: JSON always holds every module."""

from __future__ import annotations

from torchcost.report import CostReport

__all__ = ["render_json"]


def render_json(report: CostReport, *, indent: int | None = 2) -> str:
    return report.to_json(indent=indent) + "\n"
