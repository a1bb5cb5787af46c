"""The public API is exactly what ``torchcost.__all__`` says, and every name in it resolves."""

from __future__ import annotations

import importlib

import torchcost

EXPECTED = {
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
}


def test_all_is_pinned() -> None:
    # a new public name is a decision: add it here (and to the CHANGELOG) on purpose
    assert set(torchcost.__all__) == EXPECTED
    assert len(torchcost.__all__) == len(EXPECTED), "no name listed twice"


def test_every_name_resolves() -> None:
    for name in torchcost.__all__:
        assert getattr(torchcost, name) is not None, name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from torchcost import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == set(torchcost.__all__)


def test_submodule_all_names_resolve() -> None:
    for mod in ("torchcost.api", "torchcost.report", "torchcost.errors", "torchcost.units", "torchcost.compat",
                "torchcost.examples", "torchcost.formulas", "torchcost.shapes", "torchcost.trees", "torchcost.inputs",
                "torchcost.render.text",
                "torchcost.render.rows"):
        module = importlib.import_module(mod)
        for name in module.__all__:
            assert hasattr(module, name), f"{mod}.{name}"


def test_errors_form_one_tree() -> None:
    for name in ("InputError", "SpecError", "FormulaError", "ModelError", "ShapeError", "DtypeError"):
        assert issubclass(getattr(torchcost, name), torchcost.TorchcostError)
    assert issubclass(torchcost.ShapeError, torchcost.ModelError)
    assert issubclass(torchcost.DtypeError, torchcost.ModelError)
    assert isinstance(torchcost.__version__, str)
