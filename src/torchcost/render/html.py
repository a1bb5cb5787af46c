"""One self-contained HTML page for a report or a comparison, and the notebook display.

``render_html(report)`` is a single file that opens offline and fetches nothing: the data as JSON in a ``<script>``,
hand-written SVG drawn by a small vanilla script and a style sheet (both in ``render/assets/``, inlined). It shows a
headline strip (params, MACs, FLOPs, peak memory, and how the peak sits in a memory budget when one is given), an
icicle of the module tree sized by FLOPs, params, memory or (training step) step FLOPs that zooms into a subtree on a
click, the memory timeline with the peak and the phases, and the module table (the text table's columns, sortable and
filterable). ``render_compare_html`` puts several models side by side with their ratios.

For notebooks: ``report_repr_html`` (``CostReport._repr_html_``: a headline, a static bar chart of the most expensive
layers and the table, no script) and ``report_frame`` (``CostReport.to_pandas()``: one row per module).

Sizes stay bounded for big models: identical sibling blocks are folded in the icicle once the tree has more than
``FOLD_ABOVE`` modules, and the timeline is decimated to at most ``MAX_POINTS`` points (each bucket keeps its lowest and
highest point, and the peak is always kept).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import fields
from importlib import resources
from typing import TYPE_CHECKING, Any

from torchcost.errors import InputError
from torchcost.render.layout import EVERY_LEVEL, Row, count_cells, count_headers, footer_lines, rows
from torchcost.report import CostReport, MemoryReport, ModuleCost
from torchcost.shapes import describe
from torchcost.units import format_bytes, format_count, format_int

if TYPE_CHECKING:
    from torchcost.comparison import Comparison
    from torchcost.fit import BatchFit

__all__ = ["FOLD_ABOVE", "MAX_POINTS", "TABLE_FOLD_ABOVE", "icicle_data", "render_compare_html", "render_html",
           "report_frame", "report_repr_html", "timeline_data"]

FOLD_ABOVE = 3000  # icicle nodes beyond which runs of identical sibling blocks are folded into one node
TABLE_FOLD_ABOVE = 400  # the table shows every module up to this many, else folds identical blocks like the terminal
MAX_POINTS = 3000  # the timeline's points at most, after decimation

_PHASES = ("forward", "loss", "backward", "recompute", "optimizer")
_BREAKDOWN_LABELS = {"parameters": "parameters", "buffers": "buffers", "inputs": "inputs", "gradients": "gradients",
                     "optimizer_state": "optimizer state", "saved_activations": "saved activations",
                     "temporaries": "temporaries", "workspace": "workspace", "unsharded_params": "unsharded params",
                     "comm_buffers": "comm buffers"}


# -- the data the page's script draws ------------------------------------------------------------------------------

def _memory_of(m: ModuleCost) -> int:
    """What the icicle's memory view sizes a module by: the bytes it holds (parameters, buffers, activations kept)."""
    return m.param_bytes + m.buffer_bytes + m.activation_bytes


def _step_of(m: ModuleCost) -> int:
    return m.flops + m.backward_flops + m.recompute_flops + m.optimizer_flops


def _sig(m: ModuleCost, memo: dict[int, tuple[object, ...]]) -> tuple[object, ...]:
    sig = memo.get(id(m))
    if sig is None:
        sig = memo[id(m)] = (m.type, m.params, m.trainable_params, m.macs, m.flops, describe(m.output_shape),
                             _memory_of(m), _step_of(m), tuple(_sig(c, memo) for c in m.children))
    return sig


def icicle_data(report: CostReport, fold: bool | None = None) -> dict[str, Any]:
    """The module tree for the icicle, in pre-order: ``nodes`` rows of
    ``[parent, name, type, output shape, params, MACs, FLOPs, memory, step FLOPs, folded]`` where ``name`` is the full
    state_dict name ("" for the model), ``type`` an index into ``types`` and ``folded`` how many identical sibling
    blocks the node stands for (1 for a module). ``fold`` None: fold only when the tree has over FOLD_ABOVE modules."""
    if fold is None:
        fold = sum(1 for _ in report.root.walk()) > FOLD_ABOVE
    types: dict[str, int] = {}
    nodes: list[list[Any]] = []
    memo: dict[int, tuple[object, ...]] = {}

    def add(parent: int, name: str, type_: str, shape: str, values: tuple[int, int, int, int, int],
            folded: int) -> int:
        nodes.append([parent, name, types.setdefault(type_, len(types)), shape, *values, folded])
        return len(nodes) - 1

    def values(m: ModuleCost) -> tuple[int, int, int, int, int]:
        return m.params, m.macs, m.flops, _memory_of(m), _step_of(m)

    todo: list[tuple[list[ModuleCost], int]] = [([report.root], -1)]  # a module, or a run of folded blocks
    while todo:
        group, parent = todo.pop()
        if len(group) > 1:
            summed = tuple(sum(v) for v in zip(*(values(g) for g in group)))
            add(parent, f"{group[0].name} … {group[-1].name}", f"{len(group)} x {group[0].type}",
                "identical blocks", summed, len(group))
            continue
        m = group[0]
        index = add(parent, m.name, m.type, describe(m.output_shape), values(m), 1)
        children = list(m.children)
        groups: list[list[ModuleCost]] = []
        i = 0
        while i < len(children):
            j = i + 1
            if fold:
                sig = _sig(children[i], memo)
                while j < len(children) and _sig(children[j], memo) == sig:
                    j += 1
            if j - i > 2:  # the first block in full, the repeats as one node
                groups += [[children[i]], children[i + 1:j]]
            else:
                groups += [[c] for c in children[i:j]]
            i = j
        todo.extend((g, index) for g in reversed(groups))  # a stack: pushed in reverse, so they come out in order
    return {"nodes": nodes, "types": list(types), "folded": fold}


def timeline_data(memory: MemoryReport, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """The memory timeline for the chart: the points kept (``x`` the op's index, ``y`` bytes alive after it, ``op``,
    ``mod``, ``ph`` indexes into ``ops``/``mods``/``phases``), ``n`` the ops in all, the phases as ``bands``
    ``[phase, first, last]``, the peak and the breakdown at the peak. Over ``max_points`` ops, the ops are cut into
    buckets and each keeps its lowest and highest point; the peak is always kept."""
    t = memory.timeline
    n = len(t)
    keep: list[int]
    if n <= max_points:
        keep = list(range(n))
    else:
        size = math.ceil(n / (max_points // 2))
        chosen: set[int] = {0, n - 1}
        for start in range(0, n, size):
            chunk = range(start, min(start + size, n))
            chosen.add(min(chunk, key=lambda i: t.bytes[i]))
            chosen.add(max(chunk, key=lambda i: t.bytes[i]))
        if 0 <= memory.peak_index < n:
            chosen.add(memory.peak_index)
        keep = sorted(chosen)
    ops: dict[str, int] = {}
    mods: dict[str, int] = {}
    phases: dict[str, int] = {}
    bands: list[list[Any]] = []
    for i, phase in enumerate(t.phases):
        if bands and bands[-1][0] == phase:
            bands[-1][2] = i
        else:
            bands.append([phase, i, i])
    at_peak = [[_BREAKDOWN_LABELS.get(f.name, f.name), getattr(memory.at_peak, f.name)]
               for f in fields(memory.at_peak) if getattr(memory.at_peak, f.name)]
    peak_in = 0 <= memory.peak_index < n
    return {
        "n": n,
        "x": keep,
        "y": [t.bytes[i] for i in keep],
        "op": [ops.setdefault(t.ops[i], len(ops)) for i in keep],
        "mod": [mods.setdefault(t.modules[i], len(mods)) for i in keep],
        "ph": [phases.setdefault(t.phases[i], len(phases)) for i in keep],
        "ops": list(ops), "mods": list(mods), "phases": list(phases),
        "bands": bands,
        "decimated": n > len(keep),
        "start": memory.start_bytes,
        "peak": {"i": memory.peak_index if peak_in else -1, "bytes": memory.peak_bytes, "op": memory.peak_op,
                 "module": memory.peak_module, "phase": memory.peak_phase},
        "at_peak": at_peak,
        "method": memory.method, "target": memory.target, "mode": memory.mode,
    }


# -- the page --------------------------------------------------------------------------------------------------

def _asset(name: str) -> str:
    return resources.files("torchcost.render").joinpath("assets").joinpath(name).read_text(encoding="utf-8")


def _json_script(element_id: str, data: object) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _page(title: str, body: str, data: object) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_asset('report.css')}</style>\n</head>\n<body>\n"
        f"{body}\n{_json_script('tc-data', data)}\n<script>\n{_asset('report.js')}</script>\n</body>\n</html>\n"
    )


def _card(label: str, value: str, detail: str = "", cls: str = "") -> str:
    extra = f'<div class="tc-card-detail">{html.escape(detail)}</div>' if detail else ""
    return (f'<div class="tc-card {cls}"><div class="tc-card-label">{html.escape(label)}</div>'
            f'<div class="tc-card-value">{html.escape(value)}</div>{extra}</div>')


def _headline(report: CostReport) -> str:
    cards = [_card("Params", format_count(report.params), f"{format_int(report.params)} "
                   f"({format_count(report.trainable_params)} trainable)")]
    cards.append(_card("MACs", format_count(report.macs), format_int(report.macs)))
    cards.append(_card("FLOPs" if not report.phases else "Forward FLOPs", format_count(report.flops),
                       format_int(report.flops)))
    if report.phases:
        cards.append(_card("Step FLOPs", format_count(report.step_flops),
                           " + ".join(f"{p.name} {format_count(p.flops)}" for p in report.phases if p.flops)))
    m = report.memory
    if m is not None:
        where = f"{m.peak_op} in {m.peak_module or '(model)'}, {m.peak_phase}" if m.peak_op else "before the first op"
        cards.append(_card("Peak memory", format_bytes(m.peak_bytes), where, "tc-card-peak"))
    return '<section class="tc-headline">' + "".join(cards) + "</section>"


_FROM_TWO = " (from batch 2: at batch 1 a batch norm in training has one value per channel)"


def _fit_bar(report: CostReport, budget: int | None, fit: BatchFit | None) -> str:
    """How the peak sits in the budget: a bar, and the largest batch when the search ran."""
    if fit is not None:
        budget = fit.budget_bytes
    if not budget or report.memory is None:
        return ""
    peak = report.memory.peak_bytes
    needed = fit.needed(peak) if fit is not None else peak
    fits = needed <= budget
    share = needed / budget
    width = min(share, 1.0) * 100
    peak_width = min(peak / budget, 1.0) * 100
    verdict = "fits" if fits else "does not fit"
    allowance = (f" (peak {format_bytes(peak)} + reserve and fragmentation allowance)"
                 if fit is not None and needed != peak else "")
    text = (f"Fits? {verdict}: needs {format_bytes(needed)}{allowance} of a {format_bytes(budget)} budget "
            f"({share:.0%})")
    batch = ""
    if fit is not None:
        batch = (f'<div class="tc-fit-batch">Largest batch within the budget: <b>{format_int(fit.batch_size)}</b>'
                 f"{' (stopped at the search limit)' if fit.limit_reached else ''}"
                 f"{f' (not even batch {fit.smallest} fits)' if not fit.batch_size else ''}"
                 f"{_FROM_TWO if fit.smallest > 1 else ''}"
                 f" &middot; peak there {format_bytes(fit.peak_bytes)}</div>")
    cls = "tc-fit-ok" if fits else "tc-fit-over"
    return (f'<section class="tc-fit {cls}" id="tc-fit"><div class="tc-fit-text">{html.escape(text)}</div>'
            f'<div class="tc-fit-track"><div class="tc-fit-need" style="width:{width:.2f}%"></div>'
            f'<div class="tc-fit-peak" style="width:{peak_width:.2f}%"></div></div>{batch}</section>')


def _table_rows(report: CostReport) -> list[Row]:
    count = sum(1 for _ in report.root.walk())
    return rows(report, EVERY_LEVEL, fold=count > TABLE_FOLD_ABOVE)


def _table(report: CostReport, table_rows: list[Row], table_id: str = "tc-table") -> str:
    memory = report.memory is not None
    headers = ["Layer (type)", "Output shape", *(h.replace("\n", " ") for h in count_headers(report))]
    if memory:
        headers += ["Activations", "Peak mem"]
    head = "".join(f'<th data-col="{i}" class="{"tc-l" if i < 2 else "tc-r"}" title="click to sort">'
                   f"{html.escape(h)}</th>" for i, h in enumerate(headers))
    body: list[str] = []
    parents = [""]  # the module names down the path to the current row, by depth
    for i, row in enumerate(table_rows):
        name = row.name if row.depth else ""
        del parents[row.depth:]
        parent = parents[-1] if parents else ""
        parents.append(name)
        label = (name.replace(parent + ".", "") if parent else name) if row.depth else row.type
        kind = f" <span class=tc-type>({html.escape(row.type)})</span>" if row.depth else ""
        cells = [f'<td class="tc-l tc-name" style="padding-left:{0.4 + 1.1 * row.depth:.1f}em" '
                 f'title="{html.escape(name or row.type)}">{html.escape(label)}{kind}{html.escape(_calls(row))}</td>',

                 f'<td class="tc-l tc-shape">{html.escape(row.output_shape)}</td>']
        cells += [f'<td class="tc-r">{html.escape(c)}</td>' for c in count_cells(row, report)]
        if memory:
            cells += [f'<td class="tc-r">{format_bytes(row.activation_bytes)}</td>',
                      f'<td class="tc-r">{format_bytes(row.peak_memory)}</td>']
        folded = ' class="tc-folded"' if row.folded > 1 else ""
        body.append(f'<tr data-i="{i}" data-depth="{row.depth}" data-name="{html.escape(name)}"{folded}>'
                    f'{"".join(cells)}</tr>')
    return (f'<table class="tc-table" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _calls(row: Row) -> str:
    if row.calls <= 1 or row.folded != 1:
        return ""
    return f" x{row.calls}, shapes differ" if row.shapes_differ else f" x{row.calls}"


def _metrics(report: CostReport) -> list[list[str]]:
    out = [["flops", "FLOPs" if not report.phases else "Fwd FLOPs", "count"], ["params", "Params", "count"]]
    if report.memory is not None:
        out.append(["memory", "Memory", "bytes"])
    if report.phases:
        out.insert(0, ["step", "Step FLOPs", "count"])
    return out


def _model_data(report: CostReport, title: str) -> dict[str, Any]:
    return {"title": title, "model_type": report.model_type, "tree": icicle_data(report),
            "metrics": _metrics(report), "totals": {"flops": report.flops, "params": report.params,
                                                    "step": report.step_flops,
                                                    "memory": report.param_bytes + report.buffer_bytes
                                                    + report.activation_bytes}}


def _run_line(report: CostReport) -> str:
    m = report.memory
    how = f", memory from a {m.method} run for {m.target}" if m is not None and m.method else ""
    return (f"{report.mode} mode &middot; {html.escape(report.dtype)} &middot; {html.escape(report.device)}{how} "
            f"&middot; torchcost {html.escape(report.torchcost_version)}, torch {html.escape(report.torch_version)}")


def _icicle_section(prefix: str, heading: str) -> str:
    return (f'<section class="tc-panel tc-icicle" id="{prefix}icicle" data-model="{prefix}">'
            f'<div class="tc-panel-head"><h2>{html.escape(heading)}</h2>'
            '<div class="tc-switch" role="group"></div></div>'
            '<div class="tc-crumbs"></div><div class="tc-icicle-host"></div>'
            '<p class="tc-note">Width: the module\'s share of its parent. Click a block to zoom into it, the top bar '
            "(or a name above) to zoom out; hover for the numbers. Colour: the layer type.</p></section>")


def render_html(report: CostReport, *, description: str = "", budget: int | None = None,
                fit: BatchFit | None = None) -> str:
    """The whole page for one report. ``budget`` (bytes) draws the headline's fits bar; ``fit``, the answer of
    --memory-budget, adds the largest batch (and its budget is used)."""
    title = description or report.model_type
    data: dict[str, Any] = {"kind": "report", "models": [_model_data(report, title)], "train": bool(report.phases)}
    parts = [f'<header class="tc-header"><h1>{html.escape(report.model_type)}</h1>'
             f'<div class="tc-sub">{html.escape(description)}</div><div class="tc-run">{_run_line(report)}</div>'
             "</header>", _headline(report), _fit_bar(report, budget, fit), _icicle_section("m0-", "Module tree")]
    if report.memory is not None and len(report.memory.timeline):
        data["timeline"] = timeline_data(report.memory)
        parts.append(
            '<section class="tc-panel" id="tc-memory"><div class="tc-panel-head"><h2>Memory over the run</h2></div>'
            '<div class="tc-mem-row"><div class="tc-timeline-host" id="tc-timeline"></div>'
            '<div class="tc-peakbar-host" id="tc-peakbar"></div></div>'
            '<p class="tc-note" id="tc-timeline-note"></p></section>')
    table_rows = _table_rows(report)
    folded = any(r.folded > 1 for r in table_rows)
    parts.append(
        '<section class="tc-panel" id="tc-modules"><div class="tc-panel-head"><h2>Modules</h2>'
        '<input class="tc-filter" id="tc-filter" type="search" placeholder="filter by name or type" '
        'aria-label="filter modules"><span class="tc-count" id="tc-count"></span></div>'
        f'<div class="tc-table-wrap">{_table(report, table_rows)}</div>'
        f'<p class="tc-note">Click a column to sort (again: the other way; Layer: back to the tree order).'
        f'{" Identical repeated blocks are folded into one row." if folded else ""}</p></section>')
    footer = footer_lines(report)
    if fit is not None:
        from torchcost.render.fit import fit_lines

        footer += fit_lines(fit)
    parts.append(f'<section class="tc-panel"><details><summary>Totals (the text table\'s footer)</summary>'
                 f'<pre class="tc-footer">{html.escape(chr(10).join(footer))}</pre></details></section>')
    body = '<main class="tc-page">' + "\n".join(p for p in parts if p) + "</main>"
    return _page(f"torchcost: {title}", body, data)


def render_compare_html(comparison: Comparison) -> str:
    """The models side by side: a headline per model, every metric with a bar per model and its ratio to the
    first, and each model's icicle."""
    from torchcost.render.compare import format_ratio

    c = comparison
    heads = []
    for name, spec, report in zip(c.names, c.specs, c.reports):
        heads.append(f'<div class="tc-model"><h2>{html.escape(name)}</h2><div class="tc-sub">'
                     f"{html.escape(spec)} &middot; {html.escape(report.model_type)}</div>"
                     f'<div class="tc-run">{_run_line(report)}</div>{_headline(report)}</div>')
    header = ["Metric", *c.names, *(f"{n} / {c.names[0]}" for n in c.names[1:])]
    body = []
    for row in c.rows:
        top = max(row.values) or 1
        cells = [f'<td class="tc-l">{html.escape(row.label)}</td>']
        for v in row.values:
            text = format_bytes(v) if row.unit == "bytes" else format_count(v)
            cells.append(f'<td class="tc-r tc-barcell"><div class="tc-minibar" style="width:{100 * v / top:.1f}%">'
                         f"</div><span>{html.escape(text)}</span></td>")
        for i, r in enumerate(row.ratios[1:], start=1):
            cls = "tc-up" if r is not None and r > 1 else "tc-down" if r is not None and r < 1 else ""
            cells.append(f'<td class="tc-r tc-ratio {cls}" data-model="{i}">{html.escape(format_ratio(r))}</td>')
        body.append(f'<tr data-metric="{html.escape(row.metric)}">{"".join(cells)}</tr>')
    table = ('<table class="tc-table tc-compare" id="tc-compare"><thead><tr>'
             + "".join(f'<th class="{"tc-l" if i == 0 else "tc-r"}">{html.escape(h)}</th>'
                       for i, h in enumerate(header))
             + f'</tr></thead><tbody>{"".join(body)}</tbody></table>')
    models = [_model_data(r, n) for n, r in zip(c.names, c.reports)]
    icicles = "".join(_icicle_section(f"m{i}-", f"{name}: module tree") for i, name in enumerate(c.names))
    page = (f'<main class="tc-page"><header class="tc-header"><h1>Comparison</h1><div class="tc-sub">'
            f"{html.escape(' vs '.join(c.names))}</div></header>"
            f'<section class="tc-models" style="grid-template-columns:repeat({len(c.names)},1fr)">{"".join(heads)}'
            f'</section><section class="tc-panel"><div class="tc-panel-head"><h2>Side by side</h2></div>{table}'
            f'<p class="tc-note">Ratios: each model divided by {html.escape(c.names[0])}.</p></section>{icicles}'
            "</main>")
    return _page("torchcost: " + " vs ".join(c.names), page, {"kind": "compare", "models": models, "train": False})


# -- notebooks -------------------------------------------------------------------------------------------------

_NB_STYLE = (
    "<style>.tcnb{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;color:#1f2933}"
    ".tcnb .h{display:flex;gap:18px;flex-wrap:wrap;margin:4px 0 8px}.tcnb .h div{min-width:90px}"
    ".tcnb .h b{display:block;font-size:18px}.tcnb .h span{color:#616e7c;font-size:11px;text-transform:uppercase}"
    ".tcnb table{border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums}"
    ".tcnb td,.tcnb th{padding:2px 8px;border-bottom:1px solid #e4e7eb;white-space:nowrap}"
    ".tcnb th{text-align:right;background:#f5f7fa;position:sticky;top:0}.tcnb td{text-align:right}"
    ".tcnb td.l,.tcnb th.l{text-align:left}.tcnb .t{color:#7b8794}"
    ".tcnb .w{max-height:420px;overflow:auto;border:1px solid #e4e7eb;margin-top:6px}</style>"
)


def _nb_chart(report: CostReport, top: int = 8) -> str:
    """A static SVG: the ``top`` leaf layers by FLOPs (step FLOPs in a training step), a bar each."""
    leaves = [m for m in report.root.walk() if m.is_leaf and m is not report.root]
    key = _step_of if report.phases else (lambda m: m.flops)
    leaves.sort(key=lambda m: (-key(m), m.name))
    leaves = [m for m in leaves[:top] if key(m) > 0]
    if not leaves:
        return ""
    total = (report.step_flops if report.phases else report.flops) or 1
    biggest = key(leaves[0]) or 1
    bar, label_w, height = 260, 230, 18
    parts = []
    for i, m in enumerate(leaves):
        y = i * height
        w = bar * key(m) / biggest
        name = m.name if len(m.name) <= 32 else "…" + m.name[-31:]
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{html.escape(name)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{height - 6}" fill="#4c78a8" rx="2">'
                     f"<title>{html.escape(m.name)} ({html.escape(m.type)}): {format_count(key(m))} FLOPs</title>"
                     f'</rect><text x="{label_w + w + 5:.1f}" y="{y + 13}">{format_count(key(m))} '
                     f"({100 * key(m) / total:.1f}%)</text>")
    what = "step FLOPs" if report.phases else "FLOPs"
    h = height * len(leaves) + 22
    return (f'<div><b>Most expensive layers by {what}</b><br><svg width="{label_w + bar + 120}" height="{h}" '
            f'font-size="11" font-family="system-ui,sans-serif" fill="#1f2933">{"".join(parts)}</svg></div>')


def report_repr_html(report: CostReport) -> str:
    """The notebook display: the headline, a bar chart of the most expensive layers and the table at its default
    depth (scrollable); static HTML and SVG, no script."""
    heads = [("Params", format_count(report.params)), ("MACs", format_count(report.macs)),
             ("FLOPs", format_count(report.flops))]
    if report.phases:
        heads.append(("Step FLOPs", format_count(report.step_flops)))
    if report.memory is not None:
        heads.append(("Peak memory", format_bytes(report.memory.peak_bytes)))
    headline = "".join(f"<div><span>{html.escape(k)}</span><b>{html.escape(v)}</b></div>" for k, v in heads)
    table_rows = rows(report, None, True)
    headers = ["Layer (type)", "Output shape", *(h.replace("\n", " ") for h in count_headers(report))]
    head = "".join(f'<th class="{"l" if i < 2 else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in table_rows:
        label = html.escape(row.name if row.depth else row.type)
        kind = f' <span class="t">({html.escape(row.type)})</span>' if row.depth else ""
        cells = [f'<td class="l" style="padding-left:{4 + 12 * row.depth}px">{label}{kind}</td>',
                 f'<td class="l">{html.escape(row.output_shape)}</td>']
        cells += [f"<td>{html.escape(c)}</td>" for c in count_cells(row, report)]
        body.append(f"<tr>{''.join(cells)}</tr>")
    table = f'<div class="w"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    title = (f"<b>{html.escape(report.model_type)}</b> <span class=t>{report.mode} mode, "
             f"{html.escape(report.dtype)}, {html.escape(report.device)}</span>")
    return (f'{_NB_STYLE}<div class="tcnb">{title}<div class="h">{headline}</div>{_nb_chart(report)}{table}'
            "</div>")


_FRAME_SKIP = ("children", "ops", "uncounted")


def report_frame(report: CostReport) -> Any:
    """One row per module, in pre-order, indexed by name ("" the model): every ModuleCost field but the children
    and op lists, shapes as text, ``parent`` the parent's name. Needs pandas (``pip install 'torchcost[notebook]'``)."""
    try:
        import pandas as pd
    except ImportError:
        raise InputError("to_pandas() needs pandas, which is not installed: pip install pandas "
                         "(or pip install 'torchcost[notebook]')") from None
    names = [f.name for f in fields(ModuleCost) if f.name not in _FRAME_SKIP]
    records: list[dict[str, Any]] = []
    parents: dict[str, str] = {}
    for m in report.root.walk():
        for c in m.children:
            parents[c.name] = m.name
        record: dict[str, Any] = {}
        for name in names:
            value = getattr(m, name)
            record[name] = describe(value) if name in ("input_shape", "output_shape") else value
        record["parent"] = parents.get(m.name) if m.name else None
        record["step_flops"] = _step_of(m)
        records.append(record)
    return pd.DataFrame.from_records(records, columns=[*names, "step_flops", "parent"]).set_index("name")

