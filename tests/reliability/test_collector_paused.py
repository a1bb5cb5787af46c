"""The cyclic collector is paused while torch and a model library are imported (torchcost/_collector.py): a process
gets it back as it was (on or off, its own frozen objects still frozen), and only the command's own process keeps
what its imports made frozen. Each process check runs in a fresh interpreter, where torch is not imported yet."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest

from tests.cli.conftest import python
from torchcost._collector import paused


def _printed(script: str) -> dict[str, Any]:
    run = python(script)
    assert run.rc == 0, run.err
    out: dict[str, Any] = json.loads(run.out.strip().splitlines()[-1])
    return out


@pytest.fixture
def restored() -> Any:
    """The test session's collector as it was, whatever a check below did to it."""
    on, frozen = gc.isenabled(), gc.get_freeze_count()
    yield
    if gc.get_freeze_count() > frozen:  # (only what a check froze)
        gc.unfreeze()
        gc.collect()
    (gc.enable if on else gc.disable)()


def test_inside_nothing_is_collected_and_the_state_comes_back(restored: Any) -> None:
    for on in (True, False):
        (gc.enable if on else gc.disable)()
        with paused():
            assert not gc.isenabled()
        assert gc.isenabled() is on


def test_what_was_made_inside_goes_to_the_oldest_generation_unwalked(restored: Any) -> None:
    if gc.get_freeze_count():
        pytest.skip("this process froze objects: paused() only resumes the collector there")
    walked: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            walked.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        with paused():
            made = [[i] for i in range(5_000)]  # (5,001 tracked objects: past the young generation's threshold, 700)
        assert walked == [] and gc.get_count()[0] < 700 and gc.get_freeze_count() == 0
        assert made[4_999] == [4_999]
    finally:
        gc.callbacks.remove(count)


_IMPORT = """
import gc, json, sys
gc.disable() if sys.argv[1:] == ["off"] else None
kept = [object() for _ in range(3)]
lists = [[] for _ in range(10)]
gc.freeze() if sys.argv[1:] == ["frozen"] else None
before = gc.get_freeze_count()
import torchcost
print(json.dumps({"on": gc.isenabled(), "frozen_before": before, "frozen_after": gc.get_freeze_count()}))
"""


def test_importing_torchcost_leaves_the_callers_collector_as_it_was() -> None:
    on = _printed(_IMPORT)
    off = _printed(_IMPORT.replace("sys.argv[1:]", '["off"]'))
    frozen = _printed(_IMPORT.replace("sys.argv[1:]", '["frozen"]'))
    assert on["on"] is True and on["frozen_before"] == on["frozen_after"] == 0
    assert off["on"] is False and off["frozen_after"] == 0
    # (a process with frozen objects of its own: they stay frozen, and nothing of torch's joins them; a few of them
    # die meanwhile, as torch's import replaces what they were)
    assert frozen["on"] is True and 0 < frozen["frozen_after"] <= frozen["frozen_before"]


_LIBRARY = """
import gc, json, sys
import torchcost
from torchcost.resolve.common import require
from torchcost.run import dynamo
if sys.argv[1:] == ["owned"]:
    dynamo.own_process()
before = gc.get_freeze_count()
require("torchvision", "torchvision:resnet18")
print(json.dumps({"on": gc.isenabled(), "frozen_before": before, "frozen_after": gc.get_freeze_count()}))
"""


def test_a_model_librarys_import_is_kept_frozen_only_in_the_commands_process() -> None:
    library = _printed(_LIBRARY)
    owned = _printed(_LIBRARY.replace("sys.argv[1:]", '["owned"]'))
    assert library["on"] is owned["on"] is True
    assert library["frozen_before"] == library["frozen_after"] == 0
    assert owned["frozen_after"] > owned["frozen_before"]  # (torchvision's modules: they live until the command ends)
