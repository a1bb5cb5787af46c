"""torchcost: exact parameters, MACs, FLOPs, shapes and memory of PyTorch models, per module.

    >>> import torchcost
    >>> r = torchcost.analyze(model, x)
    >>> r.params, r.macs, r.flops
    >>> print(r)
"""

from __future__ import annotations

import warnings

# torch warns at import when numpy is absent; torchcost never needs numpy, so keep that one message off the console.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)

from torchcost._version import __version__  # noqa: E402
from torchcost.api import analyze, compare  # noqa: E402
from torchcost.compat import profile, summary  # noqa: E402
from torchcost.errors import (  # noqa: E402
    DtypeError,
    FormulaError,
    InputError,
    ModelError,
    ShapeError,
    SpecError,
    TorchcostError,
)
from torchcost.fit import BatchFit, max_batch_size  # noqa: E402
from torchcost.formulas import Cost, OpCall, register_formula  # noqa: E402
from torchcost.report import CostReport, MemoryReport, ModuleCost, OpCount  # noqa: E402
from torchcost.shapes import TensorSpec  # noqa: E402

__all__ = [
    "BatchFit",
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
    "summary",
]
