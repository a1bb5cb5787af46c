"""``example:NAME``: the networks shipped in :mod:`torchcost.examples`, each with its own default input."""

from __future__ import annotations

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
    model = build_under(opts.device, opts.dtype, lambda: example.factory(**opts.kwargs), spec, opts.kwargs)
    dtype = model_dtype(model)
    sizes = opts.input_sizes or (example.input_size,)
    args = tuple(float_input(with_batch(s, opts.batch_size), dtype, opts.device) for s in sizes)
    shapes = ", ".join("x".join(map(str, a.shape)) for a in args)
    return Resolved(model, args, {}, f"{spec}: {example.description}; input {shapes}", spec, name)

