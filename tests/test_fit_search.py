"""search_largest, the batch search behind max_batch_size, against synthetic peaks: no torch, no analysis.

``run`` asks the search for the largest batch whose peak is within ``budget`` (no allowance, so ``room`` is the
budget itself) and records, in order, every distinct batch the search checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from torchcost.fit import Allowance, boundary_from_peaks, boundary_from_timelines, search_largest


def run(peak: Callable[[int], int], budget: int, limit: int = 1 << 20,
        predict: Callable[[], int | None] | None = None) -> tuple[int, bool, list[int]]:
    probed: list[int] = []

    def fits(b: int) -> bool:
        if b not in probed:
            probed.append(b)
        return peak(b) <= budget

    def peak_at(b: int) -> int:
        assert b in probed, f"peak_at({b}) before fits({b})"  # max_batch_size only has the peaks it analyzed
        return peak(b)

    batch, at_limit = search_largest(fits, peak_at, budget, limit, predict)
    return batch, at_limit, probed


def line(b: int) -> int:
    return 1000 + 10 * b


def test_straight_line_settles_in_four_probes() -> None:
    # peak(b) = 1000 + 10*b <= 1500  ->  b <= 50
    batch, at_limit, probed = run(line, 1500)
    assert (batch, at_limit) == (50, False)
    assert 50 in probed and 51 in probed  # the answer is proven: 50 fits, 51 was checked and does not
    # the line through 1 (1,010) and 2 (1,020) reaches 1,500 at 1 + 490 / 10 = 50; its successor settles it
    assert probed == [1, 2, 50, 51]


def test_straight_line_off_the_grid() -> None:
    # peak(b) = 8_008_000 + 12_000*b <= 8_008_000 + 12_000*100 + 5_000  ->  b <= 100 + 5/12  ->  b <= 100
    batch, _, probed = run(lambda b: 8_008_000 + 12_000 * b, 8_008_000 + 12_000 * 100 + 5_000)
    assert batch == 100 and {100, 101} <= set(probed) and len(probed) <= 6


def steeper_after_40(b: int) -> int:
    return 1000 + 10 * b if b <= 40 else 1400 + 30 * (b - 40)


def flatter_after_10(b: int) -> int:
    return 100 * b if b <= 10 else 1000 + (b - 10)


def staircase(b: int) -> int:
    return 1000 + 100 * math.ceil(b / 8)  # an allocator rounding each batch of 8 samples up to one block


def steeper_at_100_200_300(b: int) -> int:
    # slopes 10, 20, 40, 80: each secant across a knee lands short, so the search must bisect
    return 1000 + 10 * b + 10 * max(0, b - 100) + 20 * max(0, b - 200) + 40 * max(0, b - 300)


@pytest.mark.parametrize(("peak", "budget", "expected"), [
    # b <= 40 peaks at 1400 <= 2000; beyond, 1400 + 30*(b-40) <= 2000  ->  b - 40 <= 20  ->  b <= 60
    (steeper_after_40, 2000, 60),
    # b <= 10 peaks at 1000 <= 1500; beyond, 1000 + (b-10) <= 1500  ->  b <= 510
    (flatter_after_10, 1500, 510),
    # 1000 + 100*ceil(b/8) <= 2000  ->  ceil(b/8) <= 10  ->  b <= 80
    (staircase, 2000, 80),
    # on (200, 300]: 1000 + 10*b + 10*(b-100) + 20*(b-200) = 40*b - 4000 <= 6000  ->  b <= 250 (peak(200) = 4000)
    (steeper_at_100_200_300, 6000, 250),
])
def test_bent_peaks_get_the_exact_boundary(peak: Callable[[int], int], budget: int, expected: int) -> None:
    batch, at_limit, probed = run(peak, budget)
    assert (batch, at_limit) == (expected, False)
    assert expected in probed and expected + 1 in probed
    assert len(probed) <= 16  # a few analyses, not a scan


def test_a_peak_that_bends_upwards_follows_its_own_slope() -> None:
    # a prompt's attention scores grow with its square: peak(b) = 1,000,000 + 1,000*b + b*b <= 50,000,000
    # -> b*b + 1,000*b - 49,000,000 <= 0 -> b <= (-1,000 + sqrt(197,000,000)) / 2 = (-1,000 + 14,035.7) / 2 = 6,517.8
    # (6,517: 42,471,289 + 6,517,000 + 1,000,000 = 49,988,289 fits; 6,518: 50,002,324 does not)
    def peak(b: int) -> int:
        return 1_000_000 + 1_000 * b + b * b

    batch, at_limit, probed = run(peak, 50_000_000)
    assert (batch, at_limit) == (6_517, False) and {6_517, 6_518} <= set(probed)
    # every line through two far-apart probes lands short of the boundary (the chord of a convex peak lies above
    # it): 27 probes when only those were followed; the peak's own slope at a pair of neighbours lands just past it
    assert len(probed) <= 14


def test_limit_respected_and_reported() -> None:
    # the boundary is 50 (peak(b) = 1000 + 10*b <= 1500), beyond the limit of 32
    batch, at_limit, probed = run(line, 1500, limit=32)
    assert (batch, at_limit) == (32, True)
    assert max(probed) == 32


def test_limit_one() -> None:
    # peak(1) = 1010 <= 1500: batch 1 fits, and the limit forbids asking about 2
    assert run(line, 1500, limit=1) == (1, True, [1])


def test_limit_above_the_boundary_is_not_reached() -> None:
    # boundary 50 (as above) < limit 64
    assert run(line, 1500, limit=64)[:2] == (50, False)


def test_nothing_fits() -> None:
    # peak(1) = 1010 > 1009
    assert run(line, 1009) == (0, False, [1])


def test_only_one_fits() -> None:
    # peak(1) = 1010 <= 1015 < 1020 = peak(2)
    assert run(line, 1015) == (1, False, [1, 2])


@pytest.mark.parametrize("peak", [lambda b: 1000, lambda b: max(0, 1000 - b)], ids=["flat", "falling"])
def test_peak_that_does_not_rise_gallops_to_the_limit(peak: Callable[[int], int]) -> None:
    # peak(b) <= 1000 <= 1500 for every b: no line through two probes reaches the budget, so the batch doubles
    # from 2 (4, 8, ..., 512) and stops at the limit, 1000
    assert run(peak, 1500, limit=1000) == (1000, True, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000])


def test_allowance_decides_what_fits() -> None:
    allowance = Allowance(reserve=100, fragmentation=0.25)
    # needed(p) = ceil(1.25*p) + 100; with p = 200 + 8*b: 250 + 10*b + 100 <= 1350  ->  b <= 100

    def peak(b: int) -> int:
        return 200 + 8 * b

    batch, at_limit = search_largest(lambda b: allowance.needed(peak(b)) <= 1350, peak, allowance.room(1350), 1 << 20)
    assert (batch, at_limit) == (100, False)


def test_allowance_formula() -> None:
    allowance = Allowance(reserve=2**30, fragmentation=0.25)
    assert allowance.needed(1001) == 1252 + 2**30  # 1.25 * 1001 = 1251.25, rounded up
    assert allowance.needed(0) == 2**30
    assert allowance.room(2**30 + 1250) == 1000.0  # (budget - reserve) / 1.25
    assert Allowance(0, 0.0).needed(123) == 123


# --- guesses from the probes' memory timelines (max_batch_size's predict) ------------------------------------------

def three_ops(b: int) -> tuple[int, int, int]:
    """Bytes alive after each of three ops at batch ``b``: 90 + 10b (the weights' op), 250 + 50b, 170 + 80b."""
    return 90 + 10 * b, 250 + 50 * b, 170 + 80 * b


def test_timelines_give_the_boundary_of_the_highest_line() -> None:
    # room 1000: op 1 reaches it at b = (1000 - 90) / 10 = 91, op 2 at (1000 - 250) / 50 = 15, op 3 at
    # (1000 - 170) / 80 = 10.375: the first is 10 (at b = 10: 190, 750, 970 <= 1000; at 11: 1050 > 1000).
    # The line through the peaks at 1 and 2 (op 2's 300 and 350) would say 15.
    ops = ("addmm", "relu", "mm")
    timelines = {1: (ops, three_ops(1)), 2: (ops, three_ops(2))}
    assert boundary_from_timelines(timelines, 1000, 1 << 20) == 10
    assert boundary_from_timelines(timelines, 1000, 8) == 8  # within the limit


def test_timelines_pair_only_runs_of_the_same_ops() -> None:
    ops = ("addmm", "relu", "mm")
    other = ("addmm", "view", "mm")  # batch 1 took another path (a squeeze, a fast path)
    assert boundary_from_timelines({1: (other, three_ops(1)), 2: (ops, three_ops(2))}, 1000, 1 << 20) is None
    # the largest pair of the same ops: 2 and 5 (5: 140, 500, 570), not batch 1
    timelines = {1: (other, (0, 0, 0)), 2: (ops, three_ops(2)), 5: (ops, three_ops(5))}
    assert boundary_from_timelines(timelines, 1000, 1 << 20) == 10


def test_timelines_that_do_not_grow_give_no_guess() -> None:
    ops = ("addmm",)
    assert boundary_from_timelines({1: (ops, (500,)), 2: (ops, (500,))}, 1000, 1 << 20) is None
    assert boundary_from_timelines({1: (ops, (1500,)), 2: (ops, (1500,))}, 1000, 1 << 20) is None


def highest_line(b: int) -> int:
    return max(three_ops(b))


def run_predicted(timeline: Callable[[int], tuple[int, ...]], budget: int,
                  limit: int = 1 << 20) -> tuple[int, bool, list[int]]:
    """``run`` with max_batch_size's predictions: from the timelines of the batches probed so far."""
    probed: list[int] = []
    ops = tuple(f"op{i}" for i in range(len(timeline(1))))

    def predict() -> int | None:
        return boundary_from_timelines({b: (ops, timeline(b)) for b in probed}, budget, limit)

    def fits(b: int) -> bool:
        if b not in probed:
            probed.append(b)
        return max(timeline(b)) <= budget

    batch, at_limit = search_largest(fits, lambda b: max(timeline(b)), budget, limit, predict)
    return batch, at_limit, probed


def test_lines_per_op_settle_in_four_probes() -> None:
    # highest_line(b) <= 1000  ->  b <= 10 (above); the guess from 1 and 2 is 10, and 11 proves it
    assert run_predicted(three_ops, 1000) == (10, False, [1, 2, 10, 11])
    # the line through the peaks at 1 and 2 (op 2's 300, 350) alone: 15 first
    assert run(highest_line, 1000)[2][:3] == [1, 2, 15]


def rounded(b: int) -> tuple[int, ...]:
    """Each op's bytes rounded up to 512-byte blocks, as a "cuda" target's allocator does: 8 + 600b and 4,000 +
    100b, each rounded up to a multiple of 512 bytes."""
    return tuple(-(-x // 512) * 512 for x in (8 + 600 * b, 4_000 + 100 * b))


def test_a_guess_off_by_rounding_follows_the_slope_at_the_guess() -> None:
    # rounded(b)[0] = 512 * ceil((8 + 600b) / 512) <= 1,000,000  ->  8 + 600b <= 999,936 (a multiple of 512: 1953
    # blocks)  ->  b <= 1,666.5  ->  1,666 (8 + 999,600 = 999,608 -> 999,936 fits; 1,667: 1,000,208 -> 1,000,448 does
    # not); op 2 stays below (4,000 + 166,600). From 1 and 2 (1,024 and 1,536: 512 a sample, not 600) the first guess
    # lands past it (1,952) and fails; the next ones come from pairs of neighbours, whose rounding the search
    # outlasts. Without predictions: 15 probes (the peaks at 1 and 2 are op 2's 4,608 twice: no line, so doubling)
    batch, at_limit, probed = run_predicted(rounded, 1_000_000)
    assert (batch, at_limit) == (1_666, False) and {1_666, 1_667} <= set(probed)
    assert len(probed) <= 9
    assert len(run(lambda b: max(rounded(b)), 1_000_000)[2]) == 15


def test_guesses_that_miss_leave_the_search_to_go_on() -> None:
    # a predictor that always says 3 (far below the boundary of 50 for line(b) = 1000 + 10b <= 1500): each guess is
    # clamped to what is known to fit and checked with its successor (3, 4; 5; 6), then the search doubles and
    # narrows as without predictions
    batch, at_limit, probed = run(line, 1500, predict=lambda: 3)
    assert (batch, at_limit) == (50, False) and probed[:6] == [1, 2, 3, 4, 5, 6]
    # one that always says 1 << 20 (far above): 2^20 and 2^20 - 1 fail, then each guess is clamped below what
    # failed (2^20 - 2, 2^20 - 3; ...), and regula falsi from 2 finds 50
    batch, at_limit, probed = run(line, 1500, predict=lambda: 1 << 20)
    assert (batch, at_limit) == (50, False) and len(probed) <= 16


def test_a_guess_at_the_limit_that_fits() -> None:
    # line(b) = 1000 + 10b <= 1500 up to 50: a guess of 32 = the limit fits, and the search stops there
    assert run(line, 1500, limit=32, predict=lambda: 32) == (32, True, [1, 2, 32])


def test_without_a_guess_the_line_is_followed_and_asked_again() -> None:
    # no guess at first (the probes at 1 and 2 ran different ops): the line through 1 and 2 (op 2's 300 and 350)
    # lands on 15 (> 10: fails), then the guess from 2 and 15 is 10: probes 1, 2, 15, 10, 11
    asked: list[int] = []

    def predict() -> int | None:
        asked.append(len(asked))
        return None if len(asked) == 1 else 10

    assert run(highest_line, 1000, predict=predict) == (10, False, [1, 2, 15, 10, 11])
    assert len(asked) == 2


# --- a parabola's guess (fit.py boundary_from_peaks: serving's --max-context) -----------------------------------


def test_parabola_through_a_pair_and_a_probe_across_the_boundary() -> None:
    # peak(x) = x^2 + 3x + 100: peak(7) = 49 + 21 + 100 = 170, peak(8) = 64 + 24 + 100 = 188, peak(150) = 22,500 +
    # 450 + 100 = 23,050; within 10,000: x^2 + 3x - 9,900 <= 0, x <= (-3 + sqrt(9 + 39,600)) / 2 = 98.01:
    # peak(98) = 9,604 + 294 + 100 = 9,998 fits, peak(99) = 9,801 + 297 + 100 = 10,198 does not
    assert boundary_from_peaks({7: 170, 8: 188, 150: 23_050}, 10_000, 1000) == 98
    assert boundary_from_peaks({7: 170, 8: 188, 150: 23_050}, 10_000, 50) == 50  # (the limit)
    # no pair of neighbours but 1 and 2 (the line through them was the first guess): none
    assert boundary_from_peaks({1: 104, 2: 110, 150: 23_050}, 10_000, 1000) is None
    assert boundary_from_peaks({7: 170, 8: 188}, 10_000, 1000) is None  # (a pair alone)
    # no bend: 10x (the pair 2, 3 and 10 across) reaches 95 at 9.5
    assert boundary_from_peaks({2: 20, 3: 30, 10: 100}, 95, 1000) == 9
    # -x^2 + 13x - 12 (peaks 10, 18, 28 at 2, 3, 5): at most 30.25 at 6.5, never 100; the line through the pair
    # 2, 3 (slope 8) then: 2 + 90 / 8 = 13.25
    assert boundary_from_peaks({2: 10, 3: 18, 5: 28}, 100, 1000) == 13
    # (x - 10)^2 (peaks 64, 49, 36 at 2, 3, 4) falls to 36 at 4 and rises through it at 16: the pair 3, 4 (nearest
    # 36) and 2 across; through 400 it rises at 30: the pair 2, 3 and, none across, 4
    assert boundary_from_peaks({2: 64, 3: 49, 4: 36}, 36, 1000) == 16
    assert boundary_from_peaks({2: 64, 3: 49, 4: 36}, 400, 1000) == 30
    # x^2 + 2x + 105 (peaks 140, 153, 168, 545 at 5, 6, 7, 20), within 200: x <= -1 + sqrt(96) = 8.80: the pair
    # nearest 200 is 6, 7 and the probe across it nearest is 20; the probe at 1, another regime's peak, is left out
    assert boundary_from_peaks({1: 3000, 5: 140, 6: 153, 7: 168, 20: 545}, 200, 1000) == 8


def test_search_refined_by_the_parabola_settles_a_bending_peak() -> None:
    # peak(x) = x^2 + 3x + 100, room 10,000 (above): the line through 1 and 2 (slope 6) guesses
    # 1 + (10,000 - 104) // 6 = 1,650, which does not fit; the secant from 2 to 1,650, slope
    # (2,722,500 + 4,950 + 100 - 110) / 1,648 = 1,655, lands at 2 + 9,890 // 1,655 = 7: 7 and 8 fit; the parabola
    # through 7, 8 and 1,650 is the peak itself: 98, which fits, and 99, which does not
    def peak(x: int) -> int:
        return x * x + 3 * x + 100

    probed: list[int] = []

    def fits(x: int) -> bool:
        if x not in probed:
            probed.append(x)
        return peak(x) <= 10_000

    def refine() -> int | None:
        return boundary_from_peaks({x: peak(x) for x in probed}, 10_000, 1 << 20)

    assert search_largest(fits, peak, 10_000, 1 << 20, refine=refine) == (98, False)
    assert probed == [1, 2, 1650, 7, 8, 98, 99]
    # without it: the local line through 7 and 8 (slope 18) lands past, at 8 + 9,812 // 18 = 553, and so on
    assert len(run(peak, 10_000)[2]) > len(probed)


def test_a_refining_guess_that_lands_short_is_asked_three_times() -> None:
    # a guesser that always says "one past the largest that fits": each round it only moves lo, so after three
    # such rounds the search goes on without it (lines and bisection) and still proves x^2 + 3x + 100's 98
    def peak(x: int) -> int:
        return x * x + 3 * x + 100

    asked = [0]

    def refine() -> int | None:
        asked[0] += 1
        return max(x for x in probed if peak(x) <= 10_000) + 1

    probed: list[int] = []

    def fits(x: int) -> bool:
        if x not in probed:
            probed.append(x)
        return peak(x) <= 10_000

    assert search_largest(fits, peak, 10_000, 1 << 20, refine=refine) == (98, False)
    assert asked[0] == 3 and {98, 99} <= set(probed)
