"""Collectors: they watch one run of the model and record what happened; they never print and never price anything
beyond asking the formula registry."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["Switch"]


class Switch:
    """A process-wide switch of a speed-up, on unless turned off: benchmarks and tests turn it off to compare a run
    without it (collect/leaves.py's planned leaves, collect/unwritten.py's skipped kernels)."""

    def __init__(self) -> None:
        self.on = True

    def enabled(self, on: bool | None = None) -> bool:
        """Whether it is on; with ``on``, set it and return the old value."""
        before = self.on
        if on is not None:
            self.on = on
        return before

    @contextlib.contextmanager
    def off(self) -> Iterator[None]:
        """Off inside, as it was after."""
        before = self.enabled(False)
        try:
            yield
        finally:
            self.enabled(before)
