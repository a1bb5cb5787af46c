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
from torchcost.units import format_count, format_int, format_mib

__all__ = ["EVERY_LEVEL", "MAX_ROWS", "SORT_KEYS", "Row", "SortKey", "TableOptions", "calls_suffix", "console",
           "count_cells", "count_headers", "default_depth", "footer_lines", "memory_lines", "parallel_lines",
           "row_label", "rows", "select", "table_lines"]

SortKey = Literal["flops", "macs", "params", "step", "backward"]
SORT_KEYS: tuple[SortKey, ...] = ("flops", "macs", "params", "step", "backward")
_STEP_KEYS: tuple[SortKey, ...] = ("step", "backward")  # a training step's figures: mode="train" only
MAX_ROWS = 60  # the default depth keeps a table within this many rows
EVERY_LEVEL = 10**6  # a depth no model reaches


@dataclass(frozen=True)
class TableOptions:
    """The options of a table, the same for ``CostReport.table``, every renderer and the command line.

    ``depth``: modules down to this depth (None: the default depth; CSV: every level). ``fold``: runs of identical
    sibling blocks as one row. ``sort``/``top``: instead of the tree, the leaf layers most expensive first by ``sort``
    (one of SORT_KEYS; default flops, and in a training step step FLOPs), only the first ``top``. ``width`` (None:
    120) and ``color``: the text tables only.
    """

    depth: int | None = None
    width: int | None = 120
    fold: bool = True
    color: bool = False
    sort: str | None = None
    top: int | None = None

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


def _row(m: ModuleCost, depth: int) -> Row:
    return Row(m.name or "(model)", m.type, depth, describe(m.output_shape), m.params, m.shared_params,
               m.macs, m.flops, m.calls, activation_bytes=m.activation_bytes, peak_memory=m.peak_memory,
               shapes_differ=m.shapes_differ, backward_macs=m.backward_macs, backward_flops=m.backward_flops,
               recompute_macs=m.recompute_macs, recompute_flops=m.recompute_flops, optimizer_flops=m.optimizer_flops)


def _folded(rest: list[ModuleCost], first: ModuleCost, level: int) -> Row:
    """One row for the repeats ``rest`` of the block ``first``: their sums (the peak: the largest)."""
    return Row(f"{rest[0].name} ... {rest[-1].name}", f"{len(rest)} x {first.type}", level,
               f"identical to {first.name}", sum(r.params for r in rest), sum(r.shared_params for r in rest),
               sum(r.macs for r in rest), sum(r.flops for r in rest), sum(r.calls for r in rest), folded=len(rest),
               activation_bytes=sum(r.activation_bytes for r in rest), peak_memory=max(r.peak_memory for r in rest),
               backward_macs=sum(r.backward_macs for r in rest), backward_flops=sum(r.backward_flops for r in rest),
               recompute_macs=sum(r.recompute_macs for r in rest),
               recompute_flops=sum(r.recompute_flops for r in rest),
               optimizer_flops=sum(r.optimizer_flops for r in rest))


def rows(report: CostReport, depth: int | None = None, fold: bool = True) -> list[Row]:
    """Pre-order rows down to ``depth`` (None: the default depth); runs of identical siblings folded to one row."""
    limit = default_depth(report, fold) if depth is None else depth
    out: list[Row] = [_row(report.root, 0)]
    memo: dict[int, tuple[object, ...]] = {}

    def visit(m: ModuleCost, level: int) -> None:
        if level > limit:
            return
        children = list(m.children)
        i = 0
        while i < len(children):
            child = children[i]
            out.append(_row(child, level))
            visit(child, level + 1)
            j = i + 1
            if fold:
                sig = _signature(child, memo)
                while j < len(children) and _signature(children[j], memo) == sig:
                    j += 1
                if j - i > 2:  # fold the repeats after the first one shown in full
                    out.append(_folded(children[i + 1:j], child, level))
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
            if key in _STEP_KEYS and not train:
                others = ", ".join(k for k in SORT_KEYS if k not in _STEP_KEYS)
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


def count_headers(report: CostReport) -> tuple[str, ...]:
    """The count columns' headers: in eval Params, MACs, FLOPs, % FLOPs; for a training step Params, then FLOPs by
    phase (forward, backward, recompute when any block is checkpointed, optimizer), the step's and % of the step,
    each on two lines ("Fwd\nFLOPs") so the columns stay as narrow as their figures (Markdown joins the lines)."""
    if not report.phases:
        return _EVAL_HEADERS
    return ("Params", "Fwd\nFLOPs", "Bwd\nFLOPs", *(("Recomp\nFLOPs",) if _recomputes(report) else ()),
            "Opt\nFLOPs", "Step\nFLOPs", "%\nstep")


def count_cells(row: Row, report: CostReport) -> list[str]:
    """The cells under :func:`count_headers`: Params (`` (shared)`` when some are used outside the module), then in
    eval MACs, FLOPs and % of the model's FLOPs; for a training step the module's FLOPs by phase, its step FLOPs and
    their % of the whole step's (the loss, outside every module, is in the total only)."""
    shared = " (shared)" if row.shared_params and row.folded == 1 else ""
    params = format_count(row.params) + shared
    if not report.phases:
        share = f"{100 * row.flops / report.flops:.2f}%" if report.flops else "-"
        return [params, format_count(row.macs), format_count(row.flops), share]
    step = f"{100 * row.step_flops / report.step_flops:.2f}%" if report.step_flops else "-"
    recompute = [format_count(row.recompute_flops)] if _recomputes(report) else []
    return [params, format_count(row.flops), format_count(row.backward_flops), *recompute,
            format_count(row.optimizer_flops), format_count(row.step_flops), step]


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
    lines.append(f"({report.mode} mode, {report.dtype}, {report.device}; counts per docs/conventions.md)")
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
