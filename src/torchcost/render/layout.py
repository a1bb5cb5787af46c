"""What a table shows, whatever its format: the options that choose the rows, the rows themselves (the module tree to a
depth with identical repeated blocks folded, or the leaf layers most expensive first), each row's label and count
cells, the footer, and the rich console the text outputs print to.

The text table, Markdown, CSV and the comparison read these and only format them, so they agree on what a row is.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rich.console import Console

from torchcost.errors import InputError
from torchcost.report import CostReport, ModuleCost
from torchcost.shapes import describe
from torchcost.units import format_bytes, format_count, format_int, format_mib, format_seconds

__all__ = ["COLUMNS", "EVERY_LEVEL", "MAX_ROWS", "SORT_KEYS", "STEP_SORT_KEYS", "Row", "SortKey", "TableOptions",
           "calls_suffix", "console", "count_cells", "count_headers", "default_depth", "footer_lines",
           "measured_time_lines", "memory_lines", "parallel_lines", "predicted_time_lines", "row_label", "rows",
           "select", "table_lines"]

SortKey = Literal["flops", "macs", "params", "step", "backward"]
SORT_KEYS: tuple[SortKey, ...] = ("flops", "macs", "params", "step", "backward")
STEP_SORT_KEYS: tuple[SortKey, ...] = ("step", "backward")  # a training step's figures: mode="train" only
MAX_ROWS = 60  # the default depth keeps a table within this many rows
# optional columns (TableOptions.columns, --columns): bytes moved, FLOPs per byte, predicted seconds (hardware=),
# compute- or memory-bound, measured seconds (time=)
COLUMNS = ("bytes", "intensity", "predicted", "bound", "time")
_COLUMN_HEADERS = {"bytes": "Bytes", "intensity": "FLOP/\nbyte", "predicted": "Predicted", "bound": "Bound",
                   "time": "Time"}
EVERY_LEVEL = 10**6  # a depth no model reaches


@dataclass(frozen=True)
class TableOptions:
    """The options of a table, the same for ``CostReport.table``, every renderer and the command line.

    ``depth``: modules down to this depth (None: the default depth; CSV: every level). ``fold``: runs of identical
    sibling blocks as one row. ``sort``/``top``: instead of the tree, the leaf layers most expensive first by ``sort``
    (one of SORT_KEYS; default flops, and in a training step step FLOPs), only the first ``top``. ``width`` (None:
    120) and ``color``: the text tables only. ``columns``: optional columns of COLUMNS after the counts ("bytes"
    read + written, "intensity" FLOPs per byte, "predicted" seconds and "bound" of ``hardware=``, "time" measured
    seconds of ``time=``; in a training step bytes and intensity stay the forward's, predicted is the step's).
    """

    depth: int | None = None
    width: int | None = 120
    fold: bool = True
    color: bool = False
    sort: str | None = None
    top: int | None = None
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [c for c in self.columns if c not in COLUMNS]
        if unknown:
            raise InputError(f"unknown column {unknown[0]!r}; choose from {', '.join(COLUMNS)}")

    @property
    def flat(self) -> bool:
        """True when the rows are the sorted leaf layers rather than the tree (so they are not indented)."""
        return self.sort is not None or self.top is not None


@dataclass(frozen=True)
class Row:
    """One line of a table: a module (the model is ``(model)``), or a run of identical sibling blocks folded."""

    name: str
    type: str
    depth: int
    output_shape: str
    params: int
    shared_params: int
    macs: int
    flops: int
    calls: int
    folded: int = 1  # how many identical sibling blocks this row stands for
    activation_bytes: int = 0  # memory columns (0 when the report measured none); folded rows: the sum
    peak_memory: int = 0  # folded rows: the largest of the blocks folded
    shapes_differ: bool = False  # a module whose later calls took or returned other shapes than the first
    backward_macs: int = 0  # a training step's later phases (0 in eval); folded rows: the sums
    backward_flops: int = 0
    recompute_macs: int = 0
    recompute_flops: int = 0
    optimizer_flops: int = 0
    bytes: int = 0  # read + written by the forward's counted ops; folded rows: the sum
    intensity: float = 0.0  # FLOPs per byte (ModuleCost.intensity)
    predicted_s: float = 0.0  # predicted seconds (hardware=; the step's in a training step); folded rows: the sum
    bound: str = ""  # "compute" / "memory" (hardware=)
    measured_s: float = 0.0  # measured seconds (time=); folded rows: the sum

    @property
    def step_flops(self) -> int:
        """The module's part of a training step: forward, backward, recompute and optimizer FLOPs (eval: forward)."""
        return self.flops + self.backward_flops + self.recompute_flops + self.optimizer_flops


# -- which rows --------------------------------------------------------------------------------------------------------

def _signature(m: ModuleCost, memo: dict[int, tuple[object, ...]]) -> tuple[object, ...]:
    """What makes two sibling blocks identical (trainability included); ``memo`` keeps each block's for one table."""
    sig = memo.get(id(m))
    if sig is None:
        sig = memo[id(m)] = (m.type, m.params, m.trainable_params, m.macs, m.flops, describe(m.output_shape),
                             m.calls, m.shapes_differ, m.backward_flops, m.recompute_flops, m.optimizer_flops,
                             tuple(_signature(c, memo) for c in m.children))
    return sig


_Times = dict[str, tuple[float, str, float]]  # module name -> (predicted seconds, bound, measured seconds)


def _times(report: CostReport) -> _Times:
    """Each module's predicted seconds (the step's in a training step) and bound, and its measured seconds."""
    out: _Times = {}
    predicted = report.predicted_time
    if predicted is not None:
        for p in predicted.modules:
            out[p.name] = (p.step_seconds, p.bound, 0.0)
    measured = report.measured_time
    if measured is not None:
        for t in measured.modules:
            seconds, bound, _ = out.get(t.name, (0.0, "", 0.0))
            out[t.name] = (seconds, bound, t.seconds)
    return out


_NO_TIME = (0.0, "", 0.0)


def _row(m: ModuleCost, depth: int, times: _Times | None = None) -> Row:
    predicted_s, bound, measured_s = times.get(m.name, _NO_TIME) if times else _NO_TIME
    return Row(m.name or "(model)", m.type, depth, describe(m.output_shape), m.params, m.shared_params,
               m.macs, m.flops, m.calls, activation_bytes=m.activation_bytes, peak_memory=m.peak_memory,
               shapes_differ=m.shapes_differ, backward_macs=m.backward_macs, backward_flops=m.backward_flops,
               recompute_macs=m.recompute_macs, recompute_flops=m.recompute_flops, optimizer_flops=m.optimizer_flops,
               bytes=m.bytes, intensity=m.intensity, predicted_s=predicted_s, bound=bound, measured_s=measured_s)


def _folded(rest: list[ModuleCost], first: ModuleCost, level: int, times: _Times | None = None) -> Row:
    """One row for the repeats ``rest`` of the block ``first``: their sums (the peak: the largest)."""
    timed = [times.get(r.name, _NO_TIME) for r in rest] if times else [_NO_TIME]
    return Row(f"{rest[0].name} ... {rest[-1].name}", f"{len(rest)} x {first.type}", level,
               f"identical to {first.name}", sum(r.params for r in rest), sum(r.shared_params for r in rest),
               sum(r.macs for r in rest), sum(r.flops for r in rest), sum(r.calls for r in rest), folded=len(rest),
               activation_bytes=sum(r.activation_bytes for r in rest), peak_memory=max(r.peak_memory for r in rest),
               backward_macs=sum(r.backward_macs for r in rest), backward_flops=sum(r.backward_flops for r in rest),
               recompute_macs=sum(r.recompute_macs for r in rest),
               recompute_flops=sum(r.recompute_flops for r in rest),
               optimizer_flops=sum(r.optimizer_flops for r in rest), bytes=sum(r.bytes for r in rest),
               intensity=first.intensity, predicted_s=sum(t[0] for t in timed), bound=timed[0][1],
               measured_s=sum(t[2] for t in timed))


def rows(report: CostReport, depth: int | None = None, fold: bool = True) -> list[Row]:
    """Pre-order rows down to ``depth`` (None: the default depth); runs of identical siblings folded to one row."""
    limit = default_depth(report, fold) if depth is None else depth
    times = _times(report)
    out: list[Row] = [_row(report.root, 0, times)]
    memo: dict[int, tuple[object, ...]] = {}

    def visit(m: ModuleCost, level: int) -> None:
        if level > limit:
            return
        children = list(m.children)
        i = 0
        while i < len(children):
            child = children[i]
            out.append(_row(child, level, times))
            visit(child, level + 1)
            j = i + 1
            if fold:
                sig = _signature(child, memo)
                while j < len(children) and _signature(children[j], memo) == sig:
                    j += 1
                if j - i > 2:  # fold the repeats after the first one shown in full
                    out.append(_folded(children[i + 1:j], child, level, times))
                else:
                    j = i + 1
            i = j

    visit(report.root, 1)
    return out


def default_depth(report: CostReport, fold: bool = True) -> int:
    """Every leaf for small models; for large ones the deepest level whose table stays within MAX_ROWS rows."""
    deepest = max(m.depth for m in report.root.walk())
    for level in range(deepest, 0, -1):
        if len(rows(report, level, fold)) <= MAX_ROWS:
            return level
    return 1


_SORT_VALUE: dict[SortKey, Callable[[Row], int]] = {
    "flops": lambda r: r.flops, "macs": lambda r: r.macs, "params": lambda r: r.params,
    "step": lambda r: r.step_flops, "backward": lambda r: r.backward_flops,
}


def _sort_key(sort: str | None, train: bool) -> SortKey:
    """``sort`` checked: a key of SORT_KEYS ("step" and "backward" in a training step only); None or "": step FLOPs
    in a training step, forward FLOPs otherwise."""
    if not sort:
        return "step" if train else "flops"
    for key in SORT_KEYS:
        if key == sort:
            if key in STEP_SORT_KEYS and not train:
                others = ", ".join(k for k in SORT_KEYS if k not in STEP_SORT_KEYS)
                raise InputError(f"sort={sort!r} needs a training step (mode='train'); otherwise sort by {others}")
            return key
    raise InputError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")


def select(report: CostReport, options: TableOptions) -> list[Row]:
    """The rows every tabular renderer shows for ``options``.

    Without ``sort``/``top``: :func:`rows` (the tree to ``depth``, repeats folded). With either: the leaf modules
    (those that ran ops themselves, never a parent that double-counts its children), most expensive first by
    ``sort`` (ties by name), the first ``top`` of them. ``sort`` None: by FLOPs, in a training step by step FLOPs
    (forward + backward + recompute + optimizer). A ``sort`` not in SORT_KEYS, or "step"/"backward" outside a
    training step, is an InputError.
    """
    if not options.flat:
        return rows(report, options.depth, options.fold)
    value = _SORT_VALUE[_sort_key(options.sort, train=bool(report.phases))]
    leaves = [r for r in rows(report, EVERY_LEVEL, fold=False)[1:] if report.module(r.name).is_leaf]
    leaves.sort(key=lambda r: (-value(r), r.name))
    return leaves[:options.top] if options.top else leaves


# -- what a row says -----------------------------------------------------------------------------------------------

def calls_suffix(row: Row) -> str:
    """`` xN`` for a module called N > 1 times, `` xN, shapes differ`` when its calls took or returned other shapes
    than the first (whose shapes the row shows); never on a folded row, which stands for several modules."""
    if row.calls <= 1 or row.folded != 1:
        return ""
    return f" x{row.calls}, shapes differ" if row.shapes_differ else f" x{row.calls}"


def row_label(row: Row, flat: bool) -> str:
    """The text table's first cell: ``name (Type)`` indented by depth (not when ``flat``); the model: its class."""
    if row.depth == 0 and row.name == "(model)":
        return f"{row.type}{calls_suffix(row)}"
    indent = "" if flat else "  " * row.depth
    return f"{indent}{row.name} ({row.type}){calls_suffix(row)}"


_EVAL_HEADERS = ("Params", "MACs", "FLOPs", "% FLOPs")


def _recomputes(report: CostReport) -> bool:
    return report.phase("recompute").flops > 0


def count_headers(report: CostReport, columns: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The count columns' headers: in eval Params, MACs, FLOPs, % FLOPs; for a training step Params, then FLOPs by
    phase (forward, backward, recompute when any block is checkpointed, optimizer), the step's and % of the step,
    each on two lines ("Fwd\nFLOPs") so the columns stay as narrow as their figures (Markdown joins the lines);
    then the optional ``columns`` (COLUMNS) asked for."""
    extra = tuple(_COLUMN_HEADERS[c] for c in columns)
    if not report.phases:
        return (*_EVAL_HEADERS, *extra)
    return ("Params", "Fwd\nFLOPs", "Bwd\nFLOPs", *(("Recomp\nFLOPs",) if _recomputes(report) else ()),
            "Opt\nFLOPs", "Step\nFLOPs", "%\nstep", *extra)


def _optional_cell(row: Row, column: str) -> str:
    if column == "bytes":
        return format_bytes(row.bytes)
    if column == "intensity":
        return f"{row.intensity:.1f}" if row.bytes else "-"
    if column == "predicted":
        return format_seconds(row.predicted_s) if row.predicted_s else "-"
    if column == "bound":
        return row.bound or "-"
    return format_seconds(row.measured_s) if row.measured_s else "-"


def count_cells(row: Row, report: CostReport, columns: tuple[str, ...] = ()) -> list[str]:
    """The cells under :func:`count_headers`: Params (`` (shared)`` when some are used outside the module), then in
    eval MACs, FLOPs and % of the model's FLOPs; for a training step the module's FLOPs by phase, its step FLOPs and
    their % of the whole step's (the loss, outside every module, is in the total only); then the optional
    ``columns``."""
    shared = " (shared)" if row.shared_params and row.folded == 1 else ""
    params = format_count(row.params) + shared
    extra = [_optional_cell(row, c) for c in columns]
    if not report.phases:
        share = f"{100 * row.flops / report.flops:.2f}%" if report.flops else "-"
        return [params, format_count(row.macs), format_count(row.flops), share, *extra]
    step = f"{100 * row.step_flops / report.step_flops:.2f}%" if report.step_flops else "-"
    recompute = [format_count(row.recompute_flops)] if _recomputes(report) else []
    return [params, format_count(row.flops), format_count(row.backward_flops), *recompute,
            format_count(row.optimizer_flops), format_count(row.step_flops), step, *extra]


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table_lines(header: tuple[str, ...], align: tuple[str, ...], body: list[list[str]]) -> list[str]:
    """A GitHub Markdown table: the header, the alignment row (``:--``, ``--:``), then one line per row of ``body``."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in cells) + " |" for cells in body]
    return lines


def console(width: int | None, color: bool) -> Console:
    """A console to render into a string (``with console.capture() as out``): ``width`` columns (None: 120), ANSI
    colour only when ``color``, no highlighting of numbers."""
    return Console(file=io.StringIO(), width=width or 120, force_terminal=color, no_color=not color,
                   color_system="auto" if color else None, highlight=False)


# -- the footer ----------------------------------------------------------------------------------------------------

def footer_lines(report: CostReport) -> list[str]:
    """The totals under a table: exact counts, uncounted ops, sizes in MiB, the peak memory and how the run was made."""
    lines = [
        f"Total params: {format_int(report.params)} ({format_count(report.params)})",
        f"Trainable params: {format_int(report.trainable_params)}",
        f"Non-trainable params: {format_int(report.non_trainable_params)}",
        f"Buffers: {format_int(report.buffers)}",
        f"MACs: {format_int(report.macs)} ({format_count(report.macs)})",
        f"FLOPs: {format_int(report.flops)} ({format_count(report.flops)}) = 2 x MACs + other floating-point ops",
    ]
    lines += _phase_lines(report)
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
    lines += parallel_lines(report)
    lines += measured_time_lines(report)
    lines += predicted_time_lines(report)
    lines.append(f"({report.mode} mode, {report.dtype}, {report.device}; counts per docs/conventions.md)")
    return lines


def _rate(value: float, unit: str) -> str:
    """A rate with a decimal prefix: 1.23e12, "FLOP/s" -> '1.23 TFLOP/s'."""
    text = format_count(value)
    return f"{text}{unit}" if text[-1].isalpha() else f"{text} {unit}"


def _span(median: float, low: float | None, high: float | None) -> str:
    spread = f" (min {format_seconds(low)}, max {format_seconds(high)})" if low is not None and high is not None else ""
    return f"{format_seconds(median)} median{spread}"


def measured_time_lines(report: CostReport) -> list[str]:
    """The measured time (``analyze(..., time=True)``; nothing otherwise): where and how it was measured, the
    forward's median and spread and achieved rates, a training step's phases, and the hooked runs'."""
    t = report.measured_time
    if t is None:
        return []
    threads = f"{t.threads} threads, " if t.device.startswith("cpu") else ""
    rates = ", ".join(_rate(v, u) for v, u in ((t.flops_per_s, "FLOP/s"), (t.bytes_per_s, "B/s")) if v)
    what = "forward in the step" if t.step_s is not None else "forward"
    lines = [f"Measured time on {t.device} ({threads}{t.repeats} repeats after {t.warmup} warm-up; {t.clock}):",
             f"  {what} {_span(t.forward_s, t.forward_min_s, t.forward_max_s)}" + (f"; {rates}" if rates else "")]
    if t.step_s is not None:
        rate = f"; {_rate(t.step_flops_per_s, 'FLOP/s')}" if t.step_flops_per_s else ""
        lines.append(f"  training step {_span(t.step_s, t.step_min_s, t.step_max_s)}{rate}")
        lines.append("    by phase (medians): " + ", ".join(
            f"{label} {format_seconds(v)}" for label, v in (
                ("forward", t.forward_s), ("loss + backward", t.backward_s), ("optimizer", t.optimizer_s))
            if v is not None))
    if t.hooked_repeats:
        lines.append(f"  with module hooks (the per-module times, {t.hooked_repeats} repeats): {what} "
                     f"{format_seconds(t.hooked_forward_s)} median")
    return lines


def _tflops(value: float) -> str:
    return f"{value / 1e12:.3g} TFLOP/s" if value >= 1e12 else f"{value / 1e9:.3g} GFLOP/s"


def predicted_time_lines(report: CostReport) -> list[str]:
    """The roofline prediction (``analyze(..., hardware=)``; nothing otherwise): the hardware and the peaks and
    efficiencies used, the forward (and step, by phase), throughput, the memory-bound share, communication and MFU."""
    p = report.predicted_time
    if p is None:
        return []
    bandwidth = f"{p.memory_bandwidth / 1e12:.3g} TB/s" if p.memory_bandwidth >= 1e12 else \
        f"{p.memory_bandwidth / 1e9:.3g} GB/s"
    head = [f"forward {format_seconds(p.forward_s)}"]
    if report.phases:
        head.append(f"training step {format_seconds(p.step_s)}")
    if p.per_s:
        head.append(f"{format_int(round(p.per_s))} {p.per_s_unit}")
    head.append(f"{100 * p.memory_bound_share:.0f}% of the time memory-bound")
    lines = [f"Predicted on {p.hardware_name} ({p.dtype} dense {_tflops(p.peak_flops)} at "
             f"{100 * p.matmul_efficiency:.0f}%, {bandwidth} at {100 * p.memory_efficiency:.0f}%):",
             "  " + ", ".join(head)]
    if report.phases:
        lines += _wrap("  by phase: ", [f"{x.name} {format_seconds(x.seconds)}" for x in p.phases
                                         if x.seconds or x.name != "recompute"])
    if p.comm_s:
        lines.append(f"  collectives {format_seconds(p.comm_s)} per step at {p.interconnect_bandwidth / 1e9:.0f} GB/s "
                     f"per direction ({p.interconnect}): bandwidth only, overlap with compute not modelled")
    if p.mfu:
        lines.append(f"  MFU {100 * p.mfu:.1f}% ({format_count(report.step_flops)} FLOPs in "
                     f"{format_seconds(p.step_time)}, {p.step_time_source}, over the {p.dtype} dense peak)")
    launch = (f"+ {p.call_overhead * 1e6:.1f} us per op for dispatch" if p.call_overhead
              else "no launch overhead")
    lines.append(f"  roofline per op, {launch}, no fusion or overlap (docs/conventions.md, Time)")
    return lines


_KIND_ORDER = ("all_gather", "reduce_scatter", "all_reduce", "broadcast", "all_to_all", "send", "recv")


def parallel_lines(report: CostReport) -> list[str]:
    """A simulated rank's world and collectives (nothing for a single-device run)."""
    p = report.parallel
    if p is None:
        return []
    parts = []
    if p.fsdp > 1:
        reshard = "reshard after forward" if p.reshard_after_forward else "no reshard after forward"
        mp = f", params {p.param_dtype or 'as is'} / reduce {p.reduce_dtype or 'as is'}" if (
            p.param_dtype or p.reduce_dtype) else ""
        offload = ", CPU offload" if p.offload else ""
        parts.append(f"FSDP2 x {p.fsdp} ({reshard}{mp}{offload})")
    if p.ddp > 1:
        parts.append(f"DDP x {p.ddp} ({len(p.buckets)} buckets, cap {p.bucket_cap_mb:g} MB)")
    parts.append(f"TP {p.tp}")
    if p.strategy == "custom":
        parts = [f"custom apply= on a mesh {' x '.join(map(str, p.mesh_shape))} ({', '.join(p.mesh_dims)})"]
    differ = "ranks differ" if p.ranks_differ else "ranks alike"
    analysed = ", ".join(map(str, p.ranks_analyzed))
    lines = [f"Parallel: {', '.join(parts)}; rank {p.rank} of {p.world} (analysed {analysed}; {differ})"]
    kinds: dict[str, list[int]] = {}
    for c in report.collectives:
        entry = kinds.setdefault(c.kind, [0, 0, 0])
        entry[0] += c.calls
        entry[1] += c.bytes
        entry[2] += c.wire_bytes
    order = sorted(kinds, key=lambda k: (_KIND_ORDER.index(k) if k in _KIND_ORDER else 99, k))
    shown = [f"{k} {kinds[k][0]} x, {format_mib(kinds[k][1])} MiB" for k in order]
    wire = sum(v[2] for v in kinds.values())
    lines += _wrap(f"Collectives per step (rank {p.rank}): ", shown or ["none"])
    if kinds:
        lines.append(f"  payload per docs/conventions.md; sent by this rank over ring links: {format_mib(wire)} MiB")
    return lines


def _phase_lines(report: CostReport) -> list[str]:
    """A training step's FLOPs by phase (nothing in eval), and the ops of its later phases that have no formula."""
    if not report.phases:
        return []
    shown = ", ".join(f"{p.name} {format_count(p.flops)}" for p in report.phases if p.name != "recompute" or p.flops)
    lines = [f"Training step FLOPs: {shown}; total {format_int(report.step_flops)} "
             f"({format_count(report.step_flops)})"]
    lines += _split_lines(report)
    lines += _token_lines(report)
    later = [f"{p.name}: {o.op} x{o.calls}" for p in report.phases if p.name != "forward" for o in p.uncounted]
    if later:
        lines.append("Uncounted in the step (not in its total): " + ", ".join(later))
    return lines


def _split_lines(report: CostReport) -> list[str]:
    """The backward's MACs split into those that make input (activation) gradients and weight gradients; the rest
    (attention's products, products run by other nodes) in neither."""
    back = report.phase("backward")
    if not back.macs:
        return []
    rest = back.macs - back.input_grad_macs - back.weight_grad_macs
    other = f" + other {format_count(rest)}" if rest else ""
    return [f"Backward MACs: {format_count(back.macs)} = input gradients {format_count(back.input_grad_macs)}"
            f" + weight gradients {format_count(back.weight_grad_macs)}{other}"]


def _token_lines(report: CostReport) -> list[str]:
    """For a model fed ``report.tokens`` tokens: the step's FLOPs per token, and what the 6ND rule (6 x N trainable
    params a token) says, off by how much (negative: the rule says less)."""
    count = report.tokens
    if not count or not report.step_flops:
        return []
    rule = 6 * report.trainable_params
    off = 100 * (rule * count - report.step_flops) / report.step_flops
    return [f"Per token ({format_int(count)} tokens): {format_count(report.step_flops / count)} FLOPs; "
            f"6ND rule: {format_count(rule)} (6 x {format_count(report.trainable_params)}, off by {off:+.1f}%)"]


_PARTS = (("parameters", "parameters"), ("buffers", "buffers"), ("inputs", "inputs"), ("gradients", "gradients"),
          ("optimizer_state", "optimizer state"), ("saved_activations", "saved activations"),
          ("temporaries", "temporaries"), ("workspace", "workspace"), ("unsharded_params", "unsharded params"),
          ("comm_buffers", "comm buffers"))


def memory_lines(report: CostReport) -> list[str]:
    """The peak-memory part of the footer (nothing when the report measured no memory); lines of at most 100."""
    m = report.memory
    if m is None:
        return []
    what = "training step" if m.mode == "train" else "inference"
    where = f"{m.peak_phase}, {m.peak_op} in {m.peak_module or '(model)'}" if m.peak_op else "before the first op"
    parts = [f"{label} {format_mib(getattr(m.at_peak, key))}" for key, label in _PARTS if getattr(m.at_peak, key)]
    lines = [f"Peak memory, {what} (MiB): {format_mib(m.peak_bytes)} ({format_int(m.peak_bytes)} B)"]
    if m.measured_peak_bytes is not None:
        lines.append(_measured_line(m.peak_bytes, m.measured_peak_bytes, m.measured_by))
    lines.append(f"  where: {where}")
    lines += _wrap("  at the peak (MiB): ", parts or ["0"])
    if m.host_bytes:
        lines.append(f"  offloaded to host memory (FSDP2 CPU offload; not in the peak): {format_mib(m.host_bytes)} "
                     f"MiB at most")
    if m.mode == "train":
        lines.append(f"  optimizer: {m.optimizer or 'none'}")
        lines.append(f"  gradients (MiB): {format_mib(m.gradient_bytes)}, optimizer state (MiB): "
                     f"{format_mib(m.optimizer_state_bytes)}")
        lines.append(f"  loss: {m.loss or '-'}" + (f"; autocast {m.amp}" if m.amp else ""))
    rounding = ", 512 B blocks" if m.round_to > 1 else ""
    if m.target == "cpu":  # the workspace table and the probes cover the oneDNN kernels (collect/probe.py)
        lines.append(f"  from tensor lifetimes ({m.method} run, {m.target}{rounding}) and kernel workspaces; not")
        lines.append("  included: allocator cache and fragmentation (docs/conventions.md, Memory)")
    else:
        lines.append(f"  from tensor lifetimes ({m.method} run, {m.target}{rounding}); not included: kernel")
        lines.append("  workspaces, allocator cache and fragmentation, CUDA context (docs/conventions.md, Memory)")
    return lines


def _measured_line(predicted: int, measured: int, by: str) -> str:
    """The allocator's peak beside the prediction, and how far off the prediction is, as a share of the measured."""
    gap = (predicted - measured) / measured * 100 if measured else float("inf")
    verdict = "exact" if predicted == measured else f"{abs(gap):.1f} % {'high' if gap > 0 else 'low'}"
    return f"  measured by the allocator: {format_mib(measured)} MiB (prediction {verdict}; {by})"


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
