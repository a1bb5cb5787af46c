"""What analyze() promises under threads and signals (docs/architecture.md, "Guarantees: threads and signals").

A run installs process-wide state: torch's global module hooks, the MultiheadAttention fast-path flag, the recursion
limit, a stand-in for ``torch._dynamo`` where nobody has imported it (run/dynamo.py). Two runs at once would see each
other's module calls and restore each other's flags, so :func:`exclusive` lets one analysis run at a time in the
process; other threads wait their turn. An analysis started from inside another in the same thread (from a model's
forward, a hook or a formula) is refused with a TorchcostError instead of deadlocking: it would be counted into the
outer run. While it holds the lock a run defers Ctrl-C (collect/interrupts.py), so it is raised cleanly; a main thread
waiting for its turn can be interrupted too. """

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from torchcost.collect import interrupts
from torchcost.errors import TorchcostError
from torchcost.run import dynamo

__all__ = ["exclusive", "importing"]

_LOCK = threading.Lock()
_POLL_S = 0.05  # how often a waiting main thread looks for a Ctrl-C


class _Holder:
    """The thread running the current analysis (its ident), None when none runs."""

    ident: int | None = None


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One analysis at a time in this process, with Ctrl-C deferred to safe points while it runs."""
    me = threading.get_ident()
    if _Holder.ident == me:  # only this thread sets its own ident, so no lock is needed to read it
        raise TorchcostError("analyze() was called while an analysis was running in the same thread (from a model's "
                             "forward, a hook or a formula); an analysis cannot contain another: run it before or "
                             "after")
    with interrupts.deferred():
        while not _LOCK.acquire(timeout=_POLL_S):
            interrupts.check()
        _Holder.ident = me
        try:
            with dynamo.deferred():  # (torch._dynamo is not imported for a run that compiles nothing: run/dynamo.py)
                yield
        finally:
            _Holder.ident = None
            _LOCK.release()


@contextlib.contextmanager
def importing() -> Iterator[None]:
    """A model library imported by torchcost's resolver (resolve/common.py ``require``): without ``torch._dynamo``
    where nobody has imported it (run/dynamo.py ``importing_library``), with the lock held, since the stand-ins are
    process-wide as a run's are (a thread running an analysis holds it already)."""
    if _Holder.ident == threading.get_ident():
        with dynamo.importing_library():
            yield
        return
    with _LOCK, dynamo.importing_library():
        yield
