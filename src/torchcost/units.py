"""Pure formatting of counts, bytes and times. Every function names its unit; nothing here computes a cost."""

from __future__ import annotations

__all__ = ["format_bytes", "format_count", "format_int", "format_mib", "format_seconds"]

_PREFIXES = ((10**15, "P"), (10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K"))


def format_count(n: int | float, digits: int = 2) -> str:
    """Decimal SI prefixes for counts (MACs, FLOPs, parameters): 1790 -> '1.79 K', 4089184256 -> '4.09 G'."""
    value = float(n)
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f} {prefix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.{digits}f}"


def format_int(n: int) -> str:
    """Exact integer with thousands separators: 21591360 -> '21,591,360'."""
    return f"{n:,}"


def format_bytes(n: int | float, digits: int = 2) -> str:
    """Binary prefixes for memory (KiB = 1024 B): 1536 -> '1.50 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.{digits}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_mib(n: int | float, digits: int = 2) -> str:
    """Bytes as MiB (2**20 bytes) with a fixed number of decimals, the unit torchsummary's footer uses."""
    return f"{float(n) / 2**20:.{digits}f}"


def format_seconds(s: float) -> str:
    """Seconds with a readable unit: 0.0012 -> '1.20 ms'."""
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"
