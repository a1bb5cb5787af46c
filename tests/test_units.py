"""units.parse_bytes: memory sizes as the CLI and max_batch_size accept them."""

from __future__ import annotations

import pytest

from torchcost.units import parse_bytes


@pytest.mark.parametrize(("text", "value"), [
    ("24GiB", 24 * 2**30), ("24G", 24 * 2**30), ("24 GB", 24 * 10**9), ("512MiB", 512 * 2**20),
    ("1.5TiB", int(1.5 * 2**40)), (1000, 1000), ("100", 100),
])
def test_parse_bytes(text: str | int, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["lots", "-3", "24 GiBs", ""])
def test_parse_bytes_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)
