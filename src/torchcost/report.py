"""The report: frozen dataclasses holding everything one analysis found, as exact integers.

Renderers read these and compute nothing; ``to_dict``/``from_dict`` round-trip exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from torchcost.collect.shapes import ShapeTree, TensorSpec
from torchcost.errors import InputError

__all__ = ["SCHEMA_VERSION", "CostReport", "ModuleCost", "OpCount"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class OpCount:
    """One op's calls and cost, in one module (self) or in the whole model. ``flops`` includes ``2 * macs``."""

    op: str
    calls: int
    macs: int = 0
    flops: int = 0


@dataclass(frozen=True)
class ModuleCost:
    """One module of the tree, named by its state_dict path ("" for the model itself).

    ``params`` counts the distinct parameters in the module's subtree (a tied weight once); ``shared_params`` is the
    part of them that some module outside this subtree also uses. ``macs``/``flops`` include the children;
    ``self_macs``/``self_flops`` are the ops run in this module's own forward, outside any child.
    """

    name: str
    type: str
    depth: int
    params: int
    trainable_params: int
    shared_params: int
    buffers: int
    calls: int
    input_shape: ShapeTree
    output_shape: ShapeTree
    output_bytes: int
    macs: int
    flops: int
    self_macs: int
    self_flops: int
    ops: tuple[OpCount, ...] = ()
    uncounted: tuple[OpCount, ...] = ()
    children: tuple[ModuleCost, ...] = ()

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def walk(self) -> Iterator[ModuleCost]:
        """This module and all below it, in pre-order."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class CostReport:
    """What analyze() found. Totals are ints; ``module(name)`` finds a node by its state_dict name."""

    model_type: str
    root: ModuleCost
    params: int
    trainable_params: int
    buffers: int
    macs: int
    flops: int
    input_shape: ShapeTree
    input_bytes: int
    param_bytes: int
    buffer_bytes: int
    activation_bytes: int
    ops: tuple[OpCount, ...]
    uncounted: tuple[OpCount, ...]
    free_ops: tuple[OpCount, ...]
    enclosed_ops: tuple[OpCount, ...]
    formula_errors: tuple[tuple[str, str], ...]
    uncalled: tuple[str, ...]
    device: str
    dtype: str
    mode: str
    torch_version: str
    torchcost_version: str
    schema_version: int = SCHEMA_VERSION
    _index: dict[str, ModuleCost] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({m.name: m for m in self.root.walk()})

    @property
    def non_trainable_params(self) -> int:
        return self.params - self.trainable_params

    @property
    def total_bytes(self) -> int:
        """Input + parameters + buffers + output activations: torchsummary's 'estimated total', with real dtypes."""
        return self.input_bytes + self.param_bytes + self.buffer_bytes + self.activation_bytes

    @property
    def modules(self) -> list[ModuleCost]:
        return list(self.root.walk())

    def module(self, name: str) -> ModuleCost:
        try:
            return self._index[name]
        except KeyError:
            close = [n for n in self._index if name and (name in n or n in name)][:5]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise InputError(f"no module named {name!r} in {self.model_type}{hint}") from None

    def table(self, *, depth: int | None = None, width: int | None = 120, fold: bool = True,
              color: bool = False, sort: str | None = None, top: int | None = None) -> str:
        from torchcost.render.text import render_text

        return render_text(self, depth=depth, width=width, fold=fold, color=color, sort=sort, top=top)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": self.schema_version}
        for f in fields(self):
            if f.name in ("root", "schema_version", "_index"):
                continue
            data[f.name] = _encode(getattr(self, f.name))
        data["modules"] = [_module_dict(m) for m in self.root.walk()]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostReport:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"report schema version {version!r} is not {SCHEMA_VERSION}, the one this torchcost reads")
        modules = data["modules"]
        built: dict[str, ModuleCost] = {}
        for entry in reversed(modules):  # children come after their parent in pre-order
            kwargs = {k: v for k, v in entry.items() if k != "children"}
            kwargs["input_shape"] = _decode_shape(kwargs["input_shape"])
            kwargs["output_shape"] = _decode_shape(kwargs["output_shape"])
            kwargs["ops"] = tuple(OpCount(**o) for o in kwargs["ops"])
            kwargs["uncounted"] = tuple(OpCount(**o) for o in kwargs["uncounted"])
            kwargs["children"] = tuple(built[c] for c in entry["children"])
            built[entry["name"]] = ModuleCost(**kwargs)
        top = {k: v for k, v in data.items() if k != "modules"}
        top["root"] = built[modules[0]["name"]]
        top["input_shape"] = _decode_shape(top["input_shape"])
        for key in ("ops", "uncounted", "free_ops", "enclosed_ops"):
            top[key] = tuple(OpCount(**o) for o in top[key])
        top["formula_errors"] = tuple(tuple(e) for e in top["formula_errors"])
        top["uncalled"] = tuple(top["uncalled"])
        return cls(**top)

    @classmethod
    def from_json(cls, text: str) -> CostReport:
        return cls.from_dict(json.loads(text))


def _module_dict(m: ModuleCost) -> dict[str, Any]:
    data = {f.name: _encode(getattr(m, f.name)) for f in fields(m) if f.name != "children"}
    data["children"] = [c.name for c in m.children]
    return data


def _encode(value: Any) -> Any:
    if isinstance(value, TensorSpec):
        return {"shape": list(value.shape), "dtype": value.dtype}
    if isinstance(value, OpCount):
        return {"op": value.op, "calls": value.calls, "macs": value.macs, "flops": value.flops}
    if isinstance(value, dict):
        return {"mapping": {k: _encode(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode_shape(value: Any) -> ShapeTree:
    if value is None:
        return None
    if isinstance(value, dict) and "shape" in value:
        return TensorSpec(tuple(value["shape"]), value["dtype"])
    if isinstance(value, dict) and "mapping" in value:
        return {k: _decode_shape(v) for k, v in value["mapping"].items()}
    return tuple(_decode_shape(v) for v in value)
