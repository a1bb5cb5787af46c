"""DistributedDataParallel, modelled: its C++ Reducer cannot run on fake tensors (it reads index tensors' values when
it rebuilds its buckets), so the rank's step runs without it and DDP's own work is added from its rules:

* **Buckets**: ``torch.distributed._compute_bucket_assignment_by_size`` over the trainable parameters (their local
  shards under TP) in reverse registration order, with ``[bucket_cap_mb]`` as the only limit: the steady-state
  buckets DDP rebuilds after its first step (the feasibility study reproduced real DDP's buckets exactly this way).
* **Communication**: one all-reduce per bucket in the backward (payload: the bucket's bytes; together, every
  gradient's bytes), charged to the modules whose parameters the bucket holds (calls to the module of the bucket's
  last-ready parameter); the coalesced broadcast of the buffers in each forward when the model has buffers
  (``broadcast_buffers=True``, DDP's default): one call per dtype (per 250 MB of it), as c10d groups them.
* **Memory**: DDP allocates one flat buffer per bucket when it is built and keeps it (``gradient_as_bucket_view``
  off, the default): alive through the whole step, "comm_buffers", beside the gradients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from torchcost.collect.storages import local_tensor
from torchcost.parallel.config import Parallel

if TYPE_CHECKING:
    from torchcost.collect.ops import OpCollector

__all__ = ["DDPModel"]

BUCKET_OP = "ddp::bucket_all_reduce"
BROADCAST_OP = "ddp::broadcast_buffers"


BROADCAST_CAP = 250 * 1024 * 1024  # DDP's broadcast_bucket_size


def broadcast_groups(buffers: list[torch.Tensor], cap: int = BROADCAST_CAP) -> list[int]:
    """The bytes of each broadcast DDP's ``_broadcast_coalesced`` issues for ``buffers``: c10d's ``take_tensors``
    groups the tensors by type (dtype), closes a group once it reaches ``cap`` bytes, and broadcasts each group
    flattened (BatchNorm's float statistics and its int64 ``num_batches_tracked``: two calls)."""
    done: list[int] = []
    open_groups: dict[torch.dtype, int] = {}
    for b in buffers:
        nbytes = local_tensor(b).numel() * b.element_size()
        open_groups[b.dtype] = open_groups.get(b.dtype, 0) + nbytes
        if open_groups[b.dtype] >= cap:
            done.append(open_groups.pop(b.dtype))
    return done + [n for n in open_groups.values()]


class DDPModel:
    def __init__(self, plan: Parallel) -> None:
        self.plan = plan
        self.buckets: list[int] = []  # bytes of each bucket, in the order its all-reduce runs
        self.members: list[list[str]] = []  # the parameter names in each bucket

    def assign(self, model: nn.Module) -> list[tuple[torch.dtype, int]]:
        """The buckets (dtype, elements) of ``model``'s trainable parameters, in backward order."""
        import torch.distributed as dist

        named = [(n, local_tensor(p)) for n, p in model.named_parameters() if p.requires_grad][::-1]
        metas = [torch.empty(t.shape, dtype=t.dtype, device="meta") for _, t in named]
        cap = int(self.plan.bucket_cap_mb * 1024 * 1024)
        assign = getattr(dist, "_compute_bucket_assignment_by_size")  # noqa: B009  # DDP's own bucketing
        indices, _ = assign(metas, [cap], [False] * len(metas))
        made = []
        self.buckets, self.members = [], []
        for bucket in indices:
            numel = sum(metas[i].numel() for i in bucket)
            dtype = metas[bucket[0]].dtype
            made.append((dtype, numel))
            self.buckets.append(numel * metas[bucket[0]].element_size())
            self.members.append([named[i][0] for i in bucket])
        return made

    def bucket_buffers(self, model: nn.Module) -> list[torch.Tensor]:
        """The flat bucket buffers (made under the twin's fake mode: nothing is allocated)."""
        device = next(iter(model.parameters())).device
        return [torch.empty(numel, dtype=dtype, device=device) for dtype, numel in self.assign(model)]

    def record(self, ops: OpCollector, model: nn.Module, *, training: bool) -> None:
        """Add DDP's collectives to ``ops``: the buffers' broadcast in the forward, the buckets' all-reduces in the
        backward (when one ran)."""
        size = self.plan.ddp
        buffers = [b for b in model.buffers()]
        for nbytes in broadcast_groups(buffers):
            ops.record_collective(BROADCAST_OP, "broadcast", nbytes, size, module="", phase="forward")
        if not training:
            return
        if not self.buckets:
            self.assign(model)
        params = dict(model.named_parameters())
        for nbytes, names in zip(self.buckets, self.members):
            entry = ops.comm.setdefault((BUCKET_OP, "all_reduce", size, "backward"), [0, 0])
            entry[0] += 1
            entry[1] += nbytes
            trigger = names[-1].rpartition(".")[0]  # the first registered: its gradient is ready last
            ops.comm_modules.setdefault(trigger, [0, 0])[0] += 1
            for name in names:
                p = params[name]
                module = name.rpartition(".")[0]
                ops.comm_modules.setdefault(module, [0, 0])[1] += local_tensor(p).numel() * p.element_size()
