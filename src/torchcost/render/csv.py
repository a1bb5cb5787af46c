"""CSV: one row per module (the rows of :mod:`torchcost.render.rows`), exact integers, a header line first.

By default every module of the tree, unfolded, in pre-order (``depth=None``, ``fold=False``); ``depth``, ``fold``,
``sort`` and ``top`` select rows exactly as they do for the table. The model itself is the row named ``(model)``;
a folded row (``folded`` > 1) stands for that many identical sibling blocks and holds their sums.
"""

from __future__ import annotations

import csv
import io

from torchcost.render.rows import Row, select
from torchcost.report import CostReport

__all__ = ["COLUMNS", "render_csv"]

COLUMNS = ("name", "type", "depth", "calls", "output_shape", "params", "shared_params", "macs", "flops", "folded")
EVERY_LEVEL = 10**6


def render_csv(report: CostReport, *, depth: int | None = None, fold: bool = False, sort: str | None = None,
               top: int | None = None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    chosen: list[Row] = select(report, EVERY_LEVEL if depth is None else depth, fold, sort, top)
    for row in chosen:
        writer.writerow([getattr(row, c) for c in COLUMNS])
    return buf.getvalue()
