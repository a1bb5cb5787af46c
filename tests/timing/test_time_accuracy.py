"""The CPU validation benchmark's rank correlation (benchmarks/time_accuracy.py)."""

from __future__ import annotations

import math

from benchmarks.time_accuracy import spearman


def test_spearman() -> None:
    assert math.isclose(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1.0)
    assert math.isclose(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1.0)
    # ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3), both of mean 1.5: deviations (-1.5, 0, 0, 1.5) and
    # (-1.5, -0.5, 0.5, 1.5); covariance 2.25 + 2.25 = 4.5, squares 4.5 and 5: 4.5 / sqrt(4.5 * 5)
    assert math.isclose(spearman([1, 2, 2, 3], [1, 2, 3, 4]), 4.5 / math.sqrt(22.5))
    assert math.isnan(spearman([1, 2], [1, 2]))
