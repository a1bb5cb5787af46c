"""``example:NAME``: the networks shipped in :mod:`torchcost.examples`, each with its own default input.

They are built with their initialisers' random draws made as fills of the distribution's mean (:class:`_Means`):
no figure torchcost gives depends on a weight's value in these networks (no op whose output shape or path follows
values), and drawing ``simple_cnn``'s 401 M weights took 5.7 s here, most of the default command's time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torchcost.errors import SpecError
from torchcost.examples import EXAMPLES
from torchcost.resolve.common import (
    BuildOptions,
    Resolved,
    build_under,
    float_input,
    model_dtype,
    unknown_name,
    with_batch,
)
from torchcost.run.concurrency import exclusive

__all__ = ["build", "names"]


def names() -> list[tuple[str, str]]:
    return [(name, e.description) for name, e in EXAMPLES.items()]


def build(name: str, opts: BuildOptions) -> Resolved:
    spec = f"example:{name}"
    example = EXAMPLES.get(name)
    if example is None:
        raise unknown_name("example", name, EXAMPLES, what="example")
    if opts.seq_len is not None:
        raise SpecError(f"--seq-len applies to text models (hf:...), not to {spec}")
    with _drawn_as_means(opts.device):
        model = build_under(opts.device, opts.dtype, lambda: example.factory(**opts.kwargs), spec, opts.kwargs)
    dtype = model_dtype(model)
    sizes = opts.input_sizes or (example.input_size,)
    args = tuple(float_input(with_batch(s, opts.batch_size), dtype, opts.device) for s in sizes)
    shapes = ", ".join("x".join(map(str, a.shape)) for a in args)
    return Resolved(model, args, {}, f"{spec}: {example.description}; input {shapes}", spec, name)


@contextlib.contextmanager
def _drawn_as_means(device: torch.device) -> Iterator[None]:
    """:class:`_Means` on, under the analysis lock, while a model is built on ``device`` (nothing to draw on meta)."""
    if device.type == "meta":
        yield
        return
    with exclusive(), _Means():  # type: ignore[no-untyped-call]  # torch leaves TorchDispatchMode's unannotated
        yield


_aten = torch.ops.aten


class _Means(TorchDispatchMode):
    """In-place random draws (``uniform_(a, b)``, ``normal_(mean, std)``: every ``torch.nn.init`` initialiser's) made
    as fills of their mean, (a + b) / 2 or mean: a fill costs a memset, a draw 14 ns an element here. Entered under
    run/concurrency.py's ``exclusive``: a dispatch mode's first call would import ``torch._dynamo`` (2 s here),
    which its stand-in (run/dynamo.py) spares."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is _aten.uniform_.default:
            low = args[1] if len(args) > 1 else kwargs.get("from", 0.0)
            high = args[2] if len(args) > 2 else kwargs.get("to", 1.0)
            return _aten.fill_.Scalar(args[0], (low + high) / 2)
        if func is _aten.normal_.default:
            return _aten.fill_.Scalar(args[0], args[1] if len(args) > 1 else kwargs.get("mean", 0.0))
        return func(*args, **kwargs)
