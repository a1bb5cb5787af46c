"""Shared pytest options: ``--overwrite-golden`` rewrites the golden files under tests/golden/ from the current
output instead of comparing against them (review the diff before committing)."""

from __future__ import annotations

from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


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
