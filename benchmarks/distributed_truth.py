"""Distributed truth (issue 12): per-rank peak memory and collectives of a real multi-process training step, on this
machine's CPUs with the gloo backend, for the cases of benchmarks/distributed_cases.py.

    python -m benchmarks.distributed_truth                      # every case; writes benchmarks/distributed_truth.json
    python -m benchmarks.distributed_truth --only mlp_fsdp_w2   # cases whose name matches (comma list, fnmatch)
    python -m benchmarks.distributed_truth --repeats 3 --steps 5 --timeout 300
    python -m benchmarks.distributed_truth --list

    from benchmarks.distributed_truth import truth
    truth("mlp_fsdp_w2", steps=3)     # one case, one launch, the merged dict (no file written)

Each case is launched ``--repeats`` times with torch.multiprocessing's spawn (gloo, MASTER_ADDR=127.0.0.1, a free
port, one thread per rank, a timeout per launch; stragglers are killed). Each rank builds the model, applies the
strategy (``apply_strategy``, the very code the predictor will run), makes AdamW, runs the warm-up step(s), then
``--steps`` steady steps, each: ``zero_grad(set_to_none=True)``, a barrier, then the profiled ``out = model(...);
loss = out.float().pow(2).mean(); loss.backward(); opt.step()``.

Memory (the oracle of tests/memory/truth.py): the CPU allocator's events under torch.profiler(profile_memory=True);
the step's peak is the running maximum above what was alive at the step's start, plus the bytes alive at the start:
the distinct storages of the parameters (a DTensor's local storage, so FSDP2's padded shard), buffers, gradients (None
after zero_grad), optimizer state, inputs and, for DDP, the reducer's bucket buffers (seen by the comm hook; DDP
rebuilds them once, in the second step's forward, and keeps them: the ones of the last warm-up step, checked to be the
very storages every measured step's hook sees; an earlier version also counted the first warm-up step's freed buckets,
which put one stale set of buckets into the first measured step's base). Per step it also records ``leak = end -
new_alive``: the bytes the profiler saw the step leave allocated, minus the storages that really are new and alive at
its end (the gradients). A step with ``leak != 0`` missed frees: the profiler records the allocator events of the
threads it profiles, and gloo's worker threads are not among them; when a worker thread drops the last reference to a
collective's tensors (its Work object, reset after the waiter was woken), that free is lost and the block looks alive
until the step's end (or until its pointer is allocated again), so the step's peak can be too high, by multiples of an
FSDP group's all-gather buffer. ``clean_*`` are over the steps with ``leak == 0``; they were all equal to the minimum
in the first full run. ``peak_fixed`` repairs a missed free where its pointer is allocated again (not enough on its
own). ``_ExperimentalConfig(profile_all_threads=True)`` is no remedy: it records no allocation at all.

Collectives: one more steady step runs under a TorchDispatchMode that records every op in the namespaces c10d and
_c10d_functional (count and bytes: all-gather: output bytes; reduce-scatter: input bytes; all-reduce, broadcast and
the rest: the bytes of the tensors it is given; ``wait_tensor`` is counted with 0 bytes) per process group ("world",
or the mesh dimension "dp" / "tp"), and FSDP2's copy ops (namespace fsdp) separately. DDP's C++ reducer calls its
all-reduce from C++, so the harness registers a comm hook that records each bucket's ``buffer()`` size and then does
the default all-reduce (``allreduce_hook``: ``div_`` by the world, then ``dist.all_reduce``), which the mode sees as
``c10d.allreduce_``; ``ddp_buckets`` lists the buckets (bytes, parameter count) of that step.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import queue
import socket
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from tests.memory.truth import alloc_events, tensors_in

from benchmarks.distributed_cases import (
    CASES,
    DistCase,
    apply_strategy,
    build_model,
    dp_rank,
    loss_fn,
    make_inputs,
    make_mesh,
    make_optimizer,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "distributed_truth.json"
FAST_CASE = "mlp_fsdp_w2"
COMM_NS = ("c10d", "_c10d_functional")
MB = 1e6


# -- memory ----------------------------------------------------------------------------------------------------------

def _peak(events: list[tuple[int, int, int]]) -> tuple[int, int, int, int]:
    """tests/memory/truth.py's cpu_peak on recorded events: (peak above the start, end), and the same with a missed
    free repaired where the pointer is allocated again (a block freed on an unprofiled thread): (peak, end)."""
    current = peak = fixed = fixed_peak = 0
    mine: dict[int, int] = {}
    for _, size, ptr in events:
        if size < 0 and ptr not in mine:
            continue
        if size > 0:
            if ptr in mine:  # allocated again without a recorded free: the free happened on another thread
                fixed -= mine[ptr]
            mine[ptr] = size
        else:
            mine.pop(ptr, None)
        current += size
        fixed += size
        peak = max(peak, current)
        fixed_peak = max(fixed_peak, fixed)
    return peak, current, fixed_peak, fixed


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _storages(tensors: Any) -> dict[int, int]:
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            s = _local(t).untyped_storage()
            if s.nbytes():
                seen[s.data_ptr()] = s.nbytes()
    return seen


# -- collectives -----------------------------------------------------------------------------------------------------

def _nbytes(obj: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors_in(obj))


def _group_label(args: Any, labels: dict[str, str]) -> str:
    """The label of the op's process group: a c10d op is given the ProcessGroup as a ScriptObject, a functional one
    its group name."""
    import torch.distributed as dist

    for a in args:
        name = a if isinstance(a, str) else None
        if isinstance(a, torch.ScriptObject):
            try:
                name = dist.ProcessGroup.unbox(a).group_name
            except RuntimeError:  # another script class (ReduceOp)
                continue
        if name in labels:
            return labels[name]
    return "?"


class CommLog:
    """A TorchDispatchMode that counts collectives (c10d, _c10d_functional) and FSDP2's copy ops (fsdp)."""

    def __init__(self, labels: dict[str, str]) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        log = self
        self.labels = labels
        self.comm: dict[str, dict[str, Any]] = {}
        self.copies: dict[str, dict[str, Any]] = {}

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                ns = func.namespace
                if ns in COMM_NS:
                    log._record(func, args, kwargs)
                    return func(*args, **kwargs)
                out = func(*args, **kwargs)
                if ns == "fsdp":
                    d = log.copies.setdefault(str(func.overloadpacket), {"calls": 0, "out_bytes": 0})
                    d["calls"] += 1
                    d["out_bytes"] += _nbytes(out) or _nbytes(kwargs.get("out"))  # the out= variants
                return out

        self.mode = _Mode()

    def _record(self, func: Any, args: Any, kwargs: Any) -> None:
        name = str(func.overloadpacket)  # e.g. "c10d._allgather_base_", "_c10d_functional.all_reduce"
        op = name.split(".", 1)[1]
        if op.startswith("_wrap_tensor"):  # autograd bookkeeping, not a collective
            return
        if op == "wait_tensor":
            nbytes = 0
        elif "allgather" in op or "all_gather" in op:
            if op in ("_allgather_base_", "allgather_into_tensor_coalesced_"):
                nbytes = _nbytes(args[0])  # (output, input, ...)
            elif op.startswith("allgather"):
                nbytes = _nbytes(args[0])  # output lists
            else:  # functional: (input, group_size, group): output = group_size x input
                nbytes = _nbytes(args[0]) * int(args[1])
        elif "reduce_scatter" in op:
            nbytes = _nbytes(args[1]) if op.startswith(("_reduce_scatter_base_", "reduce_scatter_")) else \
                _nbytes(args[0])
        else:
            nbytes = _nbytes(args[0])
        group = _group_label([*args, *kwargs.values()], self.labels)
        d = self.comm.setdefault(name, {"calls": 0, "bytes": 0, "groups": {}})
        d["calls"] += 1
        d["bytes"] += nbytes
        g = d["groups"].setdefault(group, {"calls": 0, "bytes": 0})
        g["calls"] += 1
        g["bytes"] += nbytes


def _group_labels(case: DistCase, mesh: Any) -> dict[str, str]:
    import torch.distributed as dist

    labels = {dist.group.WORLD.group_name: "world"}  # type: ignore[union-attr]
    if mesh.mesh_dim_names:
        for dim in mesh.mesh_dim_names:
            labels[mesh[dim].get_group().group_name] = dim
    else:
        labels.setdefault(mesh.get_group().group_name, "world")
    return labels


# -- one rank --------------------------------------------------------------------------------------------------------

def _rank_main(rank: int, case: DistCase, steps: int, port: int) -> dict[str, Any]:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), KINETO_LOG_LEVEL="5")
    torch.set_num_threads(1)
    began = time.perf_counter()
    dist.init_process_group("gloo", rank=rank, world_size=case.world)
    try:
        mesh = make_mesh(case)
        model = apply_strategy(build_model(case), case, mesh)
        args, kwargs = make_inputs(case, dp_rank(case, mesh))
        opt = make_optimizer(case, model.parameters())
        buckets: list[tuple[int, int]] = []
        bucket_storages: dict[int, int] = {}
        if case.strategy == "ddp":
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            def counting_hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP checks an annotation if any
                buf = bucket.buffer()
                buckets.append((buf.numel() * buf.element_size(), len(bucket.parameters())))
                s = buf.untyped_storage()
                bucket_storages[s.data_ptr()] = s.nbytes()
                return allreduce_hook(state, bucket)

            model.register_comm_hook(None, counting_hook)  # type: ignore[operator]

        def step() -> None:
            out = model(*args, **kwargs)
            loss = loss_fn(out)
            loss.backward()
            opt.step()

        def alive() -> dict[int, int]:
            state = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            return {**_storages([*model.parameters(), *model.buffers(), *grads, *state, *args,
                                 *tensors_in(kwargs)]), **bucket_storages}

        warmup = 2 if case.strategy == "ddp" else 1  # DDP rebuilds its buckets at the second step's forward
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            # only the last warm-up step's buckets are DDP's steady ones: the first step's were freed when the
            # reducer rebuilt them (counting those too put a whole set of freed buckets into the next step's base)
            bucket_storages.clear()
            step()
        steady_buckets = dict(bucket_storages)
        from torch.profiler import ProfilerActivity, profile

        records = []
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            buckets.clear()
            before = alive()  # with DDP's steady bucket buffers (allocated once at the rebuild, kept)
            bucket_storages.clear()
            dist.barrier()
            t0 = time.perf_counter()
            # (experimental_config=_ExperimentalConfig(profile_all_threads=True) records no allocation at all)
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                step()
            seconds = time.perf_counter() - t0
            above, end, fixed_above, fixed_end = _peak(alloc_events(prof))
            after = alive()
            new_alive = sum(n for p, n in after.items() if p not in before)
            base = sum(before.values())
            if case.strategy == "ddp" and bucket_storages != steady_buckets:
                raise RuntimeError("DDP's bucket buffers changed after the warm-up: the base would be wrong")
            records.append({"base": base, "above": above, "peak": base + above, "end": end, "new_alive": new_alive,
                            "leak": end - new_alive, "peak_fixed": base + fixed_above,
                            "leak_fixed": fixed_end - new_alive, "step_s": round(seconds, 4)})
        # collectives: one more steady step under the dispatch mode (not profiled)
        opt.zero_grad(set_to_none=True)
        buckets.clear()
        log = CommLog(_group_labels(case, mesh))
        dist.barrier()
        with log.mode:
            step()
        params = [p for p in model.parameters()]
        result = {
            "rank": rank,
            "coordinate": list(mesh.get_coordinate() or []),
            "steps": records,
            "collectives": log.comm,
            "fsdp_copies": log.copies,
            "ddp_buckets": [{"bytes": b, "params": n} for b, n in buckets],
            "param_bytes_local": sum(_storages(params).values()),
            "param_numel_local": sum(_local(p).numel() for p in params),
            "wall_s": round(time.perf_counter() - began, 2),
        }
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()


def _worker(rank: int, case_name: str, steps: int, port: int, q: Any) -> None:
    try:
        import warnings

        warnings.filterwarnings("ignore")
        q.put(_rank_main(rank, CASES[case_name], steps, port))
    except BaseException as e:  # report, so that the parent does not wait for the timeout
        q.put({"rank": rank, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(case_name: str, steps: int = 5, timeout: float = 300.0) -> dict[str, Any]:
    """One launch of ``case_name``: its world of spawned processes; {"ranks": [per-rank dicts], "wall_s", "error"}."""
    import torch.multiprocessing as mp

    case = CASES[case_name]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(r, case_name, steps, port, q), daemon=True) for r in range(case.world)]
    for p in procs:
        p.start()
    results: list[dict[str, Any]] = []
    error = ""
    deadline = t0 + timeout
    while len(results) < case.world:
        try:
            r = q.get(timeout=max(0.1, min(5.0, deadline - time.perf_counter())))
        except queue.Empty:
            if time.perf_counter() > deadline:
                error = f"timeout after {timeout:.0f} s ({len(results)}/{case.world} ranks reported)"
                break
            if any(p.exitcode not in (None, 0) for p in procs) and not any(p.is_alive() for p in procs):
                error = "ranks exited without reporting: " + ", ".join(str(p.exitcode) for p in procs)
                break
            continue
        results.append(r)
        if "error" in r and not error:
            error = f"rank {r['rank']}: {r['error']}"
            deadline = min(deadline, time.perf_counter() + 20)  # the others may hang in a collective
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.perf_counter()) if not error else 5.0)
    for p in procs:  # stragglers
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
    return {"ranks": sorted(results, key=lambda r: r["rank"]), "wall_s": round(time.perf_counter() - t0, 1),
            "error": error}


# -- merge -----------------------------------------------------------------------------------------------------------

def _stats(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": int(statistics.median(values)), "max": max(values)}


def run_case(case_name: str, steps: int = 5, repeats: int = 1, timeout: float = 300.0) -> dict[str, Any]:
    """``repeats`` launches of a case, merged per rank: peaks over all steps and repeats (min, median, max), and over
    the clean steps (no missed free); the collectives of the first launch (they must agree across launches)."""
    case = CASES[case_name]
    launches = [launch(case_name, steps, timeout) for _ in range(repeats)]
    ranks: dict[int, dict[str, Any]] = {}
    collectives_agree = True
    for li, run in enumerate(launches):
        for r in run["ranks"]:
            if "error" in r:
                continue
            m = ranks.setdefault(r["rank"], {"rank": r["rank"], "coordinate": r["coordinate"], "peaks": [],
                                             "clean_peaks": [], "bases": [], "leaks": [], "peaks_fixed": [],
                                             "leaks_fixed": [],
                                             "step_s": [], "collectives": r["collectives"],
                                             "fsdp_copies": r["fsdp_copies"], "ddp_buckets": r["ddp_buckets"],
                                             "param_bytes_local": r["param_bytes_local"],
                                             "param_numel_local": r["param_numel_local"], "wall_s": []})
            if li and (r["collectives"] != m["collectives"] or r["ddp_buckets"] != m["ddp_buckets"]):
                collectives_agree = False
            for s in r["steps"]:
                m["peaks"].append(s["peak"])
                m["bases"].append(s["base"])
                m["leaks"].append(s["leak"])
                m["step_s"].append(s["step_s"])
                m["peaks_fixed"].append(s["peak_fixed"])
                m["leaks_fixed"].append(s["leak_fixed"])
                if not s["leak"]:
                    m["clean_peaks"].append(s["peak"])
            m["wall_s"].append(r["wall_s"])
    per_rank = []
    for m in (ranks[k] for k in sorted(ranks)):
        m.update({k: v for k, v in _stats(m["peaks"]).items()})
        m.update({f"clean_{k}": v for k, v in _stats(m["clean_peaks"]).items()})
        m["base_distinct"] = sorted(set(m.pop("bases")))
        m["step_s_median"] = round(statistics.median(m["step_s"]), 4) if m["step_s"] else None
        per_rank.append(m)
    return {"case": case.as_dict(), "steps": steps, "repeats": repeats, "ranks": per_rank,
            "launch_wall_s": [run["wall_s"] for run in launches],
            "errors": [run["error"] for run in launches if run["error"]],
            "rank_errors": [{"rank": r["rank"], "error": r["error"], "traceback": r["traceback"]}
                            for run in launches for r in run["ranks"] if "error" in r][:2],
            "collectives_agree_across_repeats": collectives_agree}


def truth(case_name: str = FAST_CASE, steps: int = 3) -> dict[str, Any]:
    """The truth of one case from one launch (for tests): run_case(case_name, steps, repeats=1). The fast case
    (mlp_fsdp_w2, 2 processes) takes about 15-25 s wall on a 2-core machine."""
    return run_case(case_name, steps=steps, repeats=1, timeout=120.0)


# -- table -----------------------------------------------------------------------------------------------------------

def _short(op: str) -> str:
    return {"c10d._allgather_base_": "AG", "c10d._reduce_scatter_base_": "RS", "c10d.allreduce_": "AR",
            "c10d.broadcast_": "BC", "_c10d_functional.all_reduce": "fAR",
            "_c10d_functional.all_gather_into_tensor": "fAG", "_c10d_functional.reduce_scatter_tensor": "fRS",
            "_c10d_functional.wait_tensor": "wait"}.get(op, op)


def _collective_text(coll: dict[str, Any]) -> str:
    parts = []
    for op, d in sorted(coll.items()):
        if op.endswith("wait_tensor"):
            continue
        groups = "/".join(sorted(g for g in d["groups"] if g != "world"))
        parts.append(f"{_short(op)}{'@' + groups if groups else ''} {d['calls']}x {d['bytes'] / MB:.2f}MB")
    return ", ".join(parts)


def table(results: dict[str, Any]) -> str:
    lines = [f"{'case':26s} {'strategy':14s} {'w':>1s} {'ckpt':7s} {'rk':>2s} {'min MB':>8s} {'med MB':>8s} "
             f"{'max MB':>8s} {'clean':>5s} {'clean MB':>8s} {'wall s':>7s}  collectives per step (calls, bytes)"]
    for name, r in results.items():
        c = r["case"]
        if not r["ranks"]:
            lines.append(f"{name:26s} {c['strategy']:14s} {c['world']:1d} {c['ckpt'] or '-':7s} ERROR "
                         f"{'; '.join(r['errors'])[:150]}")
            continue
        for m in r["ranks"]:
            lines.append(
                f"{name:26s} {c['strategy']:14s} {c['world']:1d} {c['ckpt'] or '-':7s} {m['rank']:2d} "
                f"{m['min'] / MB:8.3f} {m['median'] / MB:8.3f} {m['max'] / MB:8.3f} "
                f"{len(m['clean_peaks']):2d}/{len(m['peaks']):<2d} "
                f"{m['clean_median'] / MB if m['clean_median'] else float('nan'):8.3f} {sum(r['launch_wall_s']):7.1f}  "
                f"{_collective_text(m['collectives'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma list of case names or fnmatch patterns")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per launch")
    ap.add_argument("--out", default=str(OUT), help="the JSON to write ('' for none)")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    if a.list:
        for c in CASES.values():
            print(f"{c.name:26s} {c.model:6s} {c.strategy:15s} world {c.world} ckpt {c.ckpt or '-':7s} {c.dtype}")
        return
    pats = [p for p in a.only.split(",") if p]
    names = [n for n in CASES if not pats or any(fnmatch.fnmatch(n, p) or p == n for p in pats)]
    if not names:
        sys.exit(f"no case matches {a.only!r}")
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    for n in names:
        results[n] = run_case(n, a.steps, a.repeats, a.timeout)
        print(table({n: results[n]}).split("\n", 1)[1], flush=True)
    meta = {"torch": torch.__version__, "cpus": os.cpu_count(), "steps": a.steps, "repeats": a.repeats,
            "backend": "gloo", "threads_per_rank": 1, "total_s": round(time.perf_counter() - t0, 1)}
    if a.out:
        path = Path(a.out)
        old = json.loads(path.read_text())["cases"] if path.exists() and pats else {}
        path.write_text(json.dumps({"meta": meta, "cases": {**old, **results}}, indent=1) + "\n")
    print()
    print(table(results))
    print(f"total {meta['total_s']} s")


if __name__ == "__main__":
    main()
