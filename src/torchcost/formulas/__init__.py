"""What torchcost counts, and how (docs/conventions.md writes out every formula with examples).

* **MACs** are multiply-accumulates of the linear-algebra ops: convolutions (any dimensionality, transposed, grouped,
  dilated, padded), matrix products (mm, addmm, bmm, baddbmm, mv, dot, and whatever matmul, linear and einsum lower
  to), attention (Q K^T and P V, whichever kernel runs it) and recurrent layers (every gate, layer, direction, step).
  A bias is not a MAC.
* **FLOPs** = 2 x MACs + every other floating-point operation: bias adds, normalisation, pooling, activations,
  element-wise arithmetic, reductions, interpolation, losses, sorting/selection and detection ops (NMS, RoIAlign),
  at the costs in :mod:`pointwise`, :mod:`norm`, :mod:`pool`, :mod:`resample`, :mod:`loss`, :mod:`select`,
  :mod:`vision`, :mod:`fft` (FFTs at the nominal 5 N log2 N real FLOPs), :mod:`distance` (cdist, pdist).
* **Free** ops move, view, allocate, index or select data (views, copies, cat, embedding lookup, masked_fill, random
  number generation); ops whose tensors are not floating point are free too (integer index arithmetic, boolean
  masks). Matrix products and convolutions of integer tensors still count their MACs.
* **Uncounted** ops are everything else: an op that may do arithmetic and has no formula. They are listed by name with
  their call counts in every report; they are never silently zero.
* **Enclosed** ops ran inside an op priced as a whole (``F.scaled_dot_product_attention``, ``torch.lstm``): their cost
  is in the enclosing op's formula.
* Backward: ``mode="train"`` counts the whole step by phase (forward, loss, backward, recompute, optimizer); the
  backward kernels are priced in :mod:`backward`, the optimizer's foreach ops in :mod:`optimizer`; ``macs``/``flops``
  of a report stay those of one forward pass.

Formulas read shapes, dtypes and scalar arguments, never tensor values, so real and meta runs count the same.
Formulas are keyed by aten op name without overload (``aten::addmm``); :func:`register_formula` adds one for a custom
op, :func:`registered` adds or replaces one for the duration of a ``with`` block, and ``analyze(..., formulas={...})``
overrides some for one run without touching the global registry.
"""

from __future__ import annotations

from torchcost.formulas import (  # noqa: F401  (registration)
    attention,
    backward,
    conv,
    distance,
    fft,
    loss,
    matmul,
    norm,
    optimizer,
    pointwise,
    pool,
    resample,
    rnn,
    select,
    vision,
)
from torchcost.formulas.registry import (
    FREE,
    REGISTRY,
    Cost,
    Formula,
    FormulaRegistry,
    OpCall,
    is_free,
    op_key,
    register_formula,
    registered,
)

__all__ = [
    "FREE",
    "REGISTRY",
    "Cost",
    "Formula",
    "FormulaRegistry",
    "OpCall",
    "is_free",
    "op_key",
    "register_formula",
    "registered",
]
