"""The table: a module tree with name, type, output shape, params, MACs, FLOPs and % of FLOPs, and a footer."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console
from rich.table import Table

from torchcost.render.rows import Row, rows
from torchcost.report import CostReport
from torchcost.units import format_count, format_int, format_mib

__all__ = ["render_text"]

_SORT_KEYS = {"flops": lambda r: r.flops, "macs": lambda r: r.macs, "params": lambda r: r.params}


def _select(report: CostReport, depth: int | None, fold: bool, sort: str | None, top: int | None) -> list[Row]:
    if sort is None and top is None:
        return rows(report, depth, fold)
    key = _SORT_KEYS[sort or "flops"]
    leaves = [r for r in rows(report, 10**6, fold=False)[1:] if report.module(r.name).is_leaf]
    leaves.sort(key=lambda r: (-key(r), r.name))
    return leaves[:top] if top else leaves


def render_text(report: CostReport, *, depth: int | None = None, width: int | None = 120, fold: bool = True,
                color: bool = False, sort: str | None = None, top: int | None = None) -> str:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header, justify in (("Layer (type)", "left"), ("Output shape", "left"), ("Params", "right"),
                            ("MACs", "right"), ("FLOPs", "right"), ("% FLOPs", "right")):
        table.add_column(header, justify=justify, no_wrap=header != "Output shape")  # type: ignore[arg-type]
    flat = sort is not None or top is not None
    for row in _select(report, depth, fold, sort, top):
        indent = "" if flat else "  " * row.depth
        calls = f" x{row.calls}" if row.calls > 1 and row.folded == 1 else ""
        shared = " (shared)" if row.shared_params and row.folded == 1 else ""
        share = f"{100 * row.flops / report.flops:.2f}%" if report.flops else "-"
        label = f"{indent}{row.name} ({row.type}){calls}" if row.folded == 1 else f"{indent}{row.name} ({row.type})"
        table.add_row(label, row.output_shape, format_count(row.params) + shared, format_count(row.macs),
                      format_count(row.flops), share)
    buf = io.StringIO()
    console = Console(file=buf, width=width or 120, force_terminal=color, no_color=not color,
                      color_system="auto" if color else None, highlight=False)
    console.print(table)
    for line in footer_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return buf.getvalue().rstrip() + "\n"


def footer_lines(report: CostReport) -> list[str]:
    lines = [
        f"Total params: {format_int(report.params)} ({format_count(report.params)})",
        f"Trainable params: {format_int(report.trainable_params)}",
        f"Non-trainable params: {format_int(report.non_trainable_params)}",
        f"Buffers: {format_int(report.buffers)}",
        f"MACs: {format_int(report.macs)} ({format_count(report.macs)})",
        f"FLOPs: {format_int(report.flops)} ({format_count(report.flops)}) = 2 x MACs + other floating-point ops",
    ]
    if report.uncounted:
        ops = ", ".join(f"{o.op} x{o.calls}" for o in report.uncounted)
        lines.append(f"Uncounted ops (arithmetic with no formula, not in the totals): {ops}")
    else:
        lines.append("Uncounted ops: none")
    if report.formula_errors:
        lines.append("Formula errors: " + "; ".join(f"{k}: {v}" for k, v in report.formula_errors))
    if report.uncalled:
        shown = ", ".join(report.uncalled[:10]) + (" ..." if len(report.uncalled) > 10 else "")
        lines.append(f"Modules never called: {shown}")
    lines += [
        f"Input size (MiB): {format_mib(report.input_bytes)}",
        f"Params size (MiB): {format_mib(report.param_bytes)}",
        f"Buffers size (MiB): {format_mib(report.buffer_bytes)}",
        f"Output activations, sum of leaf module outputs (MiB): {format_mib(report.activation_bytes)}",
        f"Total of the above (MiB): {format_mib(report.total_bytes)}",
        f"({report.mode} mode, {report.dtype}, {report.device}; counts per docs/conventions.md)",
    ]
    return lines
