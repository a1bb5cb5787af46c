"""Named hardware for the time prediction: dense peak FLOP/s per dtype, memory bandwidth and size, interconnect, each
with its source, and the "achievable" efficiencies the roofline applies (docs/conventions.md, "Time").

Every figure is a DENSE one. NVIDIA's datasheets print the tensor-core rates with 2:4 structured sparsity, marked
with an asterisk ("1,979 teraFLOPS*" for the H100 SXM's BF16); the dense rate, which a dense matmul can reach, is
half of it (989.4). The table holds the dense rate; tests/timing/test_hardware.py derives it from the starred figure.

Peaks are keyed by dtype name: "float32" (the FP32 rate without tensor cores, which PyTorch's matrix products use by
default: ``torch.get_float32_matmul_precision() == "highest"``), "tf32", "bfloat16", "float16", "float8" (where the
hardware has it). ``vector_flops`` is the FP32 rate of the vector (non-tensor) units, used for every FLOP that is
not a multiply-accumulate of a matrix product, convolution or attention. ``interconnect_bandwidth`` is per
direction (half of NVIDIA's bidirectional NVLink figure), what one rank's ring collective can send.

"cpu" is this machine, measured (timing/cpu.py): a large float32 matmul for the peak, a large copy for the bandwidth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from torchcost.errors import InputError

__all__ = ["DTYPE_KEYS", "HARDWARE", "Hardware", "dtype_key", "get_hardware", "hardware_key", "hardware_names"]

DTYPE_KEYS = ("float32", "tf32", "bfloat16", "float16", "float8")

# How much of the dense peak a good kernel reaches (assumed defaults, override per run with dataclasses.replace or
# Hardware.with_efficiency): large bf16 GEMMs reach about 0.8 of the dense peak on H100 SXM (795 of 989 TFLOP/s,
# the measured ceiling cited in issue 13); memory-bound kernels about 0.9 of HBM bandwidth, 0.85 of GDDR.
MATMUL_EFFICIENCY = 0.80
VECTOR_EFFICIENCY = 0.80
HBM_EFFICIENCY = 0.90
GDDR_EFFICIENCY = 0.85

T = 1e12  # TFLOP/s
GB = 1e9  # GB/s (decimal, as datasheets print them)
GIB = 2**30


def _peaks(**values: float) -> Mapping[str, float]:
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class Hardware:
    """One device for the roofline. Build your own (``Hardware("my-gpu", peak_flops={"bfloat16": 500e12, ...},
    vector_flops=..., memory_bandwidth=...)``) or change a shipped one with :meth:`with_efficiency` /
    ``dataclasses.replace``.

    ``peak_flops``: dense FLOP/s of matrix products per dtype key (DTYPE_KEYS); ``vector_flops``: FP32 FLOP/s of the
    vector units; ``memory_bandwidth``: bytes/s; ``memory_bytes``: capacity; the efficiencies: the share of each
    peak a real kernel reaches (the prediction divides by peak x efficiency); ``interconnect_bandwidth``: bytes/s
    per direction to the other ranks (0: unknown); ``source``: where the figures come from; ``call_overhead``:
    seconds added to every call (launch and dispatch; 0: not modelled, the GPU entries' default);
    ``compute_capability`` and ``sm_count``: an NVIDIA GPU's, which some CUDA kernels' own memory depends on (the
    cuBLAS workspace, flash attention's split-KV buffers: collect/workspace_cuda.py), None and 0 elsewhere."""

    name: str
    peak_flops: Mapping[str, float]
    vector_flops: float
    memory_bandwidth: float
    memory_bytes: int = 0
    key: str = ""
    matmul_efficiency: float = MATMUL_EFFICIENCY
    vector_efficiency: float = VECTOR_EFFICIENCY
    memory_efficiency: float = HBM_EFFICIENCY
    interconnect: str = ""
    interconnect_bandwidth: float = 0.0
    source: str = ""
    call_overhead: float = 0.0
    efficiency_source: str = field(default="assumed defaults (docs/conventions.md, Time)")
    compute_capability: tuple[int, int] | None = None  # CUDA (major, minor); None: not an NVIDIA GPU
    sm_count: int = 0  # streaming multiprocessors (0: unknown)

    def __post_init__(self) -> None:
        if not self.peak_flops or any(v <= 0 for v in self.peak_flops.values()):
            raise InputError(f"hardware {self.name!r}: peak_flops needs positive FLOP/s per dtype")
        unknown = set(self.peak_flops) - set(DTYPE_KEYS)
        if unknown:
            raise InputError(f"hardware {self.name!r}: unknown dtype keys {sorted(unknown)}; use {DTYPE_KEYS}")
        if self.vector_flops <= 0 or self.memory_bandwidth <= 0:
            raise InputError(f"hardware {self.name!r}: vector_flops and memory_bandwidth must be positive")
        for name in ("matmul_efficiency", "vector_efficiency", "memory_efficiency"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InputError(f"hardware {self.name!r}: {name} must be in (0, 1], got {value}")

    def with_efficiency(self, *, matmul: float | None = None, vector: float | None = None,
                        memory: float | None = None) -> Hardware:
        """A copy with other achievable efficiencies (None: keep)."""
        return dataclasses.replace(
            self, matmul_efficiency=self.matmul_efficiency if matmul is None else matmul,
            vector_efficiency=self.vector_efficiency if vector is None else vector,
            memory_efficiency=self.memory_efficiency if memory is None else memory,
            efficiency_source="given")

    def matrix_flops(self, dtype: str, *, tf32: bool = False) -> float:
        """The dense matrix peak for a dtype key; float32 takes the tf32 rate when ``tf32`` and the hardware has it;
        a dtype the table lacks falls back to float32's rate (float64: the vector rate)."""
        if dtype == "float32" and tf32 and "tf32" in self.peak_flops:
            return self.peak_flops["tf32"]
        if dtype in self.peak_flops:
            return self.peak_flops[dtype]
        if dtype == "float64":
            return self.vector_flops
        return self.peak_flops.get("float32", self.vector_flops)


def dtype_key(dtype: torch.dtype | str | None) -> str:
    """A torch dtype (or its name) as a peak_flops key: float32, bfloat16, float16, float8, float64 (other: as is)."""
    name = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    if name.startswith("float8"):
        return "float8"
    return {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
            "double": "float64"}.get(name, name)


_NV_A100 = "NVIDIA A100 Tensor Core GPU datasheet (nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/" \
           "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf); dense = the starred sparsity figure / 2"
_NV_H100 = "NVIDIA H100 Tensor Core GPU datasheet (resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-" \
           "datasheet) and H100 architecture whitepaper (dense BF16 989.4, TF32 494.7, FP8 1,978.9 TFLOP/s SXM5); " \
           "dense = the starred sparsity figure / 2"
_NV_H200 = "NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200/); dense = the starred " \
           "sparsity figure / 2"
_NV_L4 = "NVIDIA L4 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/l4/); dense = the starred sparsity " \
         "figure / 2"
_NV_L40S = "NVIDIA L40S GPU datasheet (nvidia.com/en-us/data-center/l40s/): dense BF16/FP16 362.05 TFLOP/s " \
           "(733* with sparsity)"
_NV_4090 = "NVIDIA Ada Lovelace GPU architecture whitepaper, appendix (GeForce RTX 4090): tensor rates with FP32 " \
           "accumulate, which PyTorch uses (FP16/BF16 165.2, TF32 82.6, FP8 330.3 dense TFLOP/s)"
_AMD_MI300X = "AMD Instinct MI300X accelerator datasheet (amd.com/.../instinct-mi300x-data-sheet.pdf): FP32 vector " \
              "163.4, FP32 matrix 163.4, TF32 653.7, FP16/BF16 1,307.4, FP8 2,614.9 dense TFLOP/s; 5.3 TB/s"

# compute_capability and sm_count are from the same documents (the A100 and H100 whitepapers: 108 SMs, 132 for the
# SXM5 H100 and the H200/NVL parts built on the same die, 114 for the PCIe card; the Ada whitepaper: L4 58, L40S 142,
# RTX 4090 128 SMs, compute capability 8.9).
_TABLE = (
    Hardware("NVIDIA A100 SXM 40GB", _peaks(float32=19.5 * T, tf32=156 * T, bfloat16=312 * T, float16=312 * T),
             19.5 * T, 1555 * GB, 40 * GIB, "a100-40gb", interconnect="NVLink 3 (600 GB/s bidirectional)",
             interconnect_bandwidth=300 * GB, source=_NV_A100,
             compute_capability=(8, 0), sm_count=108),
    Hardware("NVIDIA A100 SXM 80GB", _peaks(float32=19.5 * T, tf32=156 * T, bfloat16=312 * T, float16=312 * T),
             19.5 * T, 2039 * GB, 80 * GIB, "a100-80gb", interconnect="NVLink 3 (600 GB/s bidirectional)",
             interconnect_bandwidth=300 * GB, source=_NV_A100,
             compute_capability=(8, 0), sm_count=108),
    Hardware("NVIDIA H100 SXM", _peaks(float32=67 * T, tf32=494.7 * T, bfloat16=989.4 * T, float16=989.4 * T,
                                       float8=1978.9 * T),
             67 * T, 3350 * GB, 80 * GIB, "h100-sxm", interconnect="NVLink 4 (900 GB/s bidirectional)",
             interconnect_bandwidth=450 * GB, source=_NV_H100,
             compute_capability=(9, 0), sm_count=132),
    Hardware("NVIDIA H100 PCIe", _peaks(float32=51 * T, tf32=378 * T, bfloat16=756 * T, float16=756 * T,
                                        float8=1513 * T),
             51 * T, 2000 * GB, 80 * GIB, "h100-pcie", interconnect="PCIe Gen5 x16 (128 GB/s bidirectional)",
             interconnect_bandwidth=64 * GB, source=_NV_H100,
             compute_capability=(9, 0), sm_count=114),
    Hardware("NVIDIA H100 NVL", _peaks(float32=60 * T, tf32=417.5 * T, bfloat16=835.5 * T, float16=835.5 * T,
                                       float8=1670.5 * T),
             60 * T, 3900 * GB, 94 * GIB, "h100-nvl", interconnect="NVLink bridge (600 GB/s bidirectional)",
             interconnect_bandwidth=300 * GB, source=_NV_H100,
             compute_capability=(9, 0), sm_count=132),
    Hardware("NVIDIA H200 SXM", _peaks(float32=67 * T, tf32=494.7 * T, bfloat16=989.4 * T, float16=989.4 * T,
                                       float8=1978.9 * T),
             67 * T, 4800 * GB, 141 * GIB, "h200", interconnect="NVLink 4 (900 GB/s bidirectional)",
             interconnect_bandwidth=450 * GB, source=_NV_H200,
             compute_capability=(9, 0), sm_count=132),
    Hardware("NVIDIA L4", _peaks(float32=30.3 * T, tf32=60 * T, bfloat16=121 * T, float16=121 * T,
                                 float8=242.5 * T),
             30.3 * T, 300 * GB, 24 * GIB, "l4", memory_efficiency=GDDR_EFFICIENCY,
             interconnect="PCIe Gen4 x16 (64 GB/s bidirectional)", interconnect_bandwidth=32 * GB, source=_NV_L4,
             compute_capability=(8, 9), sm_count=58),
    Hardware("NVIDIA L40S", _peaks(float32=91.6 * T, tf32=183 * T, bfloat16=362.05 * T, float16=362.05 * T,
                                   float8=733 * T),
             91.6 * T, 864 * GB, 48 * GIB, "l40s", memory_efficiency=GDDR_EFFICIENCY,
             interconnect="PCIe Gen4 x16 (64 GB/s bidirectional)", interconnect_bandwidth=32 * GB, source=_NV_L40S,
             compute_capability=(8, 9), sm_count=142),
    Hardware("NVIDIA GeForce RTX 4090", _peaks(float32=82.6 * T, tf32=82.6 * T, bfloat16=165.2 * T,
                                               float16=165.2 * T, float8=330.3 * T),
             82.6 * T, 1008 * GB, 24 * GIB, "rtx-4090", memory_efficiency=GDDR_EFFICIENCY,
             interconnect="PCIe Gen4 x16 (64 GB/s bidirectional)", interconnect_bandwidth=32 * GB, source=_NV_4090,
             compute_capability=(8, 9), sm_count=128),
    Hardware("AMD Instinct MI300X", _peaks(float32=163.4 * T, tf32=653.7 * T, bfloat16=1307.4 * T,
                                           float16=1307.4 * T, float8=2614.9 * T),
             163.4 * T, 5300 * GB, 192 * GIB, "mi300x", interconnect="Infinity Fabric (896 GB/s aggregate)",
             interconnect_bandwidth=448 * GB, source=_AMD_MI300X),
)

HARDWARE: Mapping[str, Hardware] = MappingProxyType({h.key: h for h in _TABLE})
_ALIASES = {"a100": "a100-80gb", "a100-sxm": "a100-80gb", "h100": "h100-sxm", "h200-sxm": "h200", "4090": "rtx-4090",
            "l40-s": "l40s"}


def hardware_names() -> tuple[str, ...]:
    """The names ``get_hardware`` accepts: the table's keys and "cpu"."""
    return (*HARDWARE, "cpu")


def hardware_key(spec: str) -> str:
    """The table key (or "cpu") a name stands for: case, spaces and underscores ignored ("H100 SXM", "h100_sxm"),
    a few short aliases ("h100", "a100", "4090"); an InputError names the choices when there is none."""
    key = spec.strip().lower().replace("_", "-").replace(" ", "-")
    key = _ALIASES.get(key, key)
    if key != "cpu" and key not in HARDWARE:
        raise InputError(f"unknown hardware {spec!r}; choose from {', '.join(hardware_names())}")
    return key


def get_hardware(spec: str | Hardware) -> Hardware:
    """A :class:`Hardware` as given, a table entry by name (:func:`hardware_key`), or "cpu": this machine, measured
    once at torch's current thread count (timing/cpu.py)."""
    if isinstance(spec, Hardware):
        return spec
    if not isinstance(spec, str):
        raise InputError(f"hardware must be a name or a torchcost.Hardware, got {type(spec).__name__}")
    key = hardware_key(spec)
    if key == "cpu":
        from torchcost.timing.cpu import measure_cpu

        return measure_cpu()
    return HARDWARE[key]
