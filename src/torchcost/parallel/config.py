"""The public description of a simulated distributed run: :class:`Parallel`, and its checks.

``analyze(model, x, mode="train", parallel=Parallel(fsdp=8))`` analyses one rank of a world of 8 processes training
``model`` with FSDP2: the inputs are that rank's own (local) batch, as a training script feeds each rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchcost.errors import InputError

__all__ = ["Parallel"]


@dataclass(frozen=True)
class Parallel:
    """One rank of a simulated world (docs/conventions.md, "Distributed training").

    Args:
        fsdp: FSDP2 (``fully_shard``) shard degree.
        tp: tensor-parallel degree; with ``fsdp`` or ``ddp`` > 1 the mesh is 2-D, ``(dp, tp)``.
        ddp: DistributedDataParallel replicas (not with ``fsdp``); modelled, not run (see the conventions).
        reshard_after_forward: FSDP2's option, for every unit.
        offload: FSDP2's ``CPUOffloadPolicy``: the sharded parameters, their gradients and the optimizer state live
            in host memory and the optimizer steps on the CPU; they leave the device's peak (``memory.host_bytes``).
        param_dtype, reduce_dtype: FSDP2's ``MixedPrecisionPolicy`` (None: off).
        bucket_cap_mb: DDP's bucket cap.
        rank: the rank to analyse; None: the worst one (rank 0, the last rank and one rank of every other distinct
            shard layout are analysed, and the one with the highest peak is reported).
        wrap: ``wrap(model)`` -> the submodules that get their own ``fully_shard`` (then the root gets one); default:
            the repeated blocks of the model's first ``nn.ModuleList`` (HF ``model.layers``, ``transformer.h``),
            else each top-level child holding parameters.
        apply: ``apply(model, mesh)`` wraps the model itself (``fully_shard``, ``parallelize_module``) instead;
            ``fsdp``/``tp``/``ddp`` then only size the mesh, whose dimensions are named "dp" and "tp".
        tp_plan: a ``parallelize_module`` plan (module name, wildcards allowed -> ParallelStyle) applied to the
            root; default: the built-in plan for HF Llama/Mistral/Qwen2-style models and GPT-2.
    """

    fsdp: int = 1
    tp: int = 1
    ddp: int = 1
    reshard_after_forward: bool = True
    param_dtype: torch.dtype | None = None
    reduce_dtype: torch.dtype | None = None
    bucket_cap_mb: float = 25.0
    rank: int | None = None
    wrap: Callable[[nn.Module], Iterable[nn.Module]] | None = None
    apply: Callable[[nn.Module, Any], None] | None = None
    tp_plan: Mapping[str, Any] | None = None
    offload: bool = False

    @property
    def world(self) -> int:
        return self.fsdp * self.tp * self.ddp

    @property
    def dp(self) -> int:
        """The data-parallel degree (FSDP's shards or DDP's replicas)."""
        return self.fsdp * self.ddp

    @property
    def strategy(self) -> str:
        if self.apply is not None:
            return "custom"
        parts = [name for name, degree in (("fsdp2", self.fsdp), ("ddp", self.ddp), ("tp", self.tp)) if degree > 1]
        return "+".join(parts) or "fsdp2"

    @property
    def mesh_shape(self) -> tuple[int, ...]:
        if self.tp > 1 and self.dp > 1:
            return (self.dp, self.tp)
        return (self.tp,) if self.tp > 1 else (self.dp,)

    @property
    def mesh_dims(self) -> tuple[str, ...]:
        if self.tp > 1 and self.dp > 1:
            return ("dp", "tp")
        return ("tp",) if self.tp > 1 else ("dp",)

    def coordinate(self, rank: int) -> tuple[int, ...]:
        """``rank``'s place on the mesh (row-major, as init_device_mesh lays ranks out)."""
        if len(self.mesh_shape) == 2:
            return (rank // self.tp, rank % self.tp)
        return (rank,)

    def check(self, model: nn.Module, mode: str) -> None:
        """One-line InputErrors for what cannot be simulated."""
        for name in ("fsdp", "tp", "ddp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"Parallel.{name} must be a positive integer degree, got {value!r}")
        if self.fsdp > 1 and self.ddp > 1:
            raise InputError("Parallel: ddp and fsdp cannot be combined (FSDP2 already replicates what it shards); "
                             "use fsdp= alone, or fsdp= with tp=")
        if self.world < 2:
            raise InputError("Parallel: a world of 1 rank is not distributed; give fsdp=, tp= or ddp= > 1")
        if self.rank is not None and (not isinstance(self.rank, int) or not 0 <= self.rank < self.world):
            raise InputError(f"Parallel.rank must be in 0..{self.world - 1} for a world of {self.world}, "
                             f"got {self.rank!r}")
        if self.offload and self.fsdp <= 1 and self.apply is None:
            raise InputError("Parallel: offload is FSDP2's CPUOffloadPolicy; it needs fsdp= > 1")
        if self.bucket_cap_mb <= 0:
            raise InputError(f"Parallel.bucket_cap_mb must be positive, got {self.bucket_cap_mb!r}")
        for name in ("param_dtype", "reduce_dtype"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, torch.dtype):
                raise InputError(f"Parallel.{name} must be a torch.dtype or None, got {value!r}")
        for name in ("wrap", "apply"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise InputError(f"Parallel.{name} must be callable, got {type(value).__name__}")
        import torch.distributed as dist

        if not dist.is_available():
            raise InputError("Parallel: this torch build has no torch.distributed; a simulated world needs it")
        if not any(True for _ in model.parameters()):
            raise InputError(f"Parallel: {type(model).__name__} has no parameters to shard or replicate")
        if mode not in ("train", "eval"):
            raise InputError(f"Parallel runs need mode 'train' or 'eval', got {mode!r}")
        if self.tp > 1 and self.apply is None:
            _check_heads(model, self.tp)


def _check_heads(model: nn.Module, tp: int) -> None:
    """A TP degree must divide the attention heads and key/value heads (HF configs say how many)."""
    config = getattr(model, "config", None)
    if config is None:
        return
    for attr in ("num_attention_heads", "num_key_value_heads", "n_head"):
        heads = getattr(config, attr, None)
        if isinstance(heads, int) and heads % tp:
            raise InputError(f"Parallel: tp={tp} does not divide the model's {attr}={heads}; tensor parallelism "
                             f"splits whole heads")
