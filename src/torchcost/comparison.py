"""Side by side: several models' parameters, MACs, FLOPs and memory sizes, each with its ratio to the first.

    >>> c = torchcost.compare("example:standard_conv", "example:depthwise_separable")
    >>> c.row("macs").values        # (442368, 159744)
    >>> c.row("macs").ratios        # (1.0, 0.361...)
    >>> print(c)                    # the table; c.to_dict() the same as data

The ratios are the only arithmetic here (value / first model's value); the values are the reports' own integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torchcost.errors import InputError
from torchcost.report import CostReport
from torchcost.shapes import describe

__all__ = ["COMPARE_SCHEMA_VERSION", "METRICS", "STEP", "CompareRow", "Comparison", "build_comparison"]

COMPARE_SCHEMA_VERSION = 1

# (key, label, unit): key is a CostReport attribute; unit "count" or "bytes"
METRICS: tuple[tuple[str, str, str], ...] = (
    ("params", "Params", "count"),
    ("macs", "MACs", "count"),
    ("flops", "FLOPs", "count"),
    ("input_bytes", "Input size", "bytes"),
    ("param_bytes", "Params size", "bytes"),
    ("buffer_bytes", "Buffers size", "bytes"),
    ("activation_bytes", "Output activations", "bytes"),
    ("total_bytes", "Total size", "bytes"),
)
PEAK = ("peak_memory", "Peak memory", "bytes")  # shown when at least one report measured memory
# shown when at least one model ran a training step (``mode="train"``): the whole step's counts (forward, loss,
# backward, recompute, optimizer), where MACs and FLOPs above are the forward's
STEP: tuple[tuple[str, str, str], ...] = (
    ("step_macs", "Training step MACs", "count"),
    ("step_flops", "Training step FLOPs", "count"),
)


@dataclass(frozen=True)
class CompareRow:
    """One metric across the models: exact values, and each value divided by the first model's (None when the
    first is 0)."""

    metric: str
    label: str
    unit: str
    values: tuple[int, ...]
    ratios: tuple[float | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "label": self.label, "unit": self.unit, "values": list(self.values),
                "ratios": list(self.ratios)}


@dataclass(frozen=True)
class Comparison:
    """The comparison table as data: ``names`` (one per model, in order), ``specs`` (what each was built from),
    ``reports`` (each model's full CostReport) and ``rows`` (one per metric)."""

    names: tuple[str, ...]
    specs: tuple[str, ...]
    reports: tuple[CostReport, ...]
    rows: tuple[CompareRow, ...]

    def row(self, metric: str) -> CompareRow:
        for r in self.rows:
            if r.metric == metric:
                return r
        raise InputError(f"no metric {metric!r} in this comparison; metrics: {', '.join(r.metric for r in self.rows)}")

    def to_dict(self) -> dict[str, Any]:
        models = [{"name": n, "spec": s, "model_type": r.model_type, "input_shape": describe(r.input_shape),
                   "device": r.device, "dtype": r.dtype, "mode": r.mode}
                  for n, s, r in zip(self.names, self.specs, self.reports)]
        return {"schema_version": COMPARE_SCHEMA_VERSION, "kind": "comparison", "models": models,
                "rows": [r.to_dict() for r in self.rows]}

    def table(self, *, width: int | None = 120, color: bool = False) -> str:
        from torchcost.render.compare import render_compare_text

        return render_compare_text(self, width=width, color=color)

    def __str__(self) -> str:
        return self.table()

    def to_html(self) -> str:
        """The models side by side as one self-contained HTML page (render/html.py)."""
        from torchcost.render.html import render_compare_html

        return render_compare_html(self)


def build_comparison(reports: Sequence[CostReport], names: Sequence[str], specs: Sequence[str]) -> Comparison:
    """The table for reports already made (the CLI's path: it resolves and analyses each model itself)."""
    if not reports:
        raise InputError("compare needs at least one model")
    metrics = list(METRICS)
    if any(r.mode == "train" for r in reports):
        after = [key for key, _, _ in metrics].index("flops") + 1  # (after the forward's FLOPs)
        metrics[after:after] = STEP
    if any(getattr(r, "peak_memory", 0) for r in reports):
        metrics.append(PEAK)
    rows = []
    for key, label, unit in metrics:
        values = tuple(int(getattr(r, key)) for r in reports)
        first = values[0]
        ratios = tuple((v / first) if first else None for v in values)
        rows.append(CompareRow(key, label, unit, values, ratios))
    return Comparison(tuple(_unique(names)), tuple(specs), tuple(reports), tuple(rows))


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out
