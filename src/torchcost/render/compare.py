"""The comparison table (torchcost compare) as text, Markdown, CSV and JSON. Reads a Comparison, computes nothing.

Columns: the metric, then each model's value, then each later model's ratio to the first (``B / A``).
Text and Markdown show counts with SI prefixes and sizes with binary prefixes; CSV and JSON hold exact integers.
"""

from __future__ import annotations

import csv
import io
import json

from rich import box
from rich.table import Table

from torchcost.comparison import CompareRow, Comparison
from torchcost.render.layout import console, table_lines
from torchcost.units import format_bytes, format_count

__all__ = ["format_ratio", "render_compare_csv", "render_compare_json", "render_compare_markdown",
           "render_compare_text"]


def format_ratio(ratio: float | None) -> str:
    """``B / A`` as ``0.361x`` (three significant digits; ``1,234x`` from 1000 up), ``-`` when A is 0."""
    if ratio is None:
        return "-"
    if ratio >= 1000:
        return f"{ratio:,.0f}x"
    return f"{ratio:.3g}x"


def _value(row: CompareRow, value: int) -> str:
    return format_bytes(value) if row.unit == "bytes" else format_count(value)


def _header(c: Comparison) -> list[str]:
    first = c.names[0]
    return ["Metric", *c.names, *(f"{n} / {first}" for n in c.names[1:])]


def _body(c: Comparison) -> list[list[str]]:
    return [[row.label, *(_value(row, v) for v in row.values), *(format_ratio(r) for r in row.ratios[1:])]
            for row in c.rows]


def render_compare_text(c: Comparison, *, width: int | None = 120, color: bool = False) -> str:
    """The table, then one line per model saying what it is and how it ran."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, header in enumerate(_header(c)):
        table.add_column(header, justify="left" if i == 0 else "right")
    for cells in _body(c):
        table.add_row(*cells)
    out = console(width, color)
    with out.capture() as captured:
        out.print(table)
        for name, spec, report in zip(c.names, c.specs, c.reports):
            where = f"{spec}, " if spec and spec != name else ""
            out.print(f"{name}: {where}{report.model_type}, {report.mode} mode, {report.dtype}, {report.device}",
                      highlight=False, markup=False, soft_wrap=True)
    return captured.get().rstrip() + "\n"


def render_compare_markdown(c: Comparison) -> str:
    header = _header(c)
    align = [":--", *(["--:"] * (len(header) - 1))]
    return "\n".join(table_lines(tuple(header), tuple(align), _body(c))) + "\n"


def render_compare_csv(c: Comparison) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    first = c.names[0]
    writer.writerow(["metric", "unit", *c.names, *(f"{n} / {first}" for n in c.names[1:])])
    for row in c.rows:
        writer.writerow([row.metric, row.unit, *row.values, *("" if r is None else repr(r) for r in row.ratios[1:])])
    return buf.getvalue()


def render_compare_json(c: Comparison, *, indent: int | None = 2) -> str:
    return json.dumps(c.to_dict(), indent=indent) + "\n"
