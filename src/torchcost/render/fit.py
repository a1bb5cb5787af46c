"""The --memory-budget answer (a :class:`~torchcost.fit.BatchFit`): lines under the table or the Markdown, and the
``max_batch_size`` object of the JSON report (src/torchcost/schema/report.schema.json); and the --fsdp-sweep table
(:func:`~torchcost.fit.fsdp_sweep`'s points) as text, Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict

from torchcost.fit import BatchFit, SweepPoint
from torchcost.units import format_bytes, format_count, format_int

__all__ = ["SWEEP_COLUMNS", "fit_dict", "fit_lines", "render_sweep", "sweep_dict", "sweep_rows"]


def fit_lines(fit: BatchFit) -> list[str]:
    """The largest batch, the allowance it was judged with, and its peak (one line when nothing fits)."""
    allowance = (f"{fit.target}: predicted peak + {format_bytes(fit.reserve_bytes)} reserve + "
                 f"{fit.fragmentation:.0%} fragmentation")
    who = "" if fit.rank is None else f" per rank (rank {fit.rank} of {fit.world}; each rank's own batch)"
    head = (f"Largest batch{who} within {format_bytes(fit.budget_bytes)} ({allowance}): "
            f"{format_int(fit.batch_size)}")
    smallest = ([f"  from batch {fit.smallest}: at batch 1 a batch norm's training statistics have one value per "
                 f"channel, which torch refuses"] if fit.smallest > 1 else [])
    if not fit.batch_size:
        return [head + f" (not even batch {fit.smallest} fits)", *smallest]
    more = " (stopped at the search limit)" if fit.limit_reached else ""
    return [head + more, f"  at batch {format_int(fit.batch_size)}: peak {format_bytes(fit.peak_bytes)}, with the "
                         f"allowance {format_bytes(fit.needed_bytes)} ({len(fit.probes)} analyses)", *smallest]


def fit_dict(fit: BatchFit) -> dict[str, object]:
    """Every field of ``fit``, exact integers; ``probes`` as ``[batch size, predicted peak]`` pairs."""
    data = {**asdict(fit), "probes": [list(p) for p in fit.probes]}
    if fit.rank is None:  # not a parallel search: the two parallel fields are left out
        del data["rank"], data["world"]
    return data


# -- the sweep -----------------------------------------------------------------------------------------------------

# (key, heading) of the sweep table; the byte columns are the peak's breakdown (they add up to "peak")
SWEEP_COLUMNS = (
    ("world", "World"), ("mesh", "FSDP x TP"), ("rank", "Rank"), ("peak", "Peak/rank"),
    ("param_shards", "Param shards"), ("gradients", "Grads"), ("optimizer_state", "Optim state"),
    ("unsharded_params", "Unsharded params"), ("comm_buffers", "Comm buffers"), ("activations", "Act+temp"),
    ("step_flops", "Step FLOPs/rank"), ("comm_bytes", "Comm bytes/step"), ("max_batch", "Max batch/rank"),
    ("global_batch", "Global batch"),
)


def _values(point: SweepPoint) -> dict[str, int | str | None]:
    """One row's exact values (None: no budget was given). ``activations`` is everything else alive at the peak:
    saved activations, temporaries, kernel workspace, the inputs and buffers."""
    report, plan = point.report, point.parallel
    mem = report.memory
    at = mem.at_peak if mem is not None else None
    fit = point.fit
    return {
        "world": plan.world, "mesh": f"{plan.fsdp} x {plan.tp}", "rank": plan.rank,
        "peak": report.peak_memory,
        "param_shards": at.parameters if at else 0, "gradients": at.gradients if at else 0,
        "optimizer_state": at.optimizer_state if at else 0, "unsharded_params": at.unsharded_params if at else 0,
        "comm_buffers": at.comm_buffers if at else 0,
        "activations": (at.saved_activations + at.temporaries + at.workspace + at.inputs + at.buffers) if at else 0,
        "step_flops": report.step_flops, "comm_bytes": sum(c.bytes for c in report.collectives),
        "max_batch": fit.batch_size if fit is not None else None,
        "global_batch": fit.batch_size * plan.dp if fit is not None else None,
    }


def sweep_rows(points: Sequence[SweepPoint]) -> list[dict[str, int | str | None]]:
    """Every point's row of exact values, keyed as :data:`SWEEP_COLUMNS` (the budget columns only with a budget)."""
    return [_values(p) for p in points]


def _columns(points: Sequence[SweepPoint]) -> list[tuple[str, str]]:
    budget = any(p.fit is not None for p in points)
    return [(k, h) for k, h in SWEEP_COLUMNS if budget or k not in ("max_batch", "global_batch")]


def _shown(key: str, value: int | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key == "step_flops":
        return format_count(value)
    if key in ("world", "rank", "max_batch", "global_batch"):
        return format_int(value)
    return format_bytes(value)


def _notes(points: Sequence[SweepPoint]) -> list[str]:
    notes = ["Per rank, at the inputs' batch: the peak and what is alive at it (param shards: the local FSDP2 shards, "
             "padded; Act+temp: saved activations, temporaries, inputs and buffers); Comm bytes: the payload of every "
             "collective of one step (CostReport.collectives)."]
    fit = next((p.fit for p in points if p.fit is not None), None)
    if fit is not None:
        notes.append(f"Max batch/rank: the largest batch of one rank whose peak + {format_bytes(fit.reserve_bytes)} "
                     f"reserve + {fit.fragmentation:.0%} fragmentation fits {format_bytes(fit.budget_bytes)} "
                     f"({fit.target}); Global batch: that times the data-parallel degree.")
    return notes


def render_sweep(points: Sequence[SweepPoint], fmt: str, *, description: str = "") -> str:
    """The sweep table: ``fmt`` "table" (aligned text), "markdown", "csv" (exact integers) or "json"."""
    if fmt == "json":
        return json.dumps(sweep_dict(points, description=description), indent=2) + "\n"
    columns = _columns(points)
    rows = sweep_rows(points)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([k for k, _ in columns])
        writer.writerows([["" if r[k] is None else r[k] for k, _ in columns] for r in rows])
        return out.getvalue()
    cells = [[_shown(k, r[k]) for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    if fmt == "markdown":
        lines = [f"**{description}**", ""] if description else []
        lines += ["| " + " | ".join(heads) + " |", "|" + "|".join("---:" for _ in heads) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join([*lines, "", *_notes(points)]) + "\n"
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = [description] if description else []
    lines.append("  ".join(h.rjust(w) for h, w in zip(heads, widths)))
    lines += ["  ".join(v.rjust(w) for v, w in zip(c, widths)) for c in cells]
    return "\n".join([*lines, *_notes(points)]) + "\n"


def sweep_dict(points: Sequence[SweepPoint], *, description: str = "") -> dict[str, object]:
    """The sweep as data: per world size, the row's exact values, the largest batch (``max_batch_size``, as in the
    report's JSON; absent without a budget) and the rank's whole report (``report``, report.schema.json)."""
    entries = []
    for point, row in zip(points, sweep_rows(points)):
        entry: dict[str, object] = {k: v for k, v in row.items() if v is not None}
        entry["fsdp"], entry["tp"] = point.parallel.fsdp, point.parallel.tp
        entry["collective_wire_bytes"] = sum(c.wire_bytes for c in point.report.collectives)
        if point.fit is not None:
            entry["max_batch_size"] = fit_dict(point.fit)
        entry["report"] = point.report.to_dict()
        entries.append(entry)
    return {"description": description, "sweep": entries}
