"""CSV: one row per module (the rows of :mod:`torchcost.render.layout`), exact integers, a header line first.

By default every module of the tree, unfolded, in pre-order (``depth=None`` means every level here); ``depth``,
``fold``, ``sort`` and ``top`` select rows exactly as they do for the table. The model itself is the row named
``(model)``; a folded row (``folded`` > 1) stands for that many identical sibling blocks and holds their sums. A
training step's report adds TRAIN_COLUMNS (each module's backward, recompute and optimizer counts and its step FLOPs);
``macs``/``flops`` stay the forward's.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace

from torchcost.render.layout import EVERY_LEVEL, TableOptions, select
from torchcost.report import CostReport

__all__ = ["COLUMNS", "TRAIN_COLUMNS", "render_csv"]

COLUMNS = ("name", "type", "depth", "calls", "output_shape", "params", "shared_params", "macs", "flops", "folded")
TRAIN_COLUMNS = ("backward_macs", "backward_flops", "recompute_macs", "recompute_flops", "optimizer_flops",
                 "step_flops")  # after COLUMNS, only for a training step (macs/flops: its forward)


_CSV_OPTIONAL = {"bytes": "bytes", "intensity": "intensity", "predicted": "predicted_s", "bound": "bound",
                 "time": "measured_s"}


def render_csv(report: CostReport, options: TableOptions | None = None) -> str:
    """The rows ``options`` select (default: every module, unfolded; ``width`` and ``color`` do not apply)."""
    options = options or TableOptions(fold=False)
    if options.depth is None:
        options = replace(options, depth=EVERY_LEVEL)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns: tuple[str, ...] = COLUMNS + TRAIN_COLUMNS if report.phases else COLUMNS
    columns += tuple(_CSV_OPTIONAL[c] for c in options.columns)  # --columns: bytes, intensity, predicted_s, ...
    writer.writerow(columns)
    for row in select(report, options):
        writer.writerow([getattr(row, c) for c in columns])
    return buf.getvalue()
