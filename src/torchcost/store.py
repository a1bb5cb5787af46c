"""The files torchcost keeps between processes: figures it measured on this machine that a later process would
measure again to the same value (the CPU's peaks, timing/cpu.py; the kernel memory of probed CPU calls,
collect/probe.py).

They live in ``$TORCHCOST_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/torchcost`` (default ``~/.cache/torchcost``).
``TORCHCOST_CACHE_DIR=off`` (or empty, ``0``, ``none``) keeps nothing on disk: each process then measures for
itself. A file is written whole to a temporary name and renamed into place (two processes writing at once leave one
whole file, never a torn one); a file that cannot be read or parsed counts as empty, and one that cannot be written
(a read-only home) is skipped: the process's own caches still hold what it measured.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["ENV", "cache_dir", "cpu_name", "read_json", "write_json"]

ENV = "TORCHCOST_CACHE_DIR"
_OFF = frozenset({"", "0", "off", "none", "false", "no"})


def cache_dir() -> Path | None:
    """Where torchcost keeps its files, or None when the user turned them off (see the module's text)."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    root = os.environ.get("XDG_CACHE_HOME")
    if not root:
        try:
            root = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):  # (no home directory to be found: keep nothing)
            return None
    return Path(root) / "torchcost"


def read_json(name: str) -> Any:
    """The parsed content of file ``name`` in :func:`cache_dir`, or None (no such file, turned off, unreadable)."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(name: str, data: Any) -> bool:
    """Write ``data`` as file ``name`` in :func:`cache_dir` (made if missing), atomically; whether it was written."""
    folder = cache_dir()
    if folder is None:
        return False
    path = folder / name
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError:  # (a read-only home: the caller's in-process cache still holds it)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False
    return True


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"
