"""Pure formatting of counts, bytes and times. Every function names its unit; nothing here computes a cost."""

from __future__ import annotations

__all__ = ["format_bytes", "format_count", "format_int", "format_mib", "format_seconds", "parse_bytes"]

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


_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
               "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}


def parse_bytes(text: str | int) -> int:
    """A memory size: an int of bytes, or text such as '24GiB', '24 GB', '512M', '1.5TiB'. KiB/MiB/GiB/TiB and the
    bare letters K/M/G/T are binary (2**30 for G, as GPU memory is quoted); kB/MB/GB/TB are decimal."""
    if isinstance(text, bool):
        raise ValueError(f"not a memory size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a memory size cannot be negative: {text}")
        return text
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError(f"not a memory size: {text!r} (write it as e.g. 24GiB, 24GB, 512MiB or a number of bytes)")
    return int(float(match.group(1)) * _BYTE_UNITS[unit])
