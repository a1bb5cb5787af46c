"""Markdown: the table as a GitHub table (the same rows and count columns as the text table, so for a training step
the FLOPs by phase), the footer as a list."""

from __future__ import annotations

from torchcost.render.layout import (
    TableOptions,
    calls_suffix,
    count_cells,
    count_headers,
    footer_lines,
    select,
    table_lines,
)
from torchcost.report import CostReport

__all__ = ["HEADER", "render_markdown"]

HEADER = ("Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "% FLOPs")
_ALIGN = (":--", ":--", ":--", "--:", "--:", "--:", "--:")


def render_markdown(report: CostReport, options: TableOptions | None = None) -> str:
    """The rows ``options`` select (``width`` and ``color`` do not apply), then the footer."""
    options = options or TableOptions()
    body = [[f"`{row.name}`{calls_suffix(row)}", row.type, row.output_shape,
             *count_cells(row, report, options.columns)] for row in select(report, options)]
    header = (*HEADER[:3], *count_headers(report, options.columns))
    align = (*_ALIGN[:3], *("--:",) * (len(header) - 3))
    lines = [*table_lines(header, align, body), "", *(f"- {line}" for line in footer_lines(report))]
    return "\n".join(lines) + "\n"
