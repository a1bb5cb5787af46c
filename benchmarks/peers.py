"""One adapter per tool: run it on a model, normalise what it reports to parameters and MACs, and check what it left
behind on the model and in torch.

Units (what each tool reports, and how it is normalised to MACs, one multiply-accumulate = 1):
  torchcost            MACs (``CostReport.macs``), as is
  FlopCounterMode      FLOPs at 2 per MAC of conv/matmul/attention ops -> divided by 2
  torchinfo            "Mult-Adds" (``total_mult_adds``) -> as is
  torchsummary         parameters only (parsed from its printed "Total params")
  thop                 "MACs" (first value of ``profile``) -> as is
  fvcore               "flops" counting one per fused multiply-add -> MACs as is
  ptflops (pytorch)    "MACs" per sample: the total divided by len(first input) -> multiplied back by that
  ptflops (aten)       "MACs" -> as is
  calflops             returns (flops, macs, params) -> its macs as is
  torchprofile         MACs -> as is
  torchscan            totals["macs"] (its "MACs") -> as is

Every tool runs on its own deep copy of the pristine model, under ``torch.no_grad()``, with stdout, stderr, warnings
and logging silenced. What it changed on that copy (modes, hooks, attributes, buffers, values) and in torch (patched
functions, global hooks) is recorded as its side effects; global patches are undone before the next tool runs.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import inspect
import io
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmarks.models import Built

__all__ = ["PEERS", "TOOLS", "Measured", "Outcome", "Tool", "run_tool"]


@dataclass
class Measured:
    params: int | None = None
    macs: int | None = None  # normalised to MACs
    raw: float | None = None  # the MAC-like figure as the tool reported it
    self_macs: dict[str, int] | None = None  # module name -> MACs the tool put on that module itself (not children)
    per_op: dict[str, int] | None = None  # op name -> MACs, where the tool counts by op
    unsupported: dict[str, int] | None = None  # ops the tool says it skipped
    notes: list[str] = field(default_factory=list)
    op_costs: list[tuple[str, int, int]] | None = None  # torchcost only: (op, MACs, other FLOPs) for the whole model


@dataclass
class Outcome:
    tool: str
    status: str  # ok | missing | unsupported | crashed
    measured: Measured | None = None
    error: str = ""
    side_effects: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class Tool:
    name: str
    dist: str  # what pip installs ("" for torch itself)
    module: str  # what is imported
    unit: str
    counts_macs: bool = True
    counts_params: bool = True
    run: Callable[[nn.Module, Built], Measured] = lambda model, built: Measured()
    supports: Callable[[Built], str | None] = lambda built: None

    def missing(self) -> str | None:
        try:
            found = importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            found = False
        return None if found else f"not installed (pip install {self.dist})"


# -- helpers --------------------------------------------------------------------------------------------------------

FUNCTIONAL = "(functional calls)"  # self_macs key: what a tool counted outside any module

def module_names(model: nn.Module) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name)
    return names


def self_from_totals(model: nn.Module, totals: dict[str, float]) -> dict[str, int]:
    """Per-module totals that include the children -> what each module did itself. A child the tool has no entry
    for (a ModuleList, never called itself) is looked through to its own children."""

    def covered(name: str, module: nn.Module) -> float:
        total = 0.0
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            total += totals[full] if full in totals else covered(full, child)
        return total

    out: dict[str, int] = {}
    for name, module in model.named_modules():
        if name in totals:
            own = totals[name] - covered(name, module)
            if own:
                out[name] = int(own)
    return out


def _single_tensor(built: Built) -> torch.Tensor | None:
    if len(built.args) == 1 and not built.kwargs and isinstance(built.args[0], torch.Tensor):
        return built.args[0]
    return None


def _float_tensors_only(built: Built) -> str | None:
    x = _single_tensor(built)
    if x is None or not x.is_floating_point():
        return "needs one float tensor input given by its size (makes its own torch.rand input)"
    return None


class _Bound(nn.Module):
    """Calls the model with its keyword inputs, for tools that pass only positional ones. No parameters of its own;
    the wrapped model is child ``model``, so tool-side names are stripped of ``model.``."""

    def __init__(self, model: nn.Module, kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self._kw = kwargs

    def forward(self, *args: Any) -> Any:
        return self.model(*args, **self._kw)


def _positional(model: nn.Module, built: Built) -> tuple[nn.Module, tuple[Any, ...], str]:
    if not built.kwargs:
        return model, built.args, ""
    return _Bound(model, built.kwargs), built.args, "model."


def _strip(d: dict[str, int], prefix: str) -> dict[str, int]:
    if not prefix:
        return d
    out: dict[str, int] = {}
    for k, v in d.items():
        if k == prefix.rstrip("."):
            k = ""
        elif k.startswith(prefix):
            k = k[len(prefix):]
        out[k] = out.get(k, 0) + v
    return out


# -- the tools ------------------------------------------------------------------------------------------------------

def _torchcost(model: nn.Module, built: Built) -> Measured:
    import torchcost

    r = torchcost.analyze(model, *built.args, kwargs=built.kwargs or None)
    self_macs = {m.name: m.self_macs for m in r.root.walk() if m.self_macs}
    per_op = {o.op: o.macs for o in r.ops if o.macs}
    notes = [f"uncounted: {', '.join(f'{o.op} x{o.calls}' for o in r.uncounted)}"] if r.uncounted else []
    return Measured(r.params, r.macs, r.macs, self_macs, per_op, {o.op: o.calls for o in r.uncounted}, notes,
                    [(o.op, o.macs, o.flops - 2 * o.macs) for o in r.ops])


def _flop_counter_mode(model: nn.Module, built: Built) -> Measured:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(*built.args, **built.kwargs)
    flops = counter.get_total_flops()
    counts = counter.get_flop_counts()
    root = next((k for k in counts if k != "Global" and "." not in k), None)
    totals: dict[str, float] = {}
    for key, ops in counts.items():
        if key == "Global" or root is None:
            continue
        name = "" if key == root else key[len(root) + 1:] if key.startswith(root + ".") else None
        if name is not None:
            totals[name] = sum(ops.values()) / 2
    per_op = {f"aten::{str(op).split('.')[-1]}": int(v) // 2 for op, v in counts.get("Global", {}).items()}
    return Measured(None, flops // 2, flops, self_from_totals(model, totals), per_op)


def _torchinfo(model: nn.Module, built: Built) -> Measured:
    import torchinfo

    # input_data: a list of positional inputs, or a dict of keyword inputs (torchinfo calls model(**x)); with neither
    # it runs no forward pass at all and reports 0 MACs.
    if built.args:
        stats = torchinfo.summary(model, input_data=list(built.args), verbose=0, **built.kwargs)
    else:
        stats = torchinfo.summary(model, input_data=dict(built.kwargs), verbose=0)
    names = module_names(model)
    self_macs: dict[str, int] = {}
    for info in stats.summary_list:
        if info.is_leaf_layer and info.macs:
            name = names.get(id(info.module), info.var_name)
            self_macs[name] = self_macs.get(name, 0) + int(info.macs)
    return Measured(int(stats.total_params), int(stats.total_mult_adds), float(stats.total_mult_adds), self_macs)


def _torchsummary(model: nn.Module, built: Built) -> Measured:
    import torchsummary

    x = _single_tensor(built)
    assert x is not None
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        torchsummary.summary(model, tuple(x.shape[1:]), batch_size=int(x.shape[0]), device="cpu")
    found = re.search(r"Total params: ([\d,]+)", buf.getvalue())
    if found is None:
        raise RuntimeError("no 'Total params' line in its output")
    return Measured(int(found.group(1).replace(",", "")), None)


def _thop(model: nn.Module, built: Built) -> Measured:
    import thop

    target, args, prefix = _positional(model, built)
    macs, params, layers = thop.profile(target, inputs=args, verbose=False, ret_layer_info=True)
    totals: dict[str, float] = {"": float(macs)}

    def walk(tree: dict[str, Any], prefix_: str) -> None:
        for child, (ops, _params, sub) in tree.items():
            name = f"{prefix_}.{child}" if prefix_ else child
            totals[name] = float(ops)
            walk(sub, name)

    walk(layers, "")
    self_macs = _strip(self_from_totals(target, totals), prefix)
    # its per-layer tree holds module rules only; what the total has beyond them is its count of functional calls
    # (F.*, torch.*, @), made outside any module rule
    functional = self_macs.pop("", 0)
    if functional:
        self_macs[FUNCTIONAL] = functional
    return Measured(int(params), int(macs), float(macs), self_macs)


def _fvcore(model: nn.Module, built: Built) -> Measured:
    from fvcore.nn import FlopCountAnalysis, parameter_count

    target, args, prefix = _positional(model, built)
    analysis = FlopCountAnalysis(target, args)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    total = int(analysis.total())
    self_macs = _strip(self_from_totals(target, {k: float(v) for k, v in analysis.by_module().items()}), prefix)
    per_op = {str(k): int(v) for k, v in analysis.by_operator().items() if v}
    unsupported = {str(k): int(v) for k, v in analysis.unsupported_ops().items()}
    return Measured(int(parameter_count(model)[""]), total, float(total), self_macs, per_op, unsupported)


def _ptflops_constructor(model: nn.Module, built: Built) -> tuple[Callable[[tuple[int, ...]], Any], int]:
    """ptflops calls ``model(batch)``, or ``model(**batch)`` for a dict; several positional inputs are passed as a
    dict by their names in forward's signature. Its pytorch backend divides module counts by len(args[0])."""
    if not built.kwargs and len(built.args) == 1:
        arg = built.args[0]
        return (lambda _res: arg), (len(arg) if hasattr(arg, "__len__") else 1)
    if built.args:
        named = dict(inspect.signature(model.forward).bind(*built.args, **built.kwargs).arguments)
        return (lambda _res: named), 1
    return (lambda _res: dict(built.kwargs)), 1


_PTFLOPS_LINE = re.compile(r"^(?P<indent>\s*)\((?P<name>[^)]+)\): (?:\d+ x )?(?P<type>[\w.]+)\((?P<rest>.*)$")
_PTFLOPS_MACS = re.compile(r"(?P<macs>[-\d.e+]+) Mac, ")


def _ptflops_layers(text: str, batch: int) -> dict[str, float]:
    """Module name -> MACs (children included, as ptflops prints them) from print_per_layer_stat's model repr.
    torch's repr folds identical consecutive children into one entry, "(0-1): 2 x BertLayer(": its figures (those
    of one of them) go to each."""
    totals: dict[str, float] = {}
    stack: list[tuple[int, list[str]]] = []
    pending: list[str] | None = None

    def names_of(parents: list[str], label: str) -> list[str]:
        first, dash, last = label.partition("-")
        labels = ([str(i) for i in range(int(first), int(last) + 1)] if dash and first.isdigit() and last.isdigit()
                  else [label])
        return [f"{p}.{x}" if p else x for p in parents for x in labels]

    for line in text.splitlines():
        found = _PTFLOPS_LINE.match(line)
        if found:
            depth = len(found["indent"])
            while stack and stack[-1][0] >= depth:
                stack.pop()
            names = names_of(stack[-1][1] if stack else [""], found["name"])
            stack.append((depth, names))
            macs = _PTFLOPS_MACS.search(found["rest"])
            if macs:
                totals.update(dict.fromkeys(names, float(macs["macs"]) * batch))
                pending = None
            else:
                pending = names  # a container: its figures are on the next line
            continue
        macs = _PTFLOPS_MACS.search(line)
        if macs and (pending is not None or not totals):
            totals.update(dict.fromkeys(pending or [""], float(macs["macs"]) * batch))
            pending = None
    return totals


_PTFLOPS_OP = re.compile(r"^aten\.(?P<op>\w+): (?P<macs>[-\d.e+]+) Mac$")


def _ptflops_ops(text: str) -> dict[str, int]:
    """op -> MACs from the aten backend's per-module print ("Module: Global" block)."""
    out: dict[str, int] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("Module: "):
            inside = line.strip() == "Module:  Global"
            continue
        found = _PTFLOPS_OP.match(line.strip())
        if inside and found:
            out[f"aten::{found['op']}"] = int(float(found["macs"]))
    return out


def _ptflops(backend: str) -> Callable[[nn.Module, Built], Measured]:
    def run(model: nn.Module, built: Built) -> Measured:
        from ptflops import get_model_complexity_info

        constructor, batch = _ptflops_constructor(model, built)
        out = io.StringIO()
        # flops_units="Mac" makes its per-layer print exact (no G/M rounding); the totals are returned as numbers.
        macs, params = get_model_complexity_info(model, (1,), input_constructor=constructor, as_strings=False,
                                                 backend=backend, print_per_layer_stat=True, verbose=False,
                                                 ost=out, flops_units="Mac")
        if macs is None:
            raise RuntimeError("ptflops returned None (it caught an exception and printed it)")
        if backend != "pytorch":
            measured = Measured(int(params), int(macs), float(macs))
        else:
            from ptflops.pytorch_engine import is_supported_instance

            # its total is (module counts / len(first input)) + (counts of the F.* / torch.* calls it patches, not
            # divided): the module part, read from the per-layer print, is multiplied back by that batch
            layers = _ptflops_layers(out.getvalue(), 1)
            module_part = layers.get("", 0.0)
            functional = float(macs) - module_part
            total = round(module_part * batch + functional)
            notes = [f"module counts per sample x{batch}"] if batch != 1 else []
            measured = Measured(int(params), total, float(macs), notes=notes)
            # a module with a rule of its own (timm's Attention, nn.MultiheadAttention) stands for its whole subtree:
            # its children's figures are printed but not added to the total
            for name, module in model.named_modules():
                if name in layers and is_supported_instance(module) and any(True for _ in module.children()):
                    for child_name, _ in module.named_modules():
                        if child_name:
                            layers[f"{name}.{child_name}" if name else child_name] = 0.0
            measured.self_macs = self_from_totals(model, {k: v * batch for k, v in layers.items()})
            if round(functional):
                measured.self_macs[FUNCTIONAL] = round(functional)
        if backend != "pytorch":
            measured.per_op = _ptflops_ops(out.getvalue())
        return measured

    return run


def _ptflops_supports(built: Built) -> str | None:
    try:
        _ptflops_constructor(built.model, built)
    except (TypeError, ValueError):
        return "takes one positional input or keyword inputs; these could not be bound to names"
    return None


def _calflops(model: nn.Module, built: Built) -> Measured:
    from calflops import calculate_flops

    flops, macs, params = calculate_flops(model, args=list(built.args), kwargs=dict(built.kwargs),
                                          print_results=False, print_detailed=False, output_as_string=False)
    return Measured(int(params), int(macs), float(macs), notes=[f"its flops {int(flops)}"])


def _torchprofile(model: nn.Module, built: Built) -> Measured:
    from torchprofile import profile_macs

    target, args, _prefix = _positional(model, built)  # it refuses keyword inputs
    per_node = profile_macs(target, args, None, reduction=None)
    assert isinstance(per_node, dict)
    per_op: dict[str, int] = {}
    for node, macs in per_node.items():
        per_op[str(node.operator)] = per_op.get(str(node.operator), 0) + int(macs)
    total = sum(per_op.values())
    return Measured(None, total, float(total), per_op={k: v for k, v in per_op.items() if v})


def _torchscan(model: nn.Module, built: Built) -> Measured:
    import torchscan

    report = torchscan.crawl_module(model, args=built.args, kwargs=built.kwargs)
    totals = report["totals"]
    macs_metric = totals["macs"]
    value = macs_metric["value"]
    notes = []
    if value is None:
        value = macs_metric["known_value"]
        notes.append(f"macs status {macs_metric['status']}: known part only")
    self_macs: dict[str, int] = {}
    for layer in report["layers"]:
        metric = layer["metrics"].get("macs")
        if metric and metric.get("value"):
            path = layer["path"]
            self_macs[path] = self_macs.get(path, 0) + int(metric["value"])
    params = totals["parameters"]["value"]
    return Measured(int(params) if params is not None else None, int(value) if value is not None else None,
                    float(value) if value is not None else None, self_macs, notes=notes)


TORCHCOST = Tool("torchcost", "torchcost", "torchcost", "MACs", run=_torchcost)
PEERS: list[Tool] = [
    Tool("FlopCounterMode", "", "torch.utils.flop_counter", "FLOPs, 2 per MAC (/2)", counts_params=False,
         run=_flop_counter_mode),
    Tool("torchinfo", "torchinfo", "torchinfo", "Mult-Adds", run=_torchinfo),
    Tool("torchsummary", "torchsummary", "torchsummary", "params only", counts_macs=False, run=_torchsummary,
         supports=_float_tensors_only),
    Tool("thop", "ultralytics-thop", "thop", "MACs", run=_thop),
    Tool("fvcore", "fvcore", "fvcore", "flops = MACs (1 per FMA)", run=_fvcore),
    Tool("ptflops-pytorch", "ptflops", "ptflops", "MACs per sample (x batch)", run=_ptflops("pytorch"),
         supports=_ptflops_supports),
    Tool("ptflops-aten", "ptflops", "ptflops", "MACs", run=_ptflops("aten"), supports=_ptflops_supports),
    Tool("calflops", "calflops", "calflops", "MACs (its macs value)", run=_calflops),
    Tool("torchprofile", "torchprofile", "torchprofile", "MACs", counts_params=False, run=_torchprofile),
    Tool("torchscan", "torchscan", "torchscan", "MACs", run=_torchscan),
]
TOOLS: list[Tool] = [TORCHCOST, *PEERS]


# -- side effects ---------------------------------------------------------------------------------------------------

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_load_state_dict_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks", "_global_module_registration_hooks",
                 "_global_parameter_registration_hooks", "_global_buffer_registration_hooks")


@dataclass
class _ModuleSnap:
    training: bool
    attrs: frozenset[str]
    params: tuple[str, ...]
    buffers: tuple[str, ...]
    hooks: tuple[int, ...]
    values: dict[str, torch.Tensor]
    grad: tuple[bool, ...]


def _snap_model(model: nn.Module) -> dict[str, _ModuleSnap]:
    out = {}
    for name, m in model.named_modules():
        values = {k: v.detach().clone() for k, v in m._buffers.items() if v is not None and v.device.type != "meta"}
        out[name] = _ModuleSnap(m.training, frozenset(m.__dict__), tuple(m._parameters), tuple(m._buffers),
                                tuple(len(getattr(m, h, {})) for h in _HOOK_DICTS), values,
                                tuple(p.requires_grad for p in m._parameters.values() if p is not None))
    return out


def _model_changes(model: nn.Module, before: dict[str, _ModuleSnap]) -> list[str]:
    """What differs from the snapshot, grouped: 'attributes added: __flops__, __macs__ (280 modules)'."""
    found: dict[str, tuple[set[str], set[str]]] = {}  # kind -> (details, module names)

    def note(kind: str, detail: str, name: str) -> None:
        details, names = found.setdefault(kind, (set(), set()))
        if detail:
            details.add(detail)
        names.add(name or "<root>")

    for name, m in model.named_modules():
        b = before.get(name)
        if b is None:
            note("modules added", "", name)
            continue
        if m.training != b.training:
            note("mode changed", "eval->train" if m.training else "train->eval", name)
        for a in set(m.__dict__) - b.attrs:
            note("attributes added", a, name)
        for a in b.attrs - set(m.__dict__):
            note("attributes removed", a, name)
        for p in set(m._parameters) ^ set(b.params):
            note("parameters added/removed", p, name)
        for buf in set(m._buffers) - set(b.buffers):
            note("buffers added", buf, name)
        hooks = tuple(len(getattr(m, h, {})) for h in _HOOK_DICTS)
        for h, n_now, n_before in zip(_HOOK_DICTS, hooks, b.hooks):
            if n_now > n_before:
                note("hooks left", h.strip("_"), name)
        for k, v in b.values.items():
            now = m._buffers.get(k)
            if now is not None and now.shape == v.shape and not torch.equal(now, v):
                note("buffer values changed", k, name)
        grads = tuple(p.requires_grad for p in m._parameters.values() if p is not None)
        if grads != b.grad:
            note("requires_grad changed", "", name)
    out = []
    for kind, (details, names) in found.items():
        shown = sorted(details)
        what = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
        where = f"{len(names)} modules" if len(names) > 2 else ", ".join(sorted(names))
        out.append(f"{kind}: {what} ({where})" if what else f"{kind} ({where})")
    return out


def _function_tables() -> list[tuple[str, Any]]:
    import torch.nn.functional as F

    return [("torch", torch), ("torch.nn.functional", F), ("torch.Tensor", torch.Tensor),
            ("torch._C._nn", torch._C._nn), ("torch._C._VariableFunctions", torch._C._VariableFunctions)]


def _snap_globals() -> dict[tuple[str, str], Any]:
    from torch.nn.modules import module as module_mod

    out: dict[tuple[str, str], Any] = {}
    for label, table in _function_tables():
        for key in dir(table):
            value = getattr(table, key, None)
            if callable(value):
                out[(label, key)] = value
    for h in _GLOBAL_HOOKS:
        out[("hooks", h)] = len(getattr(module_mod, h, {}))
    out[("mode", "grad")] = torch.is_grad_enabled()
    return out


def _global_changes(before: dict[tuple[str, str], Any]) -> list[str]:
    """What changed in torch; patched functions are put back so the next tool starts clean."""
    from torch.nn.modules import module as module_mod

    after = _snap_globals()
    patched = []
    for (label, key), value in before.items():
        if label in ("hooks", "mode"):
            continue
        table = dict(_function_tables())[label]
        if after.get((label, key)) is not value and after.get((label, key)) != value:
            patched.append(f"{label}.{key}")
            with contextlib.suppress(Exception):
                setattr(table, key, value)
    changes = []
    if patched:
        shown = ", ".join(patched[:4]) + (f" and {len(patched) - 4} more" if len(patched) > 4 else "")
        changes.append(f"{len(patched)} torch functions left patched ({shown})")
    for h in _GLOBAL_HOOKS:
        n_before = before[("hooks", h)]
        hooks = getattr(module_mod, h, {})
        if len(hooks) > n_before:
            changes.append(f"global {h.strip('_')} left ({len(hooks) - n_before})")
            for k in list(hooks)[n_before:]:
                hooks.pop(k, None)
    if after[("mode", "grad")] != before[("mode", "grad")]:
        changes.append("grad mode changed")
        torch.set_grad_enabled(before[("mode", "grad")])
    return changes


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    sink = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:160]}"


def fresh(pristine: Built) -> Built:
    """A deep copy of the model and inputs, so a tool that modifies either cannot affect the next one."""
    return Built(copy.deepcopy(pristine.model), copy.deepcopy(pristine.args), copy.deepcopy(pristine.kwargs))


def run_tool(tool: Tool, pristine: Built, *, check: bool = True, copy_model: bool = True) -> Outcome:
    """Run one tool on a fresh copy of the model, never raising."""
    missing = tool.missing()
    if missing:
        return Outcome(tool.name, "missing", error=missing)
    reason = tool.supports(pristine)
    if reason:
        return Outcome(tool.name, "unsupported", error=reason)
    built = fresh(pristine) if copy_model else pristine
    model_before = _snap_model(built.model) if check else {}
    globals_before = _snap_globals()
    start = time.perf_counter()
    try:
        with quiet(), torch.no_grad():
            measured = tool.run(built.model, built)
        status, error = "ok", ""
    except Exception as exc:
        measured, status, error = None, "crashed", _short(exc)
    seconds = time.perf_counter() - start
    effects = _global_changes(globals_before)
    if check:
        effects = _model_changes(built.model, model_before) + effects
    return Outcome(tool.name, status, measured, error, effects, seconds)


def import_tool(tool: Tool) -> None:
    """Import a tool's package ahead of timing (first imports are not the tool's speed)."""
    if tool.missing() is None:
        with quiet(), contextlib.suppress(Exception):
            importlib.import_module(tool.module)
