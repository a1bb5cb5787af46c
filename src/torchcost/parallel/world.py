"""The simulated world: a fake process group of N ranks, in this one process, seen from one rank.

:func:`simulated_world` hides the caller's own c10d state (their default group, other groups, the names functional
collectives resolve), initialises torch's "fake" backend (a FakeStore: collectives return at once and move nothing)
at the analysed rank, and on the way out, also on an error or Ctrl-C, destroys the fake world and puts the caller's
state back, re-registering their group names. Meshes are built on the "cpu" device type, outside any mode:
``DeviceMesh`` reads its rank table with ``.tolist()``, and FSDP2 on a "cuda" mesh asks the CUDA driver.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["make_mesh", "simulated_world"]

_NAMES = itertools.count()


@contextlib.contextmanager
def simulated_world(rank: int, world: int) -> Iterator[None]:
    """A fake world of ``world`` ranks seen from ``rank``, with the caller's c10d state set aside meanwhile."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d as c10d

    state = c10d._world
    saved: dict[str, Any] = {
        "default": state._default_pg, "pg_map": dict(c10d._pg_map), "pg_names": dict(c10d._pg_names),
        "ranks": dict(c10d._pg_group_ranks), "cfg": dict(c10d._pg_backend_config),
        "tags": {k: list(v) for k, v in c10d._tags_to_pg.items()}, "pg_to_tag": dict(c10d._pg_to_tag),
        "count": c10d._group_count, "coalesce": dict(state._pg_coalesce_state),
    }
    tables: dict[str, Any] = {"pg_map": c10d._pg_map, "pg_names": c10d._pg_names, "ranks": c10d._pg_group_ranks,
              "cfg": c10d._pg_backend_config, "tags": c10d._tags_to_pg, "pg_to_tag": c10d._pg_to_tag}
    for table in tables.values():
        table.clear()
    state._default_pg = None
    # the fake world's group names must reuse neither the caller's nor an earlier fake world's (torch caches
    # meshes and groups by name: a stale entry would resolve to a destroyed group)
    world_id = next(_NAMES)
    c10d._group_count = saved["count"] + 1000 * (1 + world_id)
    try:
        from torch.testing._internal.distributed.fake_pg import FakeStore

        dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world,
                                group_name=f"torchcost_sim_{world_id}")
        yield
    finally:
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        finally:
            for key, table in tables.items():
                table.clear()
                table.update(saved[key])
            state._default_pg = saved["default"]
            c10d._group_count = saved["count"]
            state._pg_coalesce_state.clear()
            state._pg_coalesce_state.update(saved["coalesce"])
            # destroying the fake default group unregistered every name in the C++ registry: the caller's back
            for pg, name in saved["pg_names"].items():
                with contextlib.suppress(Exception):
                    getattr(c10d, "_register_process_group")(name, pg)  # noqa: B009
            from torchcost.collect.ops import forget_groups

            forget_groups()
            _clear_dtensor_caches()


def _clear_dtensor_caches() -> None:
    """DTensor caches sharding decisions by op schema, and a schema's mesh compares equal across worlds: a cached
    decision of this world would hand the next one this world's (destroyed) groups, or another rank's shard sizes."""
    with contextlib.suppress(Exception):
        from torch.distributed.tensor import DTensor

        propagator = DTensor._op_dispatcher.sharding_propagator
        for name in ("propagate_op_sharding", "_propagate_tensor_meta_cached"):
            cache_clear = getattr(getattr(propagator, name, None), "cache_clear", None)
            if callable(cache_clear):
                cache_clear()
    # DTensor's C++ fast path keeps its own cache of the same decisions
    clear_native = getattr(torch._C, "_clear_DTensor_sharding_propagator_cache", None)
    if callable(clear_native):
        with contextlib.suppress(Exception):
            clear_native()
    # redistribute's plans hold the shapes of this rank's shards: an uneven shard differs from rank to rank
    with contextlib.suppress(Exception):
        from torch.distributed.tensor import _redistribute

        _redistribute._gen_transform_infos.cache_clear()


def make_mesh(shape: tuple[int, ...], dims: tuple[str, ...]) -> Any:
    """A CPU DeviceMesh of ``shape`` named ``dims`` in the current (simulated) world."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", shape, mesh_dim_names=dims)
