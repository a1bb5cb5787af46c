"""Side by side: several models' parameters, MACs, FLOPs and memory sizes, each with its ratio to the first.

    >>> c = torchcost.compare("example:standard_conv", "example:depthwise_separable")
    >>> c.row("macs").values        # (442368, 159744)
    >>> c.row("macs").ratios        # (1.0, 0.361...)
    >>> print(c)                    # the table; c.to_dict() the same as data

The ratios are the only arithmetic here (value / first model's value); the values are the reports' own integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.api import analyze
from torchcost.errors import InputError
from torchcost.report import CostReport
from torchcost.resolve import Resolved, resolve
from torchcost.shapes import describe

__all__ = ["COMPARE_SCHEMA_VERSION", "METRICS", "CompareRow", "Comparison", "compare"]

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


def build_comparison(reports: Sequence[CostReport], names: Sequence[str], specs: Sequence[str]) -> Comparison:
    """The table for reports already made (the CLI's path: it resolves and analyses each model itself)."""
    if not reports:
        raise InputError("compare needs at least one model")
    metrics = list(METRICS)
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


def compare(
    *models: str | nn.Module | CostReport | Resolved | tuple[Any, ...],
    names: Sequence[str] | None = None,
    input_size: Sequence[int] | Sequence[Sequence[int]] | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    meta: bool = False,
    config: Mapping[str, Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    **analyze_kwargs: Any,
) -> Comparison:
    """Analyse each model and put them side by side.

    Each model is a spec string (``"torchvision:resnet50"``, built by :func:`torchcost.resolve.resolve` with
    ``input_size``, ``batch_size``, ``seq_len``, ``dtype``, ``device``, ``meta``, ``config`` and ``kwargs``), an
    ``nn.Module`` (analysed with ``input_size``, which it then needs), a ``(module, input, ...)`` tuple, a
    :class:`~torchcost.resolve.Resolved`, or a :class:`CostReport` already made. ``analyze_kwargs`` go to every
    :func:`torchcost.analyze` call. ``names`` label the columns (default: the spec's model name or the class name).
    """
    if not models:
        raise InputError("compare() needs at least one model")
    if names is not None and len(names) != len(models):
        raise InputError(f"{len(models)} models but {len(names)} names")
    reports: list[CostReport] = []
    labels: list[str] = []
    specs: list[str] = []
    for item in models:
        if isinstance(item, CostReport):
            reports.append(item)
            labels.append(item.model_type)
            specs.append("")
            continue
        if isinstance(item, str):
            item = resolve(item, input_size=input_size, batch_size=batch_size, seq_len=seq_len, dtype=dtype,
                           device=device, meta=meta, config=config, kwargs=kwargs)
        if isinstance(item, Resolved):
            reports.append(analyze(item.model, *item.args, kwargs=item.kwargs, **analyze_kwargs))
            labels.append(item.name)
            specs.append(item.spec)
        elif isinstance(item, nn.Module):
            if input_size is None:
                raise InputError(f"compare() got a {type(item).__name__} module without inputs: give input_size, "
                                 f"or pass (module, input) instead")
            reports.append(analyze(item, input_size=input_size, dtype=dtype, device=device, **analyze_kwargs))
            labels.append(type(item).__name__)
            specs.append("")
        elif isinstance(item, tuple) and item and isinstance(item[0], nn.Module):
            reports.append(analyze(item[0], *item[1:], **analyze_kwargs))
            labels.append(type(item[0]).__name__)
            specs.append("")
        else:
            raise InputError(f"compare() takes specs, modules, (module, input) tuples or reports; got "
                             f"{type(item).__name__}")
    return build_comparison(reports, list(names) if names is not None else labels, specs)
