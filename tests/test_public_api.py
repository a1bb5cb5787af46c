"""The public API is exactly what ``torchcost.__all__`` says, and every name in it resolves."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

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
    "Parallel",  # issue 12: simulated distributed training
    "ParallelInfo",
    "CollectiveCount",
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
    "MeasuredTime",  # issue 13: measured time
    "ModuleTime",
    "TimeOptions",
    "Hardware",  # issue 13: predicted time
    "TimePrediction",
    "analyze_generation",  # issue 14: serving an LLM
    "GenerationReport",
    "ServingFit",
    "max_context",
    "max_serving_batch",
}


def test_all_is_pinned() -> None:
    # a new public name is a decision: add it here (and to the CHANGELOG) on purpose
    assert set(torchcost.__all__) == EXPECTED
    assert len(torchcost.__all__) == len(EXPECTED), "no name listed twice"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from torchcost import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == set(torchcost.__all__)


def _modules() -> list[str]:
    """Every module of the package, found on disk, so a module added or moved is checked without editing this file.
    ``__main__`` is left out: importing it runs the CLI."""

    def fail(name: str) -> None:
        raise ImportError(f"cannot import {name}")  # walk_packages would otherwise skip a broken package silently

    return sorted(m.name for m in pkgutil.walk_packages(torchcost.__path__, "torchcost.", onerror=fail)
                  if m.name.rpartition(".")[2] != "__main__")


@pytest.mark.parametrize("name", _modules())
def test_submodule_all_names_resolve(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", ())
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but not defined"
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"


def test_errors_form_one_tree() -> None:
    for name in ("InputError", "SpecError", "FormulaError", "ModelError", "ShapeError", "DtypeError"):
        assert issubclass(getattr(torchcost, name), torchcost.TorchcostError)
    assert issubclass(torchcost.ShapeError, torchcost.ModelError)
    assert issubclass(torchcost.DtypeError, torchcost.ModelError)
