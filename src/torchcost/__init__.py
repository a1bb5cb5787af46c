"""torchcost: exact parameters, MACs, FLOPs, shapes and memory of PyTorch models, per module.

    >>> import torchcost
    >>> r = torchcost.analyze(model, x)
    >>> r.params, r.macs, r.flops
    >>> print(r)
"""

from __future__ import annotations

import warnings

from torchcost._collector import paused as _paused

# torch warns at import when numpy is absent; torchcost never needs numpy, so that one message is kept off the console
# while torch loads. Scoped: the host's warning filters are as they were once torchcost is imported. The cyclic
# collector is paused meanwhile (torchcost/_collector.py): torch's import makes about 200,000 objects that live as long
# as the process.
with _paused(), warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
    import torch  # noqa: F401

from torchcost._version import __version__
from torchcost.api import analyze, compare
from torchcost.collect.workspace import register_workspace
from torchcost.compat import profile, summary
from torchcost.errors import (
    DtypeError,
    FormulaError,
    InputError,
    ModelError,
    ShapeError,
    SpecError,
    TorchcostError,
)
from torchcost.fit import BatchFit, max_batch_size
from torchcost.formulas import Cost, OpCall, register_formula
from torchcost.parallel import Parallel
from torchcost.report import (
    CollectiveCount,
    CostReport,
    MeasuredTime,
    MemoryReport,
    ModuleCost,
    ModuleTime,
    OpCount,
    ParallelInfo,
    TimePrediction,
)
from torchcost.serve import GenerationReport, ServingFit, analyze_generation, max_context, max_serving_batch
from torchcost.shapes import TensorSpec
from torchcost.timing.hardware import Hardware
from torchcost.timing.measure import TimeOptions

__all__ = [
    "BatchFit",
    "CollectiveCount",
    "Cost",
    "CostReport",
    "DtypeError",
    "FormulaError",
    "GenerationReport",
    "Hardware",
    "InputError",
    "MeasuredTime",
    "MemoryReport",
    "ModelError",
    "ModuleCost",
    "ModuleTime",
    "OpCall",
    "OpCount",
    "Parallel",
    "ParallelInfo",
    "ServingFit",
    "ShapeError",
    "SpecError",
    "TensorSpec",
    "TimeOptions",
    "TimePrediction",
    "TorchcostError",
    "__version__",
    "analyze",
    "analyze_generation",
    "compare",
    "max_batch_size",
    "max_context",
    "max_serving_batch",
    "profile",
    "register_formula",
    "register_workspace",
    "summary",
]
