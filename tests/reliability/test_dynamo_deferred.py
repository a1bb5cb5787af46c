"""``torch._dynamo`` is not imported by a run that compiles nothing (run/dynamo.py), and the process is left as if
the stand-in had never been there: a later ``torch.compile`` works, a run that does need the package gets the real
one, and the counts are the same with and without it. Each check runs in a fresh process, where nothing has
imported ``torch._dynamo`` yet (this one's test session has: torchvision imports it)."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.conftest import python

_PREAMBLE = """
import json, sys
import torch
from torch import nn
import torchcost

def stack():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU())

def counts(r):
    return {"macs": r.macs, "flops": r.flops, "params": r.params, "peak": r.memory.peak_bytes if r.memory else None,
            "shapes": [str(m.output_shape) for m in r.modules]}

def dynamo():
    return sorted(k for k in sys.modules if k == "torch._dynamo" or k.startswith("torch._dynamo."))
"""


def _printed(script: str) -> dict[str, Any]:
    """Run ``script`` in a fresh process; it must exit 0, and its last line of output is the JSON read back."""
    run = python(script)
    assert run.rc == 0, run.err
    out: dict[str, Any] = json.loads(run.out.strip().splitlines()[-1])
    return out


_NOT_IMPORTED = _PREAMBLE + """
out = {}
meta = torchcost.analyze(stack(), input_size=(5, 4), device="meta")  # torch._refs' relu: torch._disable_dynamo
out["meta"] = counts(meta)
out["after_meta"] = dynamo()
sgd = torchcost.analyze(stack(), input_size=(5, 4), mode="train", optimizer="sgd")  # FakeTensorMode()
out["sgd"] = counts(sgd)
out["after_sgd"] = dynamo()
adamw = torchcost.analyze(stack(), input_size=(5, 4), mode="train")  # the warm-up's torch.tensor(0.0): fakeops.lifted
out["adamw"] = counts(adamw) | {"step_macs": adamw.step_macs}
out["after_adamw"] = dynamo()
out["dynamo_attr"] = "_dynamo" in vars(torch)
relu = torch._refs.nn.functional.relu
inner = getattr(relu, "__wrapped__", relu)
out["answer_left"] = "__dynamo_disable" in getattr(inner, "__dict__", {})
import torch._dynamo  # the real package, imported as it would be without torchcost
out["real_has_config"] = torch._dynamo.config is sys.modules["torch._dynamo.config"]
compiled = torch.compile(lambda x: torch.relu(x) + 1, backend="eager")
out["compiled"] = compiled(torch.tensor([-1.0, 2.0])).tolist()
out["meta_again"] = counts(torchcost.analyze(stack(), input_size=(5, 4), device="meta"))
out["sgd_again"] = counts(torchcost.analyze(stack(), input_size=(5, 4), mode="train", optimizer="sgd"))
adamw = torchcost.analyze(stack(), input_size=(5, 4), mode="train")
out["adamw_again"] = counts(adamw) | {"step_macs": adamw.step_macs}
print(json.dumps(out))
"""


def test_a_run_that_compiles_nothing_does_not_import_dynamo_and_counts_the_same() -> None:
    out = _printed(_NOT_IMPORTED)
    # only the settings module was imported, as FakeTensorMode() reads it; the package itself never was
    assert out["after_meta"] == []
    assert out["after_sgd"] == out["after_adamw"] == ["torch._dynamo.config"]
    assert out["dynamo_attr"] is False
    assert out["answer_left"] is False  # the stand-in's answer was taken back on the way out
    assert out["real_has_config"] is True
    assert out["compiled"] == [1.0, 3.0]  # relu(-1) + 1, relu(2) + 1
    # Linear(4, 3) then Linear(3, 2) on 5 rows: 5 * (4*3 + 3*2) = 90 MACs
    assert out["meta"]["macs"] == 5 * (4 * 3 + 3 * 2) == 90
    assert out["meta"]["params"] == (4 * 3 + 3) + (3 * 2 + 2) == 23
    # the same counts, shapes and memory once the real package is there
    assert out["meta_again"] == out["meta"]
    assert out["sgd_again"] == out["sgd"]
    assert out["adamw_again"] == out["adamw"]
    # forward 90 MACs; backward: the second Linear's input gradient 5*3*2 = 30, the weight gradients 5*4*3 + 5*3*2
    # = 90 (the first Linear's input needs no gradient)
    assert out["adamw"]["step_macs"] == 90 + 30 + 90


_NEEDS_IT = _PREAMBLE + """
class AsksDynamo(nn.Module):
    # a forward that asks the package something the stand-in does not answer itself
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        compiling = torch._dynamo.is_compiling()  # answered by the stand-in
        reset = torch._dynamo.reset  # the real package, imported here
        assert not compiling and callable(reset)
        return self.fc(x)

out = {}
r = torchcost.analyze(AsksDynamo(), input_size=(2, 4), device="meta")
out["macs"] = r.macs
out["real"] = type(sys.modules["torch._dynamo"]).__name__ == "module" and hasattr(torch._dynamo, "reset")
out["source_attr"] = hasattr(torch._dynamo, "config")
adam = torchcost.analyze(stack(), input_size=(5, 4), mode="train")  # default optimizer, after the import
out["adam_macs"] = [adam.macs, adam.step_macs]
compiled = torch.compile(lambda x: x * 2, backend="eager")
out["compiled"] = compiled(torch.tensor([1.5])).tolist()
print(json.dumps(out))
"""


def test_a_run_that_asks_dynamo_for_more_gets_the_real_package() -> None:
    out = _printed(_NEEDS_IT)
    assert out["macs"] == 2 * 4 * 3 == 24  # 2 rows x 4 x 3
    assert out["real"] is True
    assert out["source_attr"] is True
    assert out["compiled"] == [3.0]
    # a training step's forward 5*(12+6) = 90 MACs; backward: input gradient of the second Linear 5*3*2 = 30,
    # weight gradients 5*4*3 + 5*3*2 = 90 (no input gradient for the first: the input needs none): 90 + 30 + 90
    assert out["adam_macs"] == [90, 90 + 30 + 90]


_OTHER_THREAD = _PREAMBLE + """
import threading
RESULTS = []  # (the run is on a meta twin: a copy of the model, so not an attribute of it)

class CompilesElsewhere(nn.Module):
    # while the run goes on, another thread imports torch._dynamo and compiles: it gets the real package
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        def other():
            import torch._dynamo
            f = torch.compile(lambda t: t * 3, backend="eager")
            RESULTS.append(f(torch.tensor([2.0])).tolist())
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        return torch.relu(self.fc(x))

model = CompilesElsewhere()
r = torchcost.analyze(model, input_size=(2, 4), device="meta")
relu = torch._refs.nn.functional.relu
inner = getattr(relu, "__wrapped__", relu)
print(json.dumps({"macs": r.macs, "result": RESULTS, "real": hasattr(torch._dynamo, "reset"),
                  "answer_left": inner.__dict__.get("__dynamo_disable") is inner}))
"""


def test_another_thread_that_compiles_during_a_run_gets_the_real_package() -> None:
    out = _printed(_OTHER_THREAD)
    assert out["macs"] == 2 * 4 * 3  # 2 rows x 4 x 3
    assert out["result"] == [[6.0]]  # 2 * 3, compiled in the other thread
    assert out["real"] is True
    assert out["answer_left"] is False  # no answer of the stand-in stays cached on torch's functions


_LIBRARY = _PREAMBLE + """
from torchcost.resolve import resolve
from torchcost.run import dynamo as ours

out = {}
built = resolve("torchvision:resnet18")  # the resolver imports torchvision: without torch._dynamo
out["after_torchvision"] = dynamo()
out["bound"] = sys.modules["torchvision.ops.roi_align"].is_compile_supported is ours.is_compile_supported
r = torchcost.analyze(built.model, *built.args)
out["macs"] = r.macs
out["after_analysis"] = dynamo()
timm = resolve("timm:resnet18")  # timm's own modules call torch.compiler.disable at import: the real package
out["after_timm"] = type(sys.modules.get("torch._dynamo")).__name__
out["timm_macs"] = torchcost.analyze(timm.model, *timm.args).macs
import torchvision
boxes = torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])  # (batch index, x1, y1, x2, y2)
image = torch.arange(16.0).reshape(1, 1, 4, 4)
out["roi"] = torchvision.ops.roi_align(image, boxes, output_size=1, aligned=False).flatten().tolist()
bound = sys.modules["torchvision.ops.roi_align"].is_compile_supported
out["answers"] = [bound(d) for d in ("cpu", "cuda", "meta")]  # the real one, imported now
import torch._dynamo.utils
out["real_answers"] = [torch._dynamo.utils.is_compile_supported(d) for d in ("cpu", "cuda", "meta")]
compiled = torch.compile(lambda x: x - 1, backend="eager")
out["compiled"] = compiled(torch.tensor([4.0])).tolist()
print(json.dumps(out))
"""


def test_the_resolver_imports_torchvision_and_timm_without_dynamo() -> None:
    out = _printed(_LIBRARY)
    # torchvision binds torch._dynamo.utils.is_compile_supported at its import: it got the stand-in's, no package
    assert out["after_torchvision"] == out["after_analysis"] == []
    assert out["bound"] is True
    # resnet18 at 1x3x224x224: torchvision publishes 1.814 GMACs (to 3 decimals)
    assert abs(out["macs"] - 1.814e9) < 0.5e6
    # a library that asks the package for more than the stand-ins answer gets the real one, at that time
    assert out["after_timm"] == "module"
    assert out["timm_macs"] == out["macs"]  # timm's resnet18 is torchvision's, layer for layer
    # roi_align of the box (0,0)-(3,3) to one cell, sampling ratio adaptive (3x3 points at 0.5, 1.5, 2.5): the mean of
    # bilinear samples of the 4x4 ramp 4*y + x, linear, so its value at the centre (1.5, 1.5): 4*1.5 + 1.5 = 7.5
    assert out["roi"] == [7.5]
    assert out["answers"] == out["real_answers"]
    assert out["compiled"] == [3.0]


_OWNED = _PREAMBLE + """
import pathlib, tempfile
from torchcost.run import dynamo as ours
from torchcost.run.concurrency import importing

ours.own_process()  # what the torchcost command does (cli.py console)
folder = tempfile.mkdtemp()
pathlib.Path(folder, "marked.py").write_text('''
import torch
from torch._dynamo._trace_wrapped_higher_order_op import TransformGetItemToIndex  # (transformers' masking_utils)

calls = []

@torch.compiler.disable
def whole(x):
    calls.append("whole")
    return x + 1

@torch.compiler.disable(recursive=False)
def shallow(x):
    calls.append("shallow")
    return x * 2

@torch._dynamo.assume_constant_result
def constant():
    return 3

@torch._dynamo.allow_in_graph
def in_graph(x):
    return x - 1
''')
sys.path.insert(0, folder)
out = {}
with importing():  # as the resolver imports a model library
    import marked
out["after_import"] = dynamo()
out["eager"] = [marked.whole(torch.tensor([1.0])).tolist(), marked.shallow(torch.tensor([1.0])).tolist(),
                marked.constant(), marked.in_graph(torch.tensor([1.0])).tolist()]
out["calls"] = list(marked.calls)
out["marks"] = [marked.whole._torchdynamo_disable, marked.whole._torchdynamo_disable_recursive,
                marked.shallow._torchdynamo_disable_recursive, marked.whole._torchdynamo_orig_callable.__name__,
                marked.constant._dynamo_marked_constant, marked.whole.__name__]
r = torchcost.analyze(stack(), input_size=(5, 4), device="meta")
out["macs"] = r.macs
out["after_run"] = dynamo()
import torch._dynamo  # the real package, outside a run
import torch._dynamo.trace_rules as rules
out["allowed_before_run"] = rules.is_callable_allowed(marked.in_graph)
torchcost.analyze(stack(), input_size=(5, 4), device="meta")  # a run with the real package there: settles
out["allowed"] = rules.is_callable_allowed(marked.in_graph)
out["leaf_bound"] = torch._dynamo._trace_wrapped_higher_order_op is sys.modules[
    "torch._dynamo._trace_wrapped_higher_order_op"]
out["same_class"] = marked.TransformGetItemToIndex is \\
    torch._dynamo._trace_wrapped_higher_order_op.TransformGetItemToIndex
del marked.calls[:]

def program(x):
    return marked.whole(x) + marked.shallow(x) + marked.in_graph(x) * marked.constant()

compiled = torch.compile(program, backend="eager")
out["compiled"] = compiled(torch.tensor([2.0])).tolist()
out["calls_compiled"] = list(marked.calls)
from torch._dynamo.utils import counters
out["breaks"] = sorted(k for k in counters["graph_break"])
print(json.dumps(out))
"""


def test_the_command_imports_what_libraries_mark_without_dynamo_and_a_later_compile_sees_it_disabled() -> None:
    out = _printed(_OWNED)
    # a library that marks functions at its import (disable, recursive or not; assume_constant_result;
    # allow_in_graph) and imports the leaf submodule transformers' masking_utils imports: no package imported
    assert out["after_import"] == ["torch._dynamo._trace_wrapped_higher_order_op"]
    assert out["after_run"] == ["torch._dynamo._trace_wrapped_higher_order_op"]
    # the marked functions work as they are: x + 1, x * 2, 3, x - 1 at x = 1
    assert out["eager"] == [[2.0], [2.0], 3, [0.0]]
    assert out["calls"] == ["whole", "shallow"]
    assert out["marks"] == [True, True, False, "whole", True, "whole"]
    assert out["macs"] == 5 * (4 * 3 + 3 * 2) == 90  # as without the marks
    # the real package, imported later, takes over: allow_in_graph made at the next run, the leaf its own
    assert out["allowed_before_run"] is False
    assert out["allowed"] is True
    assert out["leaf_bound"] is True
    assert out["same_class"] is True
    # a compilation breaks the graph at the disabled functions and runs them: (2+1) + 2*2 + (2-1)*3 = 10
    assert out["compiled"] == [10.0]
    assert out["calls_compiled"] == ["whole", "shallow"]
    # the two disabled functions were not traced into: one graph break each, named so (torch's own wrapper of a
    # recursive one is "Skip calling", this one "Skip inlining": the same break)
    assert len(out["breaks"]) == 2
    assert all("`torch.compiler.disable()`d function" in b for b in out["breaks"]), out["breaks"]


_OWNED_CLASS = _PREAMBLE + """
from torchcost.run import dynamo as ours
from torchcost.run.concurrency import importing

ours.own_process()
out = {}
with importing():
    @torch.compiler.disable(recursive=False)
    def plain(x):
        return x + 1
    out["plain"] = [type(sys.modules["torch._dynamo"]).__name__, plain._torchdynamo_disable]

    class Layer(nn.Module):  # torch patches a class's __call__ in place: only the real package does that
        def forward(self, x):
            return x * 2

    made = torch.compiler.disable(Layer)
    out["class"] = [made is Layer, type(sys.modules["torch._dynamo"]).__name__]
out["calls"] = [plain(torch.tensor([1.0])).tolist(), Layer()(torch.tensor([1.0])).tolist()]
print(json.dumps(out))
"""


def test_the_command_hands_a_class_to_the_real_package() -> None:
    out = _printed(_OWNED_CLASS)
    assert out["plain"] == ["_StandIn", True]  # a plain function: answered by the stand-in, nothing imported
    assert out["class"] == [True, "module"]  # the class itself, patched by the real package, imported for it
    assert out["calls"] == [[2.0], [2.0]]  # 1 + 1, 1 * 2


_RANKS = _PREAMBLE + """
from torchcost import Parallel
from torchcost.run import dynamo as ours

ours.own_process()  # as the command (FSDP2's hooks call torch._dynamo.disable(hook)(...) at every call)
out = {}
for name, plan in (("fsdp", Parallel(fsdp=2)), ("ddp", Parallel(ddp=2))):
    r = torchcost.analyze(stack(), input_size=(4, 4), mode="train", optimizer="sgd", parallel=plan)
    out[name] = counts(r) | {"step_macs": r.step_macs}
    out["after_" + name] = dynamo()
import torch._dynamo  # the real package, as without torchcost
for name, plan in (("fsdp", Parallel(fsdp=2)), ("ddp", Parallel(ddp=2))):
    r = torchcost.analyze(stack(), input_size=(4, 4), mode="train", optimizer="sgd", parallel=plan)
    out[name + "_again"] = counts(r) | {"step_macs": r.step_macs}
print(json.dumps(out))
"""


def test_the_commands_simulated_rank_does_not_import_dynamo_and_counts_the_same() -> None:
    out = _printed(_RANKS)
    # the world's init_process_group clears trace_rules' caches, which were never made; to_empty's empty_like of the
    # sharded meta parameters is made without the fake mode's converter; FSDP2's hooks disabled lazily: only the
    # settings module is imported
    assert out["after_fsdp"] == out["after_ddp"] == ["torch._dynamo.config"]
    assert out["fsdp_again"] == out["fsdp"] and out["ddp_again"] == out["ddp"]
    # the input is the rank's own batch, 4 rows: forward 4 * (4*3 + 3*2) = 72 MACs; backward: the second Linear's
    # input gradient 4*3*2 = 24, the weight gradients 4*4*3 + 4*3*2 = 72
    assert out["ddp"]["macs"] == 72 and out["ddp"]["step_macs"] == 72 + 24 + 72


_TP = _PREAMBLE + """
from torch.distributed.tensor import Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel
from torchcost import Parallel
from torchcost.run import dynamo as ours

ours.own_process()
def embedded():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4))

ids = torch.randint(0, 10, (2, 3))
out = {}
def runs(suffix):
    for name, dims in (("tp", {}), ("fsdp_tp", {"fsdp": 2})):
        plan = {"0": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()), "1": ColwiseParallel(),
                "3": RowwiseParallel()}
        r = torchcost.analyze(embedded(), ids, mode="train", optimizer="sgd", target="cpu",
                              parallel=Parallel(tp=2, tp_plan=plan, **dims))
        out[name + suffix] = counts(r) | {"step_macs": r.step_macs}
        out["after_" + name + suffix] = dynamo()
runs("")
import torch._dynamo  # the real package, as without torchcost
runs("_again")
print(json.dumps(out))
"""


def test_the_commands_tensor_parallel_rank_does_not_import_dynamo_and_counts_the_same() -> None:
    out = _printed(_TP)
    # the embedding's rowwise shard masks the ids out of its rows: DTensor's mask lifts a 0-d int64 constant, made
    # as the fake mode's converter makes it (its item() memo too) without its import; a 2-D mesh's sub-mesh patches
    # the settings for nested graph breaks, which the stand-in holds: only the settings module is imported
    assert out["after_tp"] == out["after_fsdp_tp"] == ["torch._dynamo.config"]
    assert out["tp_again"] == out["tp"] and out["fsdp_tp_again"] == out["fsdp_tp"]
    # 2 x 3 = 6 tokens a rank; the colwise Linear(4, 6) keeps 3 outputs: 6*4*3 = 72 MACs; the rowwise Linear(6, 4)
    # 3 inputs: 6*3*4 = 72. Backward: both Linears' input and weight gradients, 72 each (the embedding's output
    # needs its gradient for the embedding's weight)
    assert out["tp"]["macs"] == out["fsdp_tp"]["macs"] == 72 + 72
    assert out["tp"]["step_macs"] == out["fsdp_tp"]["step_macs"] == 144 + 4 * 72
