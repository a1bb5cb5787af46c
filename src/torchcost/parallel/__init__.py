"""Simulated distributed training: one rank of an FSDP2 / DDP / tensor-parallel world, analysed like a single-device
step (``analyze(model, x, mode="train", parallel=Parallel(fsdp=8))``). docs/conventions.md, "Distributed training".

Only :class:`Parallel` is imported here; the runner (and torch.distributed) load when a parallel run starts.
"""

from torchcost.parallel.config import Parallel

__all__ = ["Parallel"]
