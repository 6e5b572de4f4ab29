"""Backfill windows: lag clamp, SOQL, and time splitting that partitions a window exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resources.salesforce.windows import Window, clamp_to_lag, split_by_time

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


def test_window_where_is_half_open() -> None:
    assert Window(T0, T1).where() == (
        "SystemModstamp >= 2026-01-01T00:00:00Z AND SystemModstamp < 2026-01-02T00:00:00Z"
    )


def test_window_rejects_fractional_or_naive_bounds() -> None:
    with pytest.raises(ValueError):
        Window(T0.replace(microsecond=5), T1)
    with pytest.raises(ValueError):
        Window(T0.replace(tzinfo=None), T1)


def test_clamp_never_reaches_into_the_lag() -> None:
    now = datetime(2026, 1, 1, 12, 0, 30, 500_000, tzinfo=UTC)
    w = clamp_to_lag(T0, T1, now, timedelta(minutes=5))
    assert w is not None and w.end == datetime(2026, 1, 1, 11, 55, 30, tzinfo=UTC)
    assert clamp_to_lag(now - timedelta(minutes=1), T1, now, timedelta(minutes=5)) is None


seconds = st.integers(0, 10 * 86_400)


@settings(max_examples=300, deadline=None)
@given(
    bounds=st.tuples(seconds, seconds).filter(lambda b: b[0] != b[1]).map(sorted),
    edges=st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted),
    pieces=st.integers(1, 60),
    probes=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=30),
)
def test_time_split_is_a_partition_of_the_window(
    bounds: list[int], edges: list[float], pieces: int, probes: list[float]
) -> None:
    window = Window(T0 + timedelta(seconds=bounds[0]), T0 + timedelta(seconds=bounds[1]))
    width = window.end - window.start
    # first/last: stamps seen in the window, with milliseconds (REST stamps carry them).
    first = window.start + (width - timedelta(milliseconds=1)) * edges[0]
    last = window.start + (width - timedelta(milliseconds=1)) * edges[1]
    split = split_by_time(window, first, last, pieces)
    assert 1 <= len(split) <= pieces
    assert split[0].start == window.start and split[-1].end == window.end
    assert all(a.end == b.start for a, b in pairwise(split))  # no gap, no overlap
    width_us = width // timedelta(microseconds=1)
    for p in probes:  # every instant is in exactly one piece
        instant = window.start + timedelta(microseconds=min(int(width_us * p), width_us - 1))
        assert sum(piece.contains(instant) for piece in split) == 1
    span_s = (last.replace(microsecond=0) - first.replace(microsecond=0)).total_seconds() + 1
    if span_s >= pieces:  # enough whole seconds to cut: exactly the pieces asked for
        assert len(split) == pieces


def test_time_split_cuts_the_seen_span_evenly_and_keeps_outer_bounds_open() -> None:
    first = T0 + timedelta(hours=6)
    last = T0 + timedelta(hours=10) - timedelta(seconds=1)
    split = split_by_time(Window(T0, T1), first, last, 4)
    assert [p.start for p in split] == [T0] + [T0 + timedelta(hours=h) for h in (7, 8, 9)]
    assert split[-1].end == T1
    assert split_by_time(Window(T0, T1), first, first, 4) == [Window(T0, T1)]  # one second
    with pytest.raises(ValueError):
        split_by_time(Window(T0, T1), first, last, 0)
