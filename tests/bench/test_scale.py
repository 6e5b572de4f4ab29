"""bench.scale's arithmetic: the production rates and the commit → queryable matching."""

from __future__ import annotations

import pytest

from bench.scale import achieved_rates, latencies, traffic_mix, traffic_summary


def test_the_traffic_is_the_business_rates_per_second() -> None:
    rate, weights = traffic_mix()
    assert sum(weights.values()) == pytest.approx(1.0)
    per_day = {obj: w * rate * 86_400 for obj, w in weights.items()}
    assert per_day["Opportunity"] == pytest.approx(80_000)
    assert per_day["Task"] + per_day["Event"] == pytest.approx(5_000_000)


def test_each_change_is_timed_to_the_first_materialization_after_its_apply() -> None:
    # (commit, apply started): the apply at 12 is materialized at 13, not at 11.
    pairs = [(10.0, 12.0), (20.0, 25.0), (30.0, 40.0)]
    values, unmatched = latencies(pairs, [11.0, 13.0, 26.0])
    assert values == [3.0, 6.0]
    assert unmatched == 1  # applied at 40, nothing materialized after it


def test_the_traffic_summary_counts_committed_changes_per_object_not_skips() -> None:
    stats = {"update:Task": 5, "create:Task": 2, "update:Opportunity": 1, "skipped:X": 9}
    assert traffic_summary({"stats": stats}) == "Task 7, Opportunity 1"


def test_the_achieved_rates_say_how_far_the_traffic_fell_short() -> None:
    # 20 min at a third of the rates: ~1.67M activities and ~26.7K opportunities a day.
    stats = {"update:Task": 15_000, "update:Event": 8_150, "create:Opportunity": 370}
    text = achieved_rates({"stats": stats}, 1200)
    assert "Opportunity 26,640 a day (33% of 80K)" in text
    assert "activities 1,666,800 a day (33% of 5M)" in text


@pytest.mark.parametrize("resume", [False, True])
def test_the_report_says_whether_the_stack_was_warmed_up_or_resumed(resume: bool) -> None:
    import argparse

    from bench.scale import DEFAULT_COUNTS, render

    args = argparse.Namespace(minutes=20.0, resume=resume)
    rate, mix = traffic_mix()
    body = render(
        args,
        DEFAULT_COUNTS,
        rate,
        mix,
        {},
        [],
        {"stats": {}},
        [0, 2**20, 2**20],
        2400.0,
        60.0,
        "test machine",
    )
    if resume:
        assert "`python -m bench.scale --resume --dir DIR --minutes 20`" in body
        assert "not re-seeded, no warm-up" in body
        assert "Warm-up (bootstrap" not in body
    else:
        assert "`make bench-scale`" in body
        assert (
            "Warm-up (bootstrap of every object through the platform, no traffic): 40 min" in body
        )


def test_latencies_group_by_the_minute_of_their_commit() -> None:
    from bench.scale import by_minute, timed

    # Commits at 00:00:10, 00:00:50 and 00:01:05 UTC; the last one's apply is untimed.
    pairs = [(10.0, 12.0), (50.0, 55.0), (65.0, 90.0)]
    each, unmatched = timed(pairs, [13.0, 60.0])
    assert each == [(10.0, 3.0), (50.0, 10.0)] and unmatched == 1
    assert by_minute([*each, (70.0, 4.0)]) == [("00:00", [3.0, 10.0]), ("00:01", [4.0])]


def test_the_steady_rows_and_the_revenue_minutes_are_reported_when_asked() -> None:
    import argparse

    from bench.scale import DEFAULT_COUNTS, render

    args = argparse.Namespace(minutes=20.0, resume=True, steady_after=6.0)
    rate, mix = traffic_mix()
    steady = {"revenue": ([12.0, 40.0], 2, 0)}
    body = render(
        args,
        DEFAULT_COUNTS,
        rate,
        mix,
        {"revenue": ([12.0, 40.0, 90.0], 3, 0)},
        [],
        {"stats": {}},
        [0, 2**20, 2**20],
        0.0,
        60.0,
        "test machine",
        None,
        steady,
        [("22:46", [12.0]), ("22:47", [40.0])],
    )
    assert "commits from minute 6 of the traffic on" in body
    assert "| **revenue**, steady (Opportunity, cdc) | 2 |" in body
    assert "| 22:47 | 1 | 40.0 | 40.0 | 40.0 | 40.0 |" in body
