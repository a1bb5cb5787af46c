"""torchcost: exact parameters, MACs, FLOPs, shapes and memory of PyTorch models, per module.

    >>> import torchcost
    >>> r = torchcost.analyze(model, x)
    >>> r.params, r.macs, r.flops
    >>> print(r)
"""

from __future__ import annotations

from torchcost.api import analyze
from torchcost.collect.shapes import TensorSpec
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
from torchcost.formulas import Cost, OpCall, register_formula
from torchcost.report import CostReport, ModuleCost, OpCount

__version__ = "0.1.0"

__all__ = [
    "Cost",
    "CostReport",
    "DtypeError",
    "FormulaError",
    "InputError",
    "ModelError",
    "ModuleCost",
    "OpCall",
    "OpCount",
    "ShapeError",
    "SpecError",
    "TensorSpec",
    "TorchcostError",
    "__version__",
    "analyze",
    "profile",
    "register_formula",
    "summary",
]
