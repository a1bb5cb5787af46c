"""Markdown: the table as a GitHub table (the same rows and columns as the text table), the footer as a list."""

from __future__ import annotations

from torchcost.render.rows import select
from torchcost.render.text import footer_lines
from torchcost.report import CostReport
from torchcost.units import format_count

__all__ = ["HEADER", "render_markdown"]

HEADER = ("Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "% FLOPs")
_ALIGN = (":--", ":--", ":--", "--:", "--:", "--:", "--:")


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table_lines(header: tuple[str, ...], align: tuple[str, ...], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in cells) + " |" for cells in body]
    return lines


def render_markdown(report: CostReport, *, depth: int | None = None, fold: bool = True, sort: str | None = None,
                    top: int | None = None) -> str:
    body = []
    for row in select(report, depth, fold, sort, top):
        calls = f" x{row.calls}" if row.calls > 1 and row.folded == 1 else ""
        shared = " (shared)" if row.shared_params and row.folded == 1 else ""
        share = f"{100 * row.flops / report.flops:.2f}%" if report.flops else "-"
        name = f"`{row.name}`{calls}" if row.folded == 1 else f"`{row.name}`"
        body.append([name, row.type, row.output_shape, format_count(row.params) + shared, format_count(row.macs),
                     format_count(row.flops), share])
    lines = table_lines(HEADER, _ALIGN, body)
    lines.append("")
    lines += [f"- {line}" for line in footer_lines(report)]
    return "\n".join(lines) + "\n"
