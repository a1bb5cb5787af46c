"""Applying the real torch.distributed wrappers to a meta twin: the TP plan (``parallelize_module``), then FSDP2
(``fully_shard`` per unit, then the root), in torchtitan's order; or the user's own ``apply(model, mesh)``.

DDP is not applied (its C++ Reducer cannot run on fake tensors): parallel/ddp.py models it.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from torchcost.errors import InputError, first_line
from torchcost.parallel.config import Parallel

__all__ = ["apply_strategy", "default_tp_plan", "default_units", "prepare_twin", "tied_parameters"]


def default_units(model: nn.Module) -> list[nn.Module]:
    """The modules that get their own ``fully_shard`` by default: the repeated blocks of the first ``nn.ModuleList``
    with two or more children of one class, else each top-level child holding parameters."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 2 and len({type(c) for c in module}) == 1:
            return list(module)
    return [child for child in model.children() if any(True for _ in child.parameters())]


_LLAMA_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")


def default_tp_plan(model: nn.Module) -> dict[str, Any]:
    """The built-in plans. HF Llama/Mistral/Qwen2-style decoders (torchtitan's plan without sequence parallel:
    q/k/v/gate/up colwise, o/down rowwise, the embedding rowwise and the LM head colwise, both replicated outside).
    HF GPT-2 (its Conv1D layers, below). Anything else is refused: give ``tp_plan=`` or ``apply=``."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    names = dict(model.named_modules())
    layers = [n for n, m in names.items() if n.endswith(".layers") and isinstance(m, nn.ModuleList)]
    if layers:
        prefix = layers[0]
        first = f"{prefix}.0"
        attn = all(isinstance(names.get(f"{first}.self_attn.{p}"), nn.Linear) for p in _LLAMA_ATTN)
        mlp = all(isinstance(names.get(f"{first}.mlp.{p}"), nn.Linear) for p in _LLAMA_MLP)
        if attn and mlp:
            plan = _ends(names, prefix, "embed_tokens")
            for p in _LLAMA_ATTN:
                plan[f"{prefix}.*.self_attn.{p}"] = RowwiseParallel() if p == "o_proj" else ColwiseParallel()
            for p in _LLAMA_MLP:
                plan[f"{prefix}.*.mlp.{p}"] = RowwiseParallel() if p == "down_proj" else ColwiseParallel()
            return plan
    gpt2 = _gpt2_plan(names)
    if gpt2 is not None:
        return gpt2
    raise InputError(f"Parallel: no built-in tensor-parallel plan for {type(model).__name__}; pass tp_plan= "
                     f"(a parallelize_module plan) or apply=")


_GPT2_BLOCK = (("attn.c_attn", "col"), ("attn.c_proj", "row"), ("mlp.c_fc", "col"), ("mlp.c_proj", "row"))


def _gpt2_plan(names: dict[str, nn.Module]) -> dict[str, Any] | None:
    """HF GPT-2's plan (Megatron's): c_attn and c_fc colwise, both c_proj rowwise, wte rowwise and the tied lm_head
    colwise, replicated outside. Its layers are ``Conv1D`` (a Linear with the weight stored transposed), which torch's
    styles refuse; the Conv1D styles below shard the transposed dimension instead.

    The fused c_attn is sharded as one (in, 3 * hidden) matrix: each rank's shard has the shape of its q, k and v heads
    side by side (Megatron permutes the columns so that it holds exactly those), so its bytes, FLOPs and collectives
    are the real ones; the values would differ, and a simulated run has none. ``prepare_twin`` sets each attention's
    ``split_size`` to the local width."""
    h = [n for n, m in names.items() if n.endswith(".h") and isinstance(m, nn.ModuleList)]
    if not h or not all(type(names.get(f"{h[0]}.0.{p}")).__name__ == "Conv1D" for p, _ in _GPT2_BLOCK):
        return None
    prefix = h[0]
    plan = _ends(names, prefix, "wte")
    plan.update({f"{prefix}.*.{p}": _conv1d_colwise() if kind == "col" else _conv1d_rowwise()
                 for p, kind in _GPT2_BLOCK})
    return plan


def _ends(names: dict[str, nn.Module], blocks: str, embedding: str) -> dict[str, Any]:
    """Both built-in plans' ends: the token embedding (``embedding``, beside the ``blocks`` list) rowwise and the
    LM head colwise, each with replicated input and output."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan: dict[str, Any] = {}
    root = blocks.rpartition(".")[0]
    embed = f"{root}.{embedding}" if root else embedding
    if isinstance(names.get(embed), nn.Embedding):
        plan[embed] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
    if isinstance(names.get("lm_head"), nn.Linear):
        plan["lm_head"] = ColwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
    return plan


def prepare_twin(model: nn.Module, tp: int) -> None:
    """What the twin's own code must know of a built-in plan: GPT-2's attention splits c_attn's output by
    ``split_size``, the global width, which becomes ``split_size // tp`` locally."""
    for module in model.modules():
        width = getattr(module, "split_size", None)
        if type(module).__name__ == "GPT2Attention" and isinstance(width, int):
            setattr(module, "split_size", width // tp)  # noqa: B010  # an int attribute nn.Module's typing cannot see


def _conv1d_styles() -> tuple[type, type]:
    """ColwiseParallel and RowwiseParallel for HF's Conv1D (``y = x @ W + b``, W of shape (in, out)): colwise shards
    W's dimension 1 and the bias, rowwise W's dimension 0 with the bias replicated."""
    from torch.distributed.tensor import Replicate, Shard, distribute_module, distribute_tensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    def sharded(module: nn.Module, mesh: Any, placements: dict[str, Any], src: Any) -> None:
        for pname, param in list(module.named_parameters(recurse=False)):
            dist = distribute_tensor(param, mesh, [placements[pname]], src_data_rank=src)
            module.register_parameter(pname, nn.Parameter(dist, requires_grad=param.requires_grad))

    class Colwise(ColwiseParallel):
        def _apply(self, module: nn.Module, device_mesh: Any) -> nn.Module:
            def partition(name: str, mod: nn.Module, mesh: Any) -> None:
                sharded(mod, mesh, {"weight": Shard(1), "bias": Shard(0)}, self.src_data_rank)

            return distribute_module(module, device_mesh, partition,
                                     partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
                                     partial(self._prepare_output_fn, self.output_layouts, self.use_local_output))

    class Rowwise(RowwiseParallel):
        def _apply(self, module: nn.Module, device_mesh: Any) -> nn.Module:
            def partition(name: str, mod: nn.Module, mesh: Any) -> None:
                sharded(mod, mesh, {"weight": Shard(0), "bias": Replicate()}, self.src_data_rank)

            self.desired_input_layouts = (Shard(-1),)
            return distribute_module(module, device_mesh, partition,
                                     partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
                                     partial(self._prepare_output_fn, self.output_layouts, self.use_local_output))

    return Colwise, Rowwise


def _conv1d_colwise() -> Any:
    return _conv1d_styles()[0]()


def _conv1d_rowwise() -> Any:
    return _conv1d_styles()[1]()


def apply_strategy(model: nn.Module, plan: Parallel, mesh: Any) -> list[str]:
    """Wrap ``model`` (a meta twin, no mode active) for ``plan`` on ``mesh``; returns the FSDP units' names."""
    names = {id(m): n for n, m in model.named_modules()}
    if plan.apply is not None:
        try:
            plan.apply(model, mesh)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"Parallel.apply failed on the model's twin: {first_line(exc)}") from exc
        return [names.get(id(m), "?") for m in model.modules() if _is_fsdp(m)]
    tp_mesh = mesh["tp"] if plan.tp > 1 and plan.dp > 1 else mesh
    dp_mesh = mesh["dp"] if plan.tp > 1 and plan.dp > 1 else mesh
    if plan.tp > 1:
        from torch.distributed.tensor.parallel import parallelize_module

        tp_plan = dict(plan.tp_plan) if plan.tp_plan is not None else default_tp_plan(model)
        if plan.tp_plan is None:
            prepare_twin(model, plan.tp)
        tied = tied_parameters(model)
        try:
            parallelize_module(model, tp_mesh, tp_plan)
        except Exception as exc:
            raise InputError(f"Parallel: the tensor-parallel plan does not apply to {type(model).__name__}: "
                             f"{first_line(exc)}") from exc
        _keep_tied(tied)
    if plan.fsdp <= 1:
        return []
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    units = list(plan.wrap(model)) if plan.wrap is not None else default_units(model)
    for unit in units:
        if not isinstance(unit, nn.Module) or id(unit) not in names:
            raise InputError("Parallel.wrap must return submodules of the model")
    kwargs: dict[str, Any] = {"mesh": dp_mesh, "reshard_after_forward": plan.reshard_after_forward}
    if plan.param_dtype is not None or plan.reduce_dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=plan.param_dtype, reduce_dtype=plan.reduce_dtype)
    if plan.offload:  # pinned memory needs CUDA; the twin's host copies are fake either way
        from torch.distributed.fsdp import CPUOffloadPolicy

        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=False)
    done = []
    for unit in (*[u for u in units if u is not model], model):
        fully_shard(unit, **kwargs)
        done.append(names[id(unit)])
    return done


def tied_parameters(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """The registrations (module, name) of each parameter registered more than once (tied weights: GPT-2's lm_head
    and wte)."""
    seen: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                seen.setdefault(id(param), []).append((module, name))
    return [places for places in seen.values() if len(places) > 1]


def _keep_tied(tied: list[list[tuple[nn.Module, str]]]) -> None:
    """parallelize_module gives each registration of a tied weight its own DTensor; where the styles shard them alike
    (the embedding rowwise and the LM head colwise both shard the vocabulary rows), the first one takes all places
    again, so the rank holds one shard as the model holds one weight. Ties the styles shard differently stay split."""
    for (module, name), *others in tied:
        first = module._parameters[name]
        if first is None:
            continue
        spec = (getattr(first, "placements", None), tuple(first.shape))
        for other, other_name in others:
            param = other._parameters[other_name]
            if param is not None and (getattr(param, "placements", None), tuple(param.shape)) == spec:
                other._parameters[other_name] = first


def _is_fsdp(module: nn.Module) -> bool:
    return any(cls.__name__ == "FSDPModule" for cls in type(module).__mro__)
