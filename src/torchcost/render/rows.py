"""The rows a tabular renderer shows: which modules, at what depth, with identical repeated blocks folded.

Shared by the text table and the exports so they agree on what a row is.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchcost.errors import InputError
from torchcost.report import CostReport, ModuleCost
from torchcost.shapes import describe

__all__ = ["SORT_KEYS", "Row", "default_depth", "rows", "select"]

MAX_ROWS = 60
SORT_KEYS = ("flops", "macs", "params")


@dataclass(frozen=True)
class Row:
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


def _signature(m: ModuleCost) -> tuple[object, ...]:
    return (m.type, m.params, m.macs, m.flops, describe(m.output_shape), m.calls,
            tuple(_signature(c) for c in m.children))


def _row(m: ModuleCost, depth: int) -> Row:
    return Row(m.name or "(model)", m.type, depth, describe(m.output_shape), m.params, m.shared_params,
               m.macs, m.flops, m.calls, activation_bytes=m.activation_bytes, peak_memory=m.peak_memory)


def rows(report: CostReport, depth: int | None = None, fold: bool = True) -> list[Row]:
    """Pre-order rows down to ``depth`` (None: the default depth); runs of identical siblings folded to one row."""
    limit = default_depth(report, fold) if depth is None else depth
    out: list[Row] = [_row(report.root, 0)]

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
                sig = _signature(child)
                while j < len(children) and _signature(children[j]) == sig:
                    j += 1
                if j - i > 2:  # fold the repeats after the first one shown in full
                    rest = children[i + 1:j]
                    out.append(Row(f"{rest[0].name} ... {rest[-1].name}", f"{len(rest)} x {child.type}", level,
                                   f"identical to {child.name}", sum(r.params for r in rest),
                                   sum(r.shared_params for r in rest), sum(r.macs for r in rest),
                                   sum(r.flops for r in rest), sum(r.calls for r in rest), folded=len(rest),
                                   activation_bytes=sum(r.activation_bytes for r in rest),
                                   peak_memory=max(r.peak_memory for r in rest)))
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


def select(report: CostReport, depth: int | None = None, fold: bool = True, sort: str | None = None,
           top: int | None = None) -> list[Row]:
    """The rows every tabular renderer shows for these options.

    Without ``sort``/``top``: :func:`rows` (the tree to ``depth``, repeats folded). With either: the leaf modules
    (those that ran ops themselves, never a parent that double-counts its children), most expensive first by
    ``sort`` (default flops; ties by name), the first ``top`` of them.
    """
    if sort is None and top is None:
        return rows(report, depth, fold)
    key = sort or "flops"
    if key not in SORT_KEYS:
        raise InputError(f"sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    leaves = [r for r in rows(report, 10**6, fold=False)[1:] if report.module(r.name).is_leaf]
    leaves.sort(key=lambda r: (-int(getattr(r, key)), r.name))
    return leaves[:top] if top else leaves
