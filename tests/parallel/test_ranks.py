"""Which ranks a simulated world runs (parallel/runner.py ``ranks_to_run``): the first rank of every layout of the
local shards, derived here by hand from torch.chunk's split (ceil(n / parts) rows a chunk, the last ones short)."""

from __future__ import annotations

import torch
from torch import nn

from torchcost.parallel.config import Parallel
from torchcost.parallel.runner import ranks_to_run


def _model(*shapes: tuple[int, ...], repeats: int = 1) -> nn.Module:
    model = nn.Module()
    for r in range(repeats):
        for i, shape in enumerate(shapes):
            model.register_parameter(f"p{r}_{i}", nn.Parameter(torch.empty(shape, device="meta")))
    return model


def test_fsdp_ranks_with_a_short_last_shard() -> None:
    # 10 rows in 4: chunks of ceil(10/4) = 3: 3, 3, 3, 1; 7 rows: 2, 2, 2, 1. Ranks 0-2 hold (3, 2), rank 3 (1, 1)
    assert ranks_to_run(_model((10, 3), (7,)), Parallel(fsdp=4)) == [0, 3]
    # the same shapes many times over: the same two layouts
    assert ranks_to_run(_model((10, 3), (7,), repeats=50), Parallel(fsdp=4)) == [0, 3]
    # 8 rows in 4: 2 each, every rank alike
    assert ranks_to_run(_model((8, 3), (4,), repeats=3), Parallel(fsdp=4)) == [0]


def test_fsdp_by_tp_ranks_each_coordinate_its_own_layout() -> None:
    # a 2 x 2 mesh, rank = 2 * dp + tp. (10, 3): TP rows 5 | 5, TP columns ceil(3/2) = 2 | 1, FSDP rows of 10:
    # 5 | 5, FSDP rows of the TP-local 5: 3 | 2. (7,): TP rows 4 | 3, FSDP rows of 7: 4 | 3, FSDP rows of the
    # TP-local 4: 2 | 2 and of 3: 2 | 1.
    # rank 0 (dp 0, tp 0): 5, 2, 5, 3; 4, 4, 2    rank 1 (0, 1): 5, 1, 5, 3; 3, 4, 2
    # rank 2 (1, 0):       5, 2, 5, 2; 4, 3, 2    rank 3 (1, 1): 5, 1, 5, 2; 3, 3, 1: four layouts
    assert ranks_to_run(_model((10, 3), (7,), repeats=4), Parallel(fsdp=2, tp=2)) == [0, 1, 2, 3]
    # (8, 4) and (4,) split evenly both ways: one layout for the 4 ranks, and for a 4 x 8 mesh of 32
    assert ranks_to_run(_model((8, 4), (4,)), Parallel(fsdp=2, tp=2)) == [0]
    assert ranks_to_run(_model((64, 64), (64,), repeats=10), Parallel(fsdp=4, tp=8)) == [0]


def test_a_rank_asked_for_is_the_one_run() -> None:
    assert ranks_to_run(_model((10, 3)), Parallel(fsdp=4, rank=2)) == [2]
