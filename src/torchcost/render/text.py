"""The text table: a module tree with name, type, output shape, params, MACs, FLOPs and % of FLOPs (for a training step
instead: FLOPs by phase, the step's and % of the step; and, when memory was measured and the width allows, each
module's activation bytes and the peak reached while it ran), and the footer, laid out by rich."""

from __future__ import annotations

from rich import box
from rich.console import JustifyMethod
from rich.table import Table

from torchcost.render.layout import TableOptions, console, count_cells, count_headers, footer_lines, row_label, select
from torchcost.report import CostReport
from torchcost.units import format_bytes

__all__ = ["render_text"]

_LABELS: list[tuple[str, JustifyMethod]] = [("Layer (type)", "left"), ("Output shape", "left")]
_MEMORY_COLUMNS: list[tuple[str, JustifyMethod]] = [("Activations", "right"), ("Peak mem", "right")]


def render_text(report: CostReport, options: TableOptions | None = None) -> str:
    """The table and its footer. The memory columns (activation bytes, peak while running) are shown when the report
    measured memory and the whole table fits the width with them; otherwise they are left out and the footer keeps
    the peak figures. A training step's table (FLOPs by phase) that does not fit leaves out the output shapes, then
    cuts the layer names."""
    options = options or TableOptions()
    width = options.width or 120
    body = [[row_label(row, options.flat), row.output_shape, *count_cells(row, report, options.columns),
             format_bytes(row.activation_bytes), format_bytes(row.peak_memory)] for row in select(report, options)]
    columns = _LABELS + [(header, "right") for header in count_headers(report, options.columns)]
    if report.memory is not None and _natural_width(columns + _MEMORY_COLUMNS, body) <= width:
        columns = columns + _MEMORY_COLUMNS
    label_width = None
    if report.phases and _natural_width(columns, body) > width:
        columns, body, label_width = _narrow(columns, body, width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=header != "Output shape",
                         max_width=label_width if header == "Layer (type)" else None)
    for cells in body:
        table.add_row(*cells[:len(columns)])
    out = console(options.width, options.color)
    with out.capture() as captured:
        out.print(table)
        for line in footer_lines(report):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    return captured.get().rstrip() + "\n"


def _narrow(columns: list[tuple[str, JustifyMethod]], body: list[list[str]],
            width: int) -> tuple[list[tuple[str, JustifyMethod]], list[list[str]], int | None]:
    """A training step's table too wide for ``width``: without the output shapes, and if still too wide, the layer
    names cut (never the figures, which are what the wider table is for)."""
    columns = [columns[0], *columns[2:]]
    body = [[cells[0], *cells[2:]] for cells in body]
    natural = _natural_width(columns, body)
    if natural <= width:
        return columns, body, None
    label = max(len(cells[0]) for cells in body)
    return columns, body, max(20, label - (natural - width))


def _natural_width(columns: list[tuple[str, JustifyMethod]], body: list[list[str]]) -> int:
    """The table's width with no cell wrapped or cut: the widest cell of each column plus 3 between columns."""
    widths = [max([*map(len, h.split("\n")), *(len(cells[i]) for cells in body)]) for i, (h, _) in enumerate(columns)]
    return sum(widths) + 3 * (len(widths) - 1)
