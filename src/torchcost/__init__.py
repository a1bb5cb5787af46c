"""torchcost: exact parameters, MACs, FLOPs, shapes and memory of PyTorch models, per module.

    >>> import torchcost
    >>> r = torchcost.analyze(model, x)
    >>> r.params, r.macs, r.flops
    >>> print(r)
"""

from __future__ import annotations

import warnings

# torch warns at import when numpy is absent; torchcost never needs numpy, so that one message is kept off the console
# while torch loads. Scoped: the host's warning filters are as they were once torchcost is imported.
with warnings.catch_warnings():
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
from torchcost.report import CollectiveCount, CostReport, MemoryReport, ModuleCost, OpCount, ParallelInfo
from torchcost.shapes import TensorSpec

__all__ = [
    "BatchFit",
    "CollectiveCount",
    "Cost",
    "CostReport",
    "DtypeError",
    "FormulaError",
    "InputError",
    "MemoryReport",
    "ModelError",
    "ModuleCost",
    "OpCall",
    "OpCount",
    "Parallel",
    "ParallelInfo",
    "ShapeError",
    "SpecError",
    "TensorSpec",
    "TorchcostError",
    "__version__",
    "analyze",
    "compare",
    "max_batch_size",
    "profile",
    "register_formula",
    "register_workspace",
    "summary",
]
