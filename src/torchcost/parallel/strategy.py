"""Applying the real torch.distributed wrappers to a meta twin: the TP plan (``parallelize_module``), then FSDP2
(``fully_shard`` per unit, then the root), in torchtitan's order; or the user's own ``apply(model, mesh)``.

DDP is not applied (its C++ Reducer cannot run on fake tensors): parallel/ddp.py models it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from torchcost.errors import InputError, first_line
from torchcost.parallel.config import Parallel

__all__ = ["apply_strategy", "default_tp_plan", "default_units"]


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
    """The built-in plan: HF Llama/Mistral/Qwen2-style decoders (torchtitan's plan without sequence parallel:
    q/k/v/gate/up colwise, o/down rowwise, the embedding rowwise and the LM head colwise, both replicated outside).
    Anything else is refused: give ``tp_plan=`` or ``apply=``."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    names = dict(model.named_modules())
    layers = [n for n, m in names.items() if n.endswith(".layers") and isinstance(m, nn.ModuleList)]
    if layers:
        prefix = layers[0]
        first = f"{prefix}.0"
        attn = all(isinstance(names.get(f"{first}.self_attn.{p}"), nn.Linear) for p in _LLAMA_ATTN)
        mlp = all(isinstance(names.get(f"{first}.mlp.{p}"), nn.Linear) for p in _LLAMA_MLP)
        if attn and mlp:
            plan: dict[str, Any] = {}
            root = prefix.rpartition(".")[0]
            embed = f"{root}.embed_tokens" if root else "embed_tokens"
            if isinstance(names.get(embed), nn.Embedding):
                plan[embed] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
            if isinstance(names.get("lm_head"), nn.Linear):
                plan["lm_head"] = ColwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
            for p in _LLAMA_ATTN:
                plan[f"{prefix}.*.self_attn.{p}"] = RowwiseParallel() if p == "o_proj" else ColwiseParallel()
            for p in _LLAMA_MLP:
                plan[f"{prefix}.*.mlp.{p}"] = RowwiseParallel() if p == "down_proj" else ColwiseParallel()
            return plan
    if any(type(m).__name__ == "Conv1D" for m in model.modules()):
        raise InputError(f"Parallel: no built-in tensor-parallel plan for {type(model).__name__}: its Conv1D "
                         f"layers (GPT-2) are not nn.Linear, which ColwiseParallel/RowwiseParallel need; pass apply=")
    raise InputError(f"Parallel: no built-in tensor-parallel plan for {type(model).__name__}; pass tp_plan= "
                     f"(a parallelize_module plan) or apply=")


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
        try:
            parallelize_module(model, tp_mesh, tp_plan)
        except Exception as exc:
            raise InputError(f"Parallel: the tensor-parallel plan does not apply to {type(model).__name__}: "
                             f"{first_line(exc)}") from exc
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
    done = []
    for unit in (*[u for u in units if u is not model], model):
        fully_shard(unit, **kwargs)
        done.append(names[id(unit)])
    return done


def _is_fsdp(module: nn.Module) -> bool:
    return any(cls.__name__ == "FSDPModule" for cls in type(module).__mro__)
