"""Kernel memory measured: run an op's real CPU kernel once under the allocator and keep what it held inside itself.

The workspace table (collect/workspace.py) is exact where it was derived: one CPU (its ISA flags), one oneDNN. Where
it does not know a call (oneDNN's f32 groups = 1 convolutions, the LSTM's scratch, bf16 1x1 and backward
convolutions, any call on another CPU), the :class:`~torchcost.collect.memory.MemoryTracker` asks this module
instead. A **probe** builds real CPU tensors with the call's shapes, strides and dtypes (every float 0.5, every
other element 0; the ops whose inputs depend on values have a builder: ``mkldnn_rnn_layer_backward`` gets its
``workspace`` and outputs from a real ``mkldnn_rnn_layer`` forward run first), runs the op once under the CPU
allocator (a ``torch.autograd.profiler`` session with ``profile_memory=True``) and returns the most bytes alive
inside the op beyond what was alive before it, less the bytes of its outputs still alive when it returns: the same
meaning as a table entry.

Probes are asked for while the run goes on (:func:`ask`, which keeps the call's specs, never its tensors) and run
after it (:func:`measure`, one profiler session for all of them, each delimited by a ``record_function``), so the
probes' allocations never reach the run's own allocator measurement, its tensors or its state. They run with every
dispatch and torch-function mode off and autocast off, in the call's own grad mode, draw no random numbers (the
default generators are never touched), and never see the run's (possibly fake) tensors. Results are cached for the
process by (op, every argument's shape, stride and dtype, the other arguments, ``torch.get_num_threads()``, whether
mkldnn is enabled, grad mode), and kept for later processes on the same machine (:func:`machine`) in a file among
torchcost's (store.py; :func:`stored`, ``TORCHCOST_CACHE_DIR=off`` keeps none). A probe that fails, or that would
build more than :data:`MAX_PROBE_BYTES` (or an eighth of the CPU's available memory), gives nothing: the table's
figure (or 0) stands; so does every probe while the caller runs a profiler (a second session would end theirs).
``kernel_memory("table")`` turns probing off.
docs/conventions.md, "Memory".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.autograd.profiler
from torch.utils import _pytree as pytree

from torchcost.collect.allocator import allocations, running_peak

__all__ = [
    "BUILDERS",
    "CACHE",
    "KERNEL_MEMORY",
    "MAX_PROBE_BYTES",
    "PROBED",
    "PROGRESS",
    "KernelMemory",
    "Probe",
    "ask",
    "blas_layout",
    "cached",
    "get_kernel_memory",
    "kernel_memory",
    "measure",
    "runs",
    "set_kernel_memory",
    "strided_elements",
]

KernelMemory = Literal["table", "auto", "measure"]
KERNEL_MEMORY: tuple[KernelMemory, ...] = ("auto", "measure", "table")
_policy: list[KernelMemory] = ["auto"]

MAX_PROBE_BYTES = 256 * 2**20  # the most bytes a probe may build (inputs and outputs); an eighth of MemAvailable too
_MATMULS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})
# the ops a probe may measure: oneDNN kernels whose scratch and blocked copies depend on the CPU and the library
# (and the CPU flash attention, whose backward copies a grad_out that is not in its [B, L, H, E] layout and keeps
# per-thread score blocks)
PROBED = frozenset({"aten::convolution", "aten::convolution_backward", "aten::mkldnn_rnn_layer",
                    "aten::mkldnn_rnn_layer_backward", "aten::_scaled_dot_product_flash_attention_for_cpu",
                    "aten::_scaled_dot_product_flash_attention_for_cpu_backward", *_MATMULS})
_MARK = "torchcost.probe."

CacheKey = tuple[Any, ...]
CACHE: dict[CacheKey, int] = {}  # probe key -> bytes measured (only successful probes are kept)
_RUNS = [0]  # probes run in this process (tests read it through runs())
PROGRESS = [0, 0]  # while measure() runs: probes measured, probes to measure (read by a progress display)


def get_kernel_memory() -> KernelMemory:
    """The process-wide policy new analyses take: "auto" (default: the table where it claims a call, a probe
    where it does not), "measure" (a probe for every call of :data:`PROBED`, the table for the rest) or "table"
    (no probe: the table alone, 0 where it does not claim a call)."""
    return _policy[0]


def set_kernel_memory(policy: KernelMemory) -> KernelMemory:
    """Set the policy of :func:`get_kernel_memory`; returns the previous one."""
    if policy not in KERNEL_MEMORY:
        raise ValueError(f"kernel memory policy must be one of {', '.join(KERNEL_MEMORY)}; got {policy!r}")
    before = _policy[0]
    _policy[0] = policy
    return before


@contextlib.contextmanager
def kernel_memory(policy: KernelMemory) -> Iterator[None]:
    """``with kernel_memory("table"): analyze(...)``: the policy for the analyses inside the block."""
    before = set_kernel_memory(policy)
    try:
        yield
    finally:
        set_kernel_memory(before)


def runs() -> int:
    """How many probes have run in this process (cache hits excluded)."""
    return _RUNS[0]


def strided_elements(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements of the smallest storage that holds a tensor of these sizes and strides from offset 0 (what
    ``torch.empty_strided`` makes)."""
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((s - 1) * st for s, st in zip(shape, stride))


@dataclass(frozen=True)
class _Spec:
    """A tensor argument: what the probe needs to build its real CPU twin."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    @property
    def elements(self) -> int:
        """Elements of the smallest storage that holds the strided tensor."""
        return strided_elements(self.shape, self.stride)

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize


@dataclass(frozen=True)
class Probe:
    """One call to measure: the op, its arguments with every tensor replaced by a :class:`_Spec`, and the cache key."""

    key: CacheKey
    func: Any
    name: str
    spec: Any  # pytree.TreeSpec of (args, kwargs)
    leaves: tuple[Any, ...]
    mkldnn: bool
    grad: bool  # grad mode of the call: some kernels look at it (mkldnn_rnn_layer keeps its workspace only with grad)


_LEAVES = (int, float, bool, str, type(None), torch.dtype, torch.layout, torch.memory_format)
_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int8,
                     torch.int16, torch.int32, torch.int64, torch.bool})


def _leaf(value: Any) -> Any:
    """A hashable stand-in for one argument leaf; raises TypeError for anything a probe cannot rebuild."""
    if isinstance(value, torch.Tensor):
        if (value.layout != torch.strided or value.is_sparse or value.is_nested or value.is_quantized
                or value.device.type not in ("cpu", "meta") or value.dtype not in _DTYPES):
            raise TypeError("not a plain CPU or meta tensor")
        return _Spec(tuple(map(int, value.shape)), tuple(map(int, value.stride())), value.dtype)
    if isinstance(value, torch.device):
        return torch.device("cpu")
    if isinstance(value, torch.SymInt):
        return int(value)
    if isinstance(value, _LEAVES):
        return value
    raise TypeError(f"cannot rebuild a {type(value).__name__} argument")


def _wanted(name: str, leaves: tuple[Any, ...]) -> bool:
    """Whether the call is one to probe. A matmul is not when torch's CPU code is known to allocate nothing inside
    it (:func:`_native_matmul`); every other call of :data:`PROBED` is."""
    if name not in PROBED:
        return False
    return name not in _MATMULS or not _native_matmul(name, leaves)


# the tensor arguments of each matmul (self or a bias first where the op takes one); the matrices are the last two
_OPERANDS = {"aten::mm": 2, "aten::bmm": 2, "aten::addmm": 3, "aten::baddbmm": 3}
_LOWER = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}


def _native_matmul(name: str, leaves: tuple[Any, ...]) -> bool:
    """Whether a CPU matmul allocates nothing inside itself: torch's own code (aten's LinearAlgebra.cpp,
    ``addmm_impl_cpu_`` and ``bmm_out_or_baddbmm_``) hands it to BLAS or its own loops without copying an operand,
    and oneDNN, whose matmul keeps scratch and blocked copies, cannot take it.

    - A matrix operand (each batch item of a bmm) is copied (``clone``) unless it is row- or column-major with a
      leading dimension BLAS takes: unit stride along one dimension and, along the other, a stride at least the
      first's size (torch's ``lda >= max(1, ...)`` test). So a call with such an operand is probed, whatever its dtype.
    - float32 goes to BLAS, as before (oneDNN takes it only at a float32 matmul precision below "highest", which
      torchcost does not follow).
    - bfloat16 and float16 go to oneDNN only where torch's device check for them passes (AVX512 or AMX for bf16);
      elsewhere to torch's own kernels (their accumulators are plain C++ buffers, not the allocator's). Measured on
      an AVX2 CPU: 288 bf16/fp16 mm, addmm, bmm, baddbmm calls in both layouts, gemv shapes included, held 0 bytes;
      an operand of stride 2 held its clone.
    """
    specs = [v for v in leaves if isinstance(v, _Spec)]
    if len(specs) != _OPERANDS[name] or not all(blas_layout(m.shape, m.stride) for m in specs[-2:]):
        return False
    dtype = specs[-1].dtype
    if dtype == torch.float32:
        return True
    check = _LOWER.get(dtype)
    if check is None:
        return False
    mkldnn = torch.backends.mkldnn
    return not (mkldnn.is_available() and mkldnn.enabled and getattr(torch.ops.mkldnn, check)())


def blas_layout(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether a matrix (the last two dimensions of a batch) is one BLAS takes as it is: row- or column-major with a
    usable leading dimension (aten's ``addmm_impl_cpu_``, where a size-1 dimension's stride counts as any other's);
    aten clones any other operand inside the matmul."""
    if len(shape) < 2:
        return False
    (rows, cols), (down, across) = shape[-2:], stride[-2:]
    return (across == 1 and down >= max(1, cols)) or (down == 1 and across >= max(1, rows))


def _cap() -> int:
    from torchcost.inputs import available_memory  # late: inputs imports the collectors' floor lazily too

    available = available_memory(torch.device("cpu"))
    return MAX_PROBE_BYTES if available is None else min(MAX_PROBE_BYTES, available // 8)


def ask(name: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
        out: Any) -> tuple[Probe | None, bool]:
    """The probe for one call of ``func`` (``name``: its "aten::" key), or None when the call is not one to probe
    (not in :data:`PROBED`, an f32 matmul, an argument a probe cannot rebuild, more than the size cap to build); and
    whether that answer is the call's for good: False when the probe was refused for the size cap, which follows the
    memory free now. Keeps the arguments' specs only, so the run's tensors live and die as they would."""
    if name not in PROBED:
        return None, True
    try:
        flat, spec = pytree.tree_flatten((args, kwargs))
        leaves = tuple(_leaf(v) for v in flat)
    except (TypeError, RuntimeError, NotImplementedError):
        return None, True
    if not _wanted(name, leaves):
        return None, True
    outs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    need = sum(v.nbytes for v in leaves if isinstance(v, _Spec)) + sum(t.numel() * t.element_size() for t in outs)
    if need > _cap():
        return None, False
    mkldnn = bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
    grad = torch.is_grad_enabled()
    key = (str(func), str(spec), leaves, torch.get_num_threads(), mkldnn, grad)
    return Probe(key, func, name, spec, leaves, mkldnn, grad), True


def cached(probe: Probe) -> int | None:
    """The bytes measured for this call before, in this process or by an earlier one on this machine (the store:
    :func:`stored`), or None."""
    found = CACHE.get(probe.key)
    if found is None:
        entries = stored()
        text = _text(probe.key) if entries else None  # (no store, or an empty one: no key to write)
        found = entries.get(text) if text is not None else None
        if found is not None:
            CACHE[probe.key] = found
    return found


# -- the store: probes measured by earlier processes ------------------------------------------------------------------

_STORE_FORMAT = 1  # raised when what a probe measures, or how its key is written, changes
_STORE_MAX = 50_000  # entries a store file keeps (about 50 bytes each); past it, new figures stay in the process
_STORES: dict[str, dict[str, int]] = {}  # cache folder -> its store's entries, read once a process
_MACHINE: list[tuple[dict[str, str], str]] = []  # machine() and its store file's name, worked out once a process


def machine() -> dict[str, str]:
    """What a probe's figure depends on beyond its call: the CPU (model, ISA level torch dispatches to, cores),
    torch's build (its version and the whole build configuration, oneDNN's version among it), oneDNN's and ATen's
    environment variables, and the probes' own format. A store file holds the figures of one such machine."""
    return _machine()[0]


def _machine() -> tuple[dict[str, str], str]:
    """:func:`machine`, and the name of its store file: ``probes-<hash of the machine>.json``."""
    if not _MACHINE:
        from torchcost.store import cpu_name

        env = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(("ONEDNN_", "DNNL_", "ATEN_CPU_")))
        found = {"cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
                 "cores": str(os.cpu_count()), "torch": torch.__version__,
                 "build": hashlib.sha256(torch.__config__.show().encode()).hexdigest()[:16], "env": " ".join(env),
                 "format": str(_STORE_FORMAT)}
        digest = hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:16]
        _MACHINE.append((found, f"probes-{digest}.json"))
    return _MACHINE[0]


def _read_store() -> dict[str, int]:
    """This machine's store file's entries as they are now ({} where there is none, or it is not this machine's)."""
    from torchcost.store import read_json

    mine, name = _machine()
    data = read_json(name)
    entries = data.get("probes") if isinstance(data, dict) and data.get("machine") == mine else None
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if isinstance(k, str) and type(v) is int and v >= 0}


def stored() -> dict[str, int]:
    """The figures earlier processes measured on this machine ({key text: bytes}), read once a process (per cache
    folder); empty when torchcost keeps no files (``TORCHCOST_CACHE_DIR=off``, store.py)."""
    from torchcost.store import cache_dir

    folder = cache_dir()
    if folder is None:
        return {}
    entries = _STORES.get(str(folder))
    if entries is None:
        entries = _STORES[str(folder)] = _read_store()
    return entries


def _text(key: CacheKey) -> str | None:
    """A probe key as the store writes it: the SHA-256 of its repr (op name, argument tree, specs and plain values,
    thread count, mkldnn and grad mode; 32 hex digits, so a file of many figures stays small), or None where the
    repr would name an object's address (not the same in another process)."""
    text = repr(key)
    if " at 0x" in text or "object at" in text:
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _keep(new: dict[CacheKey, int]) -> None:
    """Add figures just measured to this machine's store (the file as it is now, merged: another process may have
    written since this one read it)."""
    from torchcost.store import cache_dir, write_json

    folder = cache_dir()
    if folder is None or not new:
        return
    entries = _read_store()
    for key, value in new.items():
        text = _text(key)
        if text is not None and len(entries) < _STORE_MAX:
            entries[text] = value
    _STORES[str(folder)] = entries
    mine, name = _machine()
    write_json(name, {"machine": mine, "probes": entries})


# -- running probes --------------------------------------------------------------------------------------------------


def _build(spec: _Spec) -> torch.Tensor:
    """A real CPU tensor with the spec's shape, strides and dtype, every element 0.5 for floats, 0 else: the kernels
    probed allocate by shape, stride and dtype, never by value, and a constant fill costs a tenth of a random one
    (resnet50's 23 probes at batch 1: 98 ms of uniform_ in a first analysis). Not left uninitialised: whatever the
    memory held (NaNs, subnormals) could send a kernel down a slow path."""
    base = torch.empty(spec.elements, dtype=spec.dtype)
    if spec.dtype.is_floating_point:
        base.fill_(0.5)
    else:
        base.zero_()
    return base.as_strided(spec.shape, spec.stride)


def _arguments(probe: Probe) -> tuple[tuple[Any, ...], dict[str, Any]]:
    leaves = [_build(v) if isinstance(v, _Spec) else v for v in probe.leaves]
    args, kwargs = pytree.tree_unflatten(leaves, probe.spec)
    return tuple(args), dict(kwargs)


def _rnn_backward(names: list[str], args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """mkldnn_rnn_layer_backward reads the forward's workspace (oneDNN's, sized by the real kernel; empty on a
    twin) and outputs: run the training forward on the same inputs first and pass what it returned."""
    b = dict(zip(names, args))
    b.update(kwargs)
    with torch.enable_grad():  # the kernel returns its workspace only in grad mode (backward runs without it)
        output, hy, cy, workspace = torch.ops.aten.mkldnn_rnn_layer.default(
            b["input"], b["weight1"], b["weight2"], b["weight3"], b["weight4"], b["hx_"], b["cx_tmp"], b["reverse"],
            b["batch_sizes"], b["mode"], b["hidden_size"], b["num_layers"], b["has_biases"], b["bidirectional"],
            b["batch_first"], True)
    b.update(output=output, hy_=hy, cy_=cy, workspace=workspace, train=True)
    return tuple(b[n] for n in names), {}


# op -> fn(schema argument names, args, kwargs): the real arguments the call needs, from the spec-built ones
# (run before the measured window)
Builder = Callable[[list[str], tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]
BUILDERS: dict[str, Builder] = {
    "aten::mkldnn_rnn_layer_backward": _rnn_backward,
}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Kineto prints its start and stop lines (and a failed GPU query) on file descriptor 2: send them nowhere for
    the moment a session starts or stops."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    """Real kernels only: no dispatch mode (a fake mode, the caller's), no torch-function mode, no autocast,
    inference mode off, warnings silenced. Grad mode stays the call's own (:func:`_run_one`; the probe's tensors do
    not require grad, so nothing is recorded). The RNG is not touched: the values come from a generator of the
    probes' own and the probed ops draw nothing (forking the default generator would rewind another thread's
    draws)."""
    from torch.utils._python_dispatch import _disable_current_modes

    with contextlib.ExitStack() as stack:
        stack.enter_context(_disable_current_modes())
        stack.enter_context(torch._C.DisableTorchFunction())
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.autocast("cpu", enabled=False))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        yield


def _peak_minus_kept(root: Any, kept: int) -> int:
    """The running peak of the CPU allocations under ``root`` (an event of the tree), less ``kept`` bytes
    (collect/allocator.py: a free of a block allocated before the window is left out)."""
    return max(0, running_peak(allocations([root], "cpu")) - kept)


def _kept_bytes(out: Any, inputs: list[torch.Tensor]) -> int:
    """Bytes of the op's output storages that are not its inputs' (an in-place or view result adds nothing)."""
    theirs = {t.untyped_storage().data_ptr() for t in inputs}
    mine: dict[int, int] = {}
    for t in pytree.tree_leaves(out):
        if isinstance(t, torch.Tensor) and t.layout == torch.strided:
            s = t.untyped_storage()
            if s.data_ptr() not in theirs:
                mine[s.data_ptr()] = s.nbytes()
    return sum(mine.values())


def measure(probes: list[Probe]) -> dict[CacheKey, int]:
    """Run the probes not cached yet, in one profiler session, and cache what they measured; returns the bytes of
    every probe that has a figure (cached or new). Nothing is measured while the caller profiles already (a second
    session would end theirs) or on a machine without the profiler's memory events: those probes get no figure."""
    found = {p.key: figure for p in probes if (figure := cached(p)) is not None}
    todo = list({p.key: p for p in probes if p.key not in found}.values())
    if not todo or torch.autograd.profiler._is_profiler_enabled:
        return found
    kept: dict[str, tuple[CacheKey, int]] = {}
    new: dict[CacheKey, int] = {}
    results: Any = None
    with contextlib.suppress(Exception), _isolated():
        prof = torch.autograd.profiler.profile(use_cpu=True, profile_memory=True)
        with _quiet_stderr():
            prof.__enter__()
        try:
            PROGRESS[:] = [0, len(todo)]
            for i, probe in enumerate(todo):
                with contextlib.suppress(Exception):
                    kept.update(_run_one(probe, f"{_MARK}{i}"))
                PROGRESS[0] = i + 1
        finally:
            PROGRESS[:] = [0, 0]
            with _quiet_stderr():
                prof.__exit__(None, None, None)
        results = prof.kineto_results
    if results is None:
        return found
    with contextlib.suppress(Exception):
        for root in _marked(results.experimental_event_tree()):
            entry = kept.get(root.name)
            if entry is not None:
                CACHE[entry[0]] = found[entry[0]] = new[entry[0]] = _peak_minus_kept(root, entry[1])
    _keep(new)
    return found


def _run_one(probe: Probe, mark: str) -> dict[str, tuple[CacheKey, int]]:
    """Build the probe's arguments (outside the window), run the op once inside ``record_function(mark)``, and
    return {mark: (its key, its output bytes kept)}."""
    _RUNS[0] += 1
    with torch.backends.mkldnn.flags(enabled=probe.mkldnn), torch.set_grad_enabled(probe.grad):
        args, kwargs = _arguments(probe)
        builder = BUILDERS.get(probe.name)
        if builder is not None:
            args, kwargs = builder([a.name for a in probe.func._schema.arguments], args, kwargs)
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        with torch.autograd.profiler.record_function(mark):
            out = probe.func(*args, **kwargs)
        kept = _kept_bytes(out, inputs)
        del out, args, kwargs, inputs
    return {mark: (probe.key, kept)}


def _marked(roots: list[Any]) -> Iterator[Any]:
    """The probes' record_function events of an event tree (top-level, or anywhere below)."""
    stack = list(roots)
    while stack:
        ev = stack.pop()
        if ev.name.startswith(_MARK):
            yield ev
        else:
            stack.extend(ev.children)
