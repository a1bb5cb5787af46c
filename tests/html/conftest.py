"""Reports and pages for the HTML tests, built once per session, and the headless Chromium they open in.

The browser tests need Debian's ``chromium`` (``apt-get install chromium``; .ci/run installs it) and the
``websocket-client`` package; without them they are skipped with the reason."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import torchcost
from tests.html.browser import Browser, chromium_path
from torchcost.report import CostReport
from torchcost.resolve import resolve

# name -> (spec, resolve options, mode): the reports the tests and the README's pictures use
CASES: dict[str, tuple[str, dict[str, object], str]] = {
    "simple_cnn": ("example:simple_cnn", {}, "eval"),
    "resnet50": ("torchvision:resnet50", {"meta": True}, "eval"),
    "gpt2_train": ("hf:gpt2", {"meta": True, "config": {"n_layer": 2}}, "train"),
}


def build_case(name: str) -> tuple[CostReport, str]:
    """The report of CASES[name] and its description."""
    spec, options, mode = CASES[name]
    resolved = resolve(spec, **options)  # type: ignore[arg-type]
    report = torchcost.analyze(resolved.model, *resolved.args, kwargs=resolved.kwargs, mode=mode)  # type: ignore[arg-type]
    return report, resolved.description


def case_html(name: str, report: CostReport, description: str) -> str:
    """The page of CASES[name]; the training step's with a 1 GiB budget, so its headline shows the fits bar."""
    from torchcost.render.html import render_html

    return render_html(report, description=description, budget=2**30 if name == "gpt2_train" else None)


@pytest.fixture(scope="session")
def case() -> Callable[[str], tuple[CostReport, str]]:
    cache: dict[str, tuple[CostReport, str]] = {}

    def get(name: str) -> tuple[CostReport, str]:
        if name not in cache:
            cache[name] = build_case(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def page_file(case: Callable[[str], tuple[CostReport, str]],
              tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``page_file(name)``: the HTML page of CASES[name], written once to a temporary file."""
    folder = tmp_path_factory.mktemp("pages")

    def get(name: str) -> Path:
        path = folder / f"{name}.html"
        if not path.exists():
            path.write_text(case_html(name, *case(name)), encoding="utf-8")
        return path

    return get


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium: apt-get install chromium (.ci/run installs it) to run the browser tests")
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.skip("websocket-client is not installed (pip install -e '.[dev]')")
    with Browser(executable) as b:
        yield b
