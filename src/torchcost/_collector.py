"""The cyclic garbage collector paused while modules are imported (no torch here: torchcost/__init__.py uses it
around ``import torch``)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused"]


@contextlib.contextmanager
def paused(keep: bool = False) -> Iterator[None]:
    """While inside, the cyclic collector does not run. An import makes tens of thousands of objects that live as long
    as the process (torch about 200,000), and the collector, left on, walks them again and again while they are made:
    0.25 s of a 1.5 s ``import torch`` here, in 410 collections, 0.17 s of transformers' and GPT-2's modules.

    On the way out, what is alive is put past the young generations without a walk: frozen for good where ``keep``
    (the command's own process, which ends with them alive: cli.py ``_lasting``), else moved into the oldest
    generation by a freeze taken back at once, where the next full collection walks it once, as it would have.
    Where the process had frozen objects of its own, the collector only resumes: their freeze is not ours to take
    back. Whether the collector is on is as it was."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if keep:
            gc.freeze()
        elif not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
        if collecting:
            gc.enable()
