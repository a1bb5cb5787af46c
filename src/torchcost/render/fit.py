"""The --memory-budget answer (a :class:`~torchcost.fit.BatchFit`): lines under the table or the Markdown, and the
``max_batch_size`` object of the JSON report (src/torchcost/schema/report.schema.json)."""

from __future__ import annotations

from dataclasses import asdict

from torchcost.fit import BatchFit
from torchcost.units import format_bytes, format_int

__all__ = ["fit_dict", "fit_lines"]


def fit_lines(fit: BatchFit) -> list[str]:
    """The largest batch, the allowance it was judged with, and its peak (one line when nothing fits)."""
    allowance = (f"{fit.target}: predicted peak + {format_bytes(fit.reserve_bytes)} reserve + "
                 f"{fit.fragmentation:.0%} fragmentation")
    head = f"Largest batch within {format_bytes(fit.budget_bytes)} ({allowance}): {format_int(fit.batch_size)}"
    if not fit.batch_size:
        return [head + " (not even batch 1 fits)"]
    more = " (stopped at the search limit)" if fit.limit_reached else ""
    return [head + more, f"  at batch {format_int(fit.batch_size)}: peak {format_bytes(fit.peak_bytes)}, with the "
                         f"allowance {format_bytes(fit.needed_bytes)} ({len(fit.probes)} analyses)"]


def fit_dict(fit: BatchFit) -> dict[str, object]:
    """Every field of ``fit``, exact integers; ``probes`` as ``[batch size, predicted peak]`` pairs."""
    return {**asdict(fit), "probes": [list(p) for p in fit.probes]}
