"""The figures' pure parts: percentiles, ranges, depth buckets, the summary sentence."""
from __future__ import annotations

import random
from datetime import date

import pytest

from cases.figures import (
    MAX_DAYS,
    RangeError,
    Reach,
    Tally,
    check_range,
    depth_buckets,
    parse_day,
    percentile_cont,
    percentile_from_ranks,
    percentile_ranks,
    preset_range,
    summary,
)


@pytest.mark.parametrize("values, p, expected", [
    ([10, 20, 30, 40], 0.5, 25.0),
    ([10, 20, 30, 40], 0.9, 37.0),
    ([40, 10, 30, 20], 0.9, 37.0),  # any order
    ([7.5], 0.5, 7.5),
    ([7.5], 0.9, 7.5),
    ([1, 2, 3], 0.5, 2.0),  # an exact rank: no interpolation
    ([0, 100], 0.9, 90.0),
    ([], 0.5, None),
])
def test_percentile_cont_interpolates_linearly(values, p, expected):
    assert percentile_cont(values, p) == expected


def test_the_ranks_a_percentile_reads():
    assert percentile_ranks(4, 0.5) == (1, 2)
    assert percentile_ranks(5, 0.5) == (2, 2)
    assert percentile_ranks(6, 0.9) == (4, 5)
    assert percentile_ranks(1, 0.9) == (0, 0)


def test_two_ranked_values_give_the_same_percentile_as_the_whole_list():
    rng = random.Random(96608)
    for _ in range(500):
        values = sorted(rng.uniform(1, 600) for _ in range(rng.randint(1, 60)))
        for p in (0.5, 0.9):
            first, second = percentile_ranks(len(values), p)
            assert percentile_from_ranks(len(values), p, {first: values[first], second: values[second]}) \
                == percentile_cont(values, p)
    assert percentile_from_ranks(0, 0.5, {}) is None


def test_depth_folds_into_one_to_four_and_five_or_more():
    assert depth_buckets({1: 10, 2: 3, 4: 1, 5: 2, 9: 1}) == (10, 3, 0, 1, 3)
    assert depth_buckets({}) == (0, 0, 0, 0, 0)


def test_rates_and_means_of_nothing_are_none():
    assert Tally().answer_rate is None and Tally(calls=4, connected=3).answer_rate == 0.75
    assert Reach().mean_depth is None and Reach(answered=2, depth_sum=3).mean_depth == 1.5


@pytest.mark.parametrize("preset, expected", [
    ("today", (date(2026, 3, 5), date(2026, 3, 5))),
    ("7d", (date(2026, 2, 27), date(2026, 3, 5))),
    ("30d", (date(2026, 2, 4), date(2026, 3, 5))),
    ("year", (date(2026, 1, 1), date(2026, 3, 5))),
])
def test_presets(preset, expected):
    assert preset_range(preset, date(2026, 3, 5)) == expected


def test_an_unknown_preset_is_refused():
    with pytest.raises(RangeError):
        preset_range("forever", date(2026, 3, 5))


@pytest.mark.parametrize("text", ["", "2026-3-5", "2026-02-30", "05/03/2026", "2026-03-05T00:00",
                                  "２０２６-０３-０５", "2026-03-05\n", "<script>", "9" * 5000, "2026-W10-1"])
def test_a_day_is_strictly_yyyy_mm_dd(text):
    with pytest.raises(RangeError):
        parse_day(text)


def test_a_day():
    assert parse_day("2026-03-05") == date(2026, 3, 5)


def test_ranges_are_checked():
    assert check_range(date(2026, 1, 1), date(2026, 12, 31)) == (date(2026, 1, 1), date(2026, 12, 31))
    for start, end in [(date(2026, 3, 2), date(2026, 3, 1)), (date(1999, 12, 31), date(2000, 1, 2)),
                       (date(2099, 12, 31), date(2100, 1, 1)),
                       (date(2000, 1, 1), date.fromordinal(date(2000, 1, 1).toordinal() + MAX_DAYS))]:
        with pytest.raises(RangeError):
            check_range(start, end)


@pytest.mark.parametrize("start, end, zh, en", [
    (date(2026, 1, 1), date(2026, 12, 31), "2026年1月1日至12月31日", "From 1 January to 31 December 2026"),
    (date(2025, 12, 1), date(2026, 1, 31), "2025年12月1日至2026年1月31日",
     "From 1 December 2025 to 31 January 2026"),
    (date(2026, 3, 5), date(2026, 3, 5), "2026年3月5日", "On 5 March 2026"),
])
def test_the_summary_names_the_range(start, end, zh, en):
    assert summary(start, end, 12345, 9876, 543, 42, "zh") == \
        f"{zh}：热线共接听 12345 例，实时会诊 9876 例，转诊 543 例，来自 42 家合作医院"
    assert summary(start, end, 12345, 9876, 543, 42, "en") == \
        f"{en}: 12,345 calls, 9,876 real-time consultations, 543 referrals, from 42 partner hospitals"


def test_the_english_summary_counts_in_the_singular_for_one():
    assert summary(date(2026, 3, 5), date(2026, 3, 5), 1, 1, 1, 1, "en") == \
        "On 5 March 2026: 1 call, 1 real-time consultation, 1 referral, from 1 partner hospital"
