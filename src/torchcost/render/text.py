"""The text table: a module tree with name, type, output shape, params, MACs, FLOPs and % of FLOPs (and, when memory was
measured, each module's activation bytes and the peak reached while it ran), and the footer, laid out by rich."""

from __future__ import annotations

from rich import box
from rich.console import JustifyMethod
from rich.table import Table

from torchcost.render.layout import TableOptions, console, count_cells, footer_lines, row_label, select
from torchcost.report import CostReport
from torchcost.units import format_bytes

__all__ = ["render_text"]

_COLUMNS: list[tuple[str, JustifyMethod]] = [("Layer (type)", "left"), ("Output shape", "left"), ("Params", "right"),
                                             ("MACs", "right"), ("FLOPs", "right"), ("% FLOPs", "right")]
_MEMORY_COLUMNS: list[tuple[str, JustifyMethod]] = [("Activations", "right"), ("Peak mem", "right")]


def render_text(report: CostReport, options: TableOptions | None = None) -> str:
    """The table and its footer. The memory columns (activation bytes, peak while running) are shown when the report
    measured memory and the whole table fits the width with them; otherwise they are left out and the footer keeps
    the peak figures."""
    options = options or TableOptions()
    body = [[row_label(row, options.flat), row.output_shape, *count_cells(row, report),
             format_bytes(row.activation_bytes), format_bytes(row.peak_memory)] for row in select(report, options)]
    columns = _COLUMNS
    if report.memory is not None and _natural_width(_COLUMNS + _MEMORY_COLUMNS, body) <= (options.width or 120):
        columns = _COLUMNS + _MEMORY_COLUMNS
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=header != "Output shape")
    for cells in body:
        table.add_row(*cells[:len(columns)])
    out = console(options.width, options.color)
    with out.capture() as captured:
        out.print(table)
        for line in footer_lines(report):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    return captured.get().rstrip() + "\n"


def _natural_width(columns: list[tuple[str, JustifyMethod]], body: list[list[str]]) -> int:
    """The table's width with no cell wrapped or cut: the widest cell of each column plus 3 between columns."""
    widths = [max([len(h), *(len(cells[i]) for cells in body)]) for i, (h, _) in enumerate(columns)]
    return sum(widths) + 3 * (len(widths) - 1)
