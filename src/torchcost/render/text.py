"""The table: a module tree with name, type, output shape, params, MACs, FLOPs and % of FLOPs (and, when memory was
measured, each module's activation bytes and the peak reached while it ran), and a footer."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console
from rich.table import Table

from torchcost.render.rows import select
from torchcost.report import CostReport
from torchcost.units import format_bytes, format_count, format_int, format_mib

__all__ = ["memory_lines", "render_text"]


def render_text(report: CostReport, *, depth: int | None = None, width: int | None = 120, fold: bool = True,
                color: bool = False, sort: str | None = None, top: int | None = None) -> str:
    """The table and its footer. The memory columns (activation bytes, peak while running) are shown when the report
    measured memory and the whole table fits ``width`` with them; otherwise they are left out and the footer keeps
    the peak figures."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    headers = [("Layer (type)", "left"), ("Output shape", "left"), ("Params", "right"), ("MACs", "right"),
               ("FLOPs", "right"), ("% FLOPs", "right")]
    flat = sort is not None or top is not None
    body: list[list[str]] = []
    for row in select(report, depth, fold, sort, top):
        indent = "" if flat else "  " * row.depth
        calls = f" x{row.calls}" if row.calls > 1 and row.folded == 1 else ""
        shared = " (shared)" if row.shared_params and row.folded == 1 else ""
        share = f"{100 * row.flops / report.flops:.2f}%" if report.flops else "-"
        if row.depth == 0 and row.name == "(model)":
            label = f"{row.type}{calls}"  # the model itself: its class is its name
        else:
            label = f"{indent}{row.name} ({row.type}){calls}" if row.folded == 1 else f"{indent}{row.name} ({row.type})"
        body.append([label, row.output_shape, format_count(row.params) + shared, format_count(row.macs),
                     format_count(row.flops), share, format_bytes(row.activation_bytes), format_bytes(row.peak_memory)])
    memory_headers = [("Activations", "right"), ("Peak mem", "right")]
    memory = report.memory is not None and _natural_width(headers + memory_headers, body) <= (width or 120)
    if memory:
        headers += memory_headers
    for header, justify in headers:
        table.add_column(header, justify=justify, no_wrap=header != "Output shape")  # type: ignore[arg-type]
    for cells in body:
        table.add_row(*cells[:len(headers)])
    buf = io.StringIO()
    console = Console(file=buf, width=width or 120, force_terminal=color, no_color=not color,
                      color_system="auto" if color else None, highlight=False)
    console.print(table)
    for line in footer_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return buf.getvalue().rstrip() + "\n"


def _natural_width(headers: list[tuple[str, str]], body: list[list[str]]) -> int:
    """The table's width with no cell wrapped or cut: the widest cell of each column plus 3 between columns."""
    widths = [max([len(h), *(len(cells[i]) for cells in body)]) for i, (h, _) in enumerate(headers)]
    return sum(widths) + 3 * (len(widths) - 1)


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
    ]
    lines += memory_lines(report)
    lines.append(f"({report.mode} mode, {report.dtype}, {report.device}; counts per docs/conventions.md)")
    return lines


_PARTS = (("parameters", "parameters"), ("buffers", "buffers"), ("inputs", "inputs"), ("gradients", "gradients"),
          ("optimizer_state", "optimizer state"), ("saved_activations", "saved activations"),
          ("temporaries", "temporaries"))


def memory_lines(report: CostReport) -> list[str]:
    """The peak-memory part of the footer (nothing when the report measured no memory); lines of at most 100."""
    m = report.memory
    if m is None:
        return []
    what = "training step" if m.mode == "train" else "inference"
    where = f"{m.peak_phase}, {m.peak_op} in {m.peak_module or '(model)'}" if m.peak_op else "before the first op"
    parts = [f"{label} {format_mib(getattr(m.at_peak, key))}" for key, label in _PARTS if getattr(m.at_peak, key)]
    lines = [f"Peak memory, {what} (MiB): {format_mib(m.peak_bytes)} ({format_int(m.peak_bytes)} B)",
             f"  where: {where}"]
    lines += _wrap("  at the peak (MiB): ", parts or ["0"])
    if m.mode == "train":
        lines.append(f"  optimizer: {m.optimizer or 'none'}")
        lines.append(f"  gradients (MiB): {format_mib(m.gradient_bytes)}, optimizer state (MiB): "
                     f"{format_mib(m.optimizer_state_bytes)}")
        lines.append(f"  loss: {m.loss or '-'}" + (f"; autocast {m.amp}" if m.amp else ""))
    rounding = ", 512 B blocks" if m.round_to > 1 else ""
    lines.append(f"  from tensor lifetimes ({m.method} run, {m.target}{rounding}); not included: kernel workspaces,")
    lines.append("  allocator cache and fragmentation, CUDA context (docs/conventions.md, Memory)")
    return lines


def _wrap(head: str, parts: list[str], width: int = 96) -> list[str]:
    lines: list[str] = []
    line = head
    for i, part in enumerate(parts):
        text = part + (", " if i < len(parts) - 1 else "")
        if len(line) + len(text) > width and line.strip():
            lines.append(line.rstrip())
            line = " " * 4
        line += text
    lines.append(line.rstrip())
    return lines
