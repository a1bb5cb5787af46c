"""Ctrl-C during an analysis: recorded when it arrives, raised as KeyboardInterrupt at the next safe point.

Python's default SIGINT handler raises KeyboardInterrupt at whatever bytecode runs next. In a run that is often a
Python callback of PyTorch's C++ dispatch or fake-tensor machinery (a mode's ``__torch_function__``, a weakref
callback), where the exception aborts the interpreter (``terminate called ... KeyboardInterrupt``), is swallowed, or
leaves a mode on torch's stack. Inside :func:`deferred` the handler only records the signal; :func:`check` raises it
where an exception unwinds like any error of the model's: at module boundaries (:data:`LISTENER`, a ScopeListener),
between the phases of a run, and when the deferral ends.

Only the main thread receives signals, so only there is anything deferred, and only while the handler is Python's
own ``default_int_handler`` (a handler someone else installed is left alone). The previous handler is back before
the KeyboardInterrupt is raised.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["LISTENER", "InterruptListener", "check", "deferred"]


class _Pending:
    """Whether a SIGINT arrived while deferred (set by the handler, taken by :func:`check`)."""

    signalled = False


def _record(signum: int, frame: FrameType | None) -> None:
    _Pending.signalled = True


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _take() -> bool:
    """Whether a deferred SIGINT is waiting for this thread; it is forgotten once taken."""
    if not _Pending.signalled or not _main_thread():
        return False
    _Pending.signalled = False
    return True


def check() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived since the deferral began (a safe point: call it from Python
    frames only, never from a callback of torch's C++ machinery)."""
    if _take():
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside, in the main thread, a SIGINT is recorded instead of raised; :func:`check` raises it, and so does the
    end of the block (also when the block raised something else: the interrupt wins). Nested blocks share the
    outermost one's handler. Elsewhere (another thread, a handler not Python's default) nothing changes."""
    if not _main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    install = previous is signal.default_int_handler
    if not install and previous is not _record:
        yield
        return
    if install:
        _Pending.signalled = False
        signal.signal(signal.SIGINT, _record)
    interrupted = False  # (a flag, not the exception: holding that here would keep the run's frames in a cycle)
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
        if _take() and not interrupted:
            raise KeyboardInterrupt


class InterruptListener:
    """A ScopeListener that raises a deferred Ctrl-C when a module starts or ends (Python frames, outside C++)."""

    def enter(self, name: str) -> None:
        check()

    def exit(self, name: str, mark: object) -> None:
        check()


LISTENER = InterruptListener()
