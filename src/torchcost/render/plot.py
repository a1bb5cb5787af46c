"""A static picture of a report (``torchcost SPEC --plot FILE.png``): the costliest leaf layers' FLOPs (step FLOPs in
a training step) and their params as bars, and the memory timeline with its phases and peak. Needs matplotlib
(``pip install 'torchcost[plot]'``), imported only here; the Agg backend, so no display is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchcost.errors import InputError
from torchcost.report import CostReport, ModuleCost
from torchcost.units import format_bytes, format_count

__all__ = ["plot_report"]

_PHASE_COLOR = {"forward": "#4c78a8", "loss": "#b279a2", "backward": "#f58518", "recompute": "#eeca3b",
                "optimizer": "#54a24b"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise InputError("--plot needs matplotlib, which is not installed: pip install matplotlib "
                         "(or pip install 'torchcost[plot]')") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _step(m: ModuleCost) -> int:
    return m.flops + m.backward_flops + m.recompute_flops + m.optimizer_flops


def _short(name: str, width: int = 38) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def plot_report(report: CostReport, path: str | Path, *, title: str = "", top: int = 15) -> Path:
    """Draw the figure into ``path`` (the format from its suffix: png, svg, pdf) and return the path."""
    plt = _pyplot()
    train = bool(report.phases)
    leaves = [m for m in report.root.walk() if m.is_leaf and m is not report.root]
    key = _step if train else (lambda m: m.flops)
    by_flops = sorted(leaves, key=lambda m: (-key(m), m.name))[:top]
    by_params = sorted(leaves, key=lambda m: (-m.params, m.name))[:top]
    memory = report.memory is not None and len(report.memory.timeline) > 0
    fig = plt.figure(figsize=(13, 9.5 if memory else 5.5), dpi=110)
    grid = fig.add_gridspec(2 if memory else 1, 2, height_ratios=[1.25, 1] if memory else [1], hspace=0.35,
                            wspace=0.55)
    what = "step FLOPs" if train else "FLOPs"
    for col, (items, value, label, color, fmt) in enumerate((
            (by_flops, key, what, "#4c78a8", format_count),
            (by_params, lambda m: m.params, "params", "#f58518", format_count))):
        ax = fig.add_subplot(grid[0, col])
        items = [m for m in items if value(m) > 0]
        names = [f"{_short(m.name)} ({m.type})" for m in items][::-1]
        values = [value(m) for m in items][::-1]
        bars = ax.barh(range(len(values)), values, color=color, height=0.7)
        ax.set_yticks(range(len(values)), names, fontsize=8)
        ax.set_title(f"Top {len(values)} layers by {label}", fontsize=11, loc="left")
        ax.xaxis.set_major_formatter(lambda v, _pos: format_count(v, 1))
        ax.tick_params(axis="x", labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        total = (report.step_flops if train else report.flops) if col == 0 else report.params
        for bar, v in zip(bars, values):
            share = f" {100 * v / total:.1f}%" if total else ""
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {fmt(v)}{share}", va="center",
                    fontsize=7.5, color="#3e4c59")
        ax.set_xlim(0, (max(values) if values else 1) * 1.3)
    if memory:
        assert report.memory is not None
        _timeline(fig.add_subplot(grid[1, :]), report)
    head = title or report.model_type
    fig.suptitle(f"{head}\n{format_count(report.params)} params, {format_count(report.macs)} MACs, "
                 f"{format_count(report.flops)} FLOPs"
                 + (f", step {format_count(report.step_flops)} FLOPs" if train else "")
                 + (f", peak {format_bytes(report.peak_memory)}" if report.memory is not None else ""),
                 fontsize=12, x=0.02, ha="left")
    out = Path(path)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out


def _timeline(ax: Any, report: CostReport) -> None:
    m = report.memory
    assert m is not None
    t = m.timeline
    xs = range(len(t))
    gib = max(t.bytes) >= 2**30
    unit, scale = ("GiB", 2**30) if gib else ("MiB", 2**20)
    ys = [b / scale for b in t.bytes]
    start = 0
    for i in range(1, len(t) + 1):
        if i == len(t) or t.phases[i] != t.phases[start]:
            phase = t.phases[start]
            ax.axvspan(start - 0.5, i - 0.5, color=_PHASE_COLOR.get(phase, "#999999"), alpha=0.08, lw=0)
            ax.text((start + i - 1) / 2, 1.0, phase, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=8, color=_PHASE_COLOR.get(phase, "#555555"))
            start = i
    ax.fill_between(xs, ys, color="#4c78a8", alpha=0.2, lw=0)
    ax.plot(xs, ys, color="#2f5d8a", lw=1.2)
    low = min(ys)
    if low > 0.5 * max(ys):
        ax.set_ylim(low - (max(ys) - low) * 0.15, max(ys) + (max(ys) - low) * 0.12)
    if 0 <= m.peak_index < len(t):
        px, py = m.peak_index, m.peak_bytes / scale
        ax.plot([px], [py], "o", color="#d92d20", ms=5)
        right = px > len(t) * 0.6
        ax.annotate(f"peak {format_bytes(m.peak_bytes)} after {m.peak_op} in {m.peak_module or '(model)'}",
                    (px, py), xytext=(-8 if right else 8, -4), textcoords="offset points",
                    ha="right" if right else "left", va="top", fontsize=9, color="#b42318")
    ax.set_xlim(-0.5, len(t) - 0.5)
    ax.set_xlabel(f"ops in the order they ran ({len(t):,})", fontsize=9)
    ax.set_ylabel(f"bytes alive ({unit})", fontsize=9)
    ax.set_title(f"Memory over the run ({m.method} run, {m.target})", fontsize=11, loc="left", pad=14)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
