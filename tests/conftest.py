"""Shared pytest options: ``--overwrite-golden`` rewrites the golden files under tests/golden/ from the current
output instead of comparing against them (review the diff before committing).

The files torchcost keeps between processes (store.py: the CPU's measured peaks, the probes' kernel memory) go to a
folder of the test session's own, never the user's home: each session starts without them and its subprocesses (the
CLI tests) share them. A test that wants no store at all uses the ``no_store`` fixture."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
_SESSION_STORE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    folder = tempfile.mkdtemp(prefix="torchcost-tests-")
    _SESSION_STORE.append(folder)
    os.environ["TORCHCOST_CACHE_DIR"] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _SESSION_STORE:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def no_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torchcost keeps no files while the test runs (``TORCHCOST_CACHE_DIR=off``)."""
    monkeypatch.setenv("TORCHCOST_CACHE_DIR", "off")
    yield


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--overwrite-golden", action="store_true", default=False,
                     help="rewrite tests/golden/* from the current output instead of comparing")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> object:
    """``golden("name.txt", text)`` compares ``text`` with tests/golden/name.txt (or rewrites it)."""
    overwrite = bool(request.config.getoption("--overwrite-golden"))

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if overwrite:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), f"no golden file {path}; run pytest --overwrite-golden to create it"
        expected = path.read_text(encoding="utf-8")
        assert text == expected, f"output differs from {path}; if intended, rerun with --overwrite-golden"

    return check
