"""The local CPU as a :class:`~torchcost.timing.hardware.Hardware`, measured by short micro-benchmarks at the thread
count in use (``torch.get_num_threads()``):

* matrix FLOP/s: a float32 matmul of two N x N matrices (N = 1024 x threads^(1/3), so each call takes a few tens of
  milliseconds), the best of several calls: 2 N^3 FLOPs over its time;
* memory bandwidth: ``copy_`` between two 128 MiB float32 tensors (far larger than any cache), the best of several
  calls: 2 x 128 MiB (read + written) over its time;
* vector FLOP/s: a mix of element-wise ops, layer norm and softmax on 256 x 256 tensors (held in L2), its FLOPs as
  torchcost prices them over its best time. Transcendental functions cost a CPU many instructions per FLOP counted,
  so this is far below the matmul's FMA rate;
* call overhead: the median time of an ``add`` of two 8-element tensors (dispatch, no work).

Being measured, these figures are already achievable: the efficiencies are 1. The figures are cached in this process
and in ``cpu-peaks.json`` among torchcost's files (store.py: ``$TORCHCOST_CACHE_DIR``, else
``$XDG_CACHE_HOME/torchcost``, default ``~/.cache/torchcost``), keyed by CPU model, thread count and torch version;
measuring takes about a second.
"""

from __future__ import annotations

import time
from types import MappingProxyType

import torch

from torchcost.store import cpu_name, read_json, write_json
from torchcost.timing.hardware import Hardware

__all__ = ["cpu_key", "cpu_name", "measure_cpu"]

_MEMO: dict[str, Hardware] = {}
_COPY_BYTES = 128 * 2**20


def cpu_key(threads: int | None = None) -> str:
    threads = threads or torch.get_num_threads()
    return f"{cpu_name()}|{threads} threads|torch {torch.__version__}"


_FILE = "cpu-peaks.json"  # (among torchcost's files: store.py)


def _best(fn: object, repeats: int) -> float:
    assert callable(fn)
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class _Pointwise(torch.nn.Module):
    """The vector units' workload: the element-wise ops, normalisations and softmax models run most, on a tensor
    that stays in the L2 cache (256 KiB), so their FLOPs (as torchcost prices them) and not memory bound them."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        F = torch.nn.functional
        z = F.relu(x + y) * y
        z = F.gelu(z) + torch.tanh(z) + torch.sigmoid(x) + torch.exp(y.clamp(max=1.0))
        z = F.layer_norm(z, (256,)) + F.softmax(x, dim=-1)
        return F.silu(z)


def _vector_flops() -> float:
    """FLOP/s of _Pointwise's forward: its FLOPs by torchcost's own formulas over its best time."""
    from torchcost.api import analyze

    module = _Pointwise()
    x, y = torch.randn(256, 256), torch.randn(256, 256)
    flops = analyze(module, x, y, memory=False).flops
    with torch.no_grad():
        return flops / _best(lambda: module(x, y), 20)


def _call_overhead() -> float:
    """Seconds of one call of an op on a tiny tensor (dispatch and launch, no work): the median of 200 x 20 calls."""
    a, b = torch.ones(8), torch.ones(8)
    times = []
    with torch.no_grad():
        for _ in range(200):
            start = time.perf_counter()
            for _ in range(20):
                torch.add(a, b)
            times.append((time.perf_counter() - start) / 20)
    times.sort()
    return times[len(times) // 2]


def _measure(threads: int) -> tuple[float, float, float, float]:
    """(matmul FLOP/s, copy bytes/s, vector FLOP/s, per-call seconds) measured now."""
    n = int(1024 * threads ** (1 / 3)) // 64 * 64
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    with torch.no_grad():
        flops = 2 * n**3 / _best(lambda: torch.mm(a, b, out=out), 5)
        src = torch.ones(_COPY_BYTES // 4)
        dst = torch.empty_like(src)
        bandwidth = 2 * _COPY_BYTES / _best(lambda: dst.copy_(src), 5)
    return flops, bandwidth, _vector_flops(), _call_overhead()


def _hardware(flops: float, bandwidth: float, vector: float, overhead: float, threads: int) -> Hardware:
    name = f"{cpu_name()}, {threads} thread{'s' if threads > 1 else ''}"
    return Hardware(name, MappingProxyType({"float32": flops}), vector, bandwidth, key="cpu", matmul_efficiency=1.0,
                    vector_efficiency=1.0, memory_efficiency=1.0, call_overhead=overhead,
                    source=f"measured here at {threads} threads: float32 matmul, 128 MiB copy_, element-wise ops "
                           f"in cache, a tiny op's call (torch {torch.__version__}; timing/cpu.py)",
                    efficiency_source="measured (1.0: the peaks are what kernels reached here)")


def measure_cpu(threads: int | None = None, *, refresh: bool = False) -> Hardware:
    """This machine's CPU at ``threads`` (default: torch's current count), from the caches unless ``refresh``."""
    threads = threads or torch.get_num_threads()
    key = cpu_key(threads)
    if not refresh and key in _MEMO:
        return _MEMO[key]
    stored = read_json(_FILE)
    entry = stored.get(key) if not refresh and isinstance(stored, dict) else None
    if isinstance(entry, dict) and all(entry.get(k, 0) > 0 for k in ("flops", "bandwidth", "vector", "overhead")):
        hw = _hardware(float(entry["flops"]), float(entry["bandwidth"]), float(entry["vector"]),
                       float(entry["overhead"]), threads)
    else:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            flops, bandwidth, vector, overhead = _measure(threads)
        finally:
            torch.set_num_threads(previous)
        hw = _hardware(flops, bandwidth, vector, overhead, threads)
        stored = stored if isinstance(stored, dict) else {}
        stored[key] = {"flops": flops, "bandwidth": bandwidth, "vector": vector, "overhead": overhead,
                       "measured": time.time()}
        write_json(_FILE, stored)  # (not written: the in-process cache still holds it)
    _MEMO[key] = hw
    return hw
