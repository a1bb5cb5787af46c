"""Markdown: the table as a GitHub table (the same rows and columns as the text table), the footer as a list."""

from __future__ import annotations

from torchcost.render.layout import TableOptions, calls_suffix, count_cells, footer_lines, select, table_lines
from torchcost.report import CostReport

__all__ = ["HEADER", "render_markdown"]

HEADER = ("Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "% FLOPs")
_ALIGN = (":--", ":--", ":--", "--:", "--:", "--:", "--:")


def render_markdown(report: CostReport, options: TableOptions | None = None) -> str:
    """The rows ``options`` select (``width`` and ``color`` do not apply), then the footer."""
    options = options or TableOptions()
    body = [[f"`{row.name}`{calls_suffix(row)}", row.type, row.output_shape, *count_cells(row, report)]
            for row in select(report, options)]
    lines = [*table_lines(HEADER, _ALIGN, body), "", *(f"- {line}" for line in footer_lines(report))]
    return "\n".join(lines) + "\n"
