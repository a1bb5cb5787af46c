"""``timm:NAME``: any model timm knows, built with ``pretrained=False``.

Default input: 1 x the ``input_size`` of the model's pretrained config (its training resolution, e.g. 3x224x224),
3x224x224 when it has none.
"""

from __future__ import annotations

from typing import Any

from torchcost.errors import SpecError
from torchcost.resolve.common import (
    BuildOptions,
    Resolved,
    build_under,
    float_input,
    model_dtype,
    require,
    unknown_name,
    with_batch,
)

__all__ = ["build", "names"]


def _timm(spec: str) -> Any:
    return require("timm", spec)


def names() -> list[tuple[str, str]]:
    return [(n, "") for n in _timm("timm:").list_models()]


def build(name: str, opts: BuildOptions) -> Resolved:
    spec = f"timm:{name}"
    timm = _timm(spec)
    if not timm.is_model(name):
        raise unknown_name("timm", name, timm.list_models())
    if opts.kwargs.get("pretrained"):
        raise SpecError(f"torchcost builds {spec} with pretrained=False and never downloads weights")
    if opts.seq_len is not None:
        raise SpecError(f"--seq-len applies to text models (hf:...), not to {spec}")
    kwargs: dict[str, Any] = {**opts.kwargs, "pretrained": False}
    model = build_under(opts.device, opts.dtype, lambda: timm.create_model(name, **kwargs), spec, opts.kwargs)
    dtype = model_dtype(model)
    if opts.input_sizes:
        sizes = [with_batch(s, opts.batch_size) for s in opts.input_sizes]
    else:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        chw = tuple(int(s) for s in cfg.get("input_size", (3, 224, 224)))
        sizes = [(opts.batch_size or 1, *chw)]
    args = tuple(float_input(s, dtype, opts.device) for s in sizes)
    return Resolved(model, args, {}, f"{spec} (pretrained=False)", spec, name)
