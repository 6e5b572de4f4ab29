"""Backfill windows: lag clamp, SOQL, and Id-keyset splitting that covers a window exactly."""

from __future__ import annotations

from bisect import bisect_left
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resources.salesforce.errors import InvalidIdentifierError, WindowTooLargeError
from resources.salesforce.windows import (
    BASE62,
    ID_SPACE,
    Window,
    clamp_to_lag,
    id_to_int,
    int_to_id,
    split_by_id,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


def test_window_where_is_half_open() -> None:
    w = Window(T0, T1, "00T5g0000000001", "00T5g0000000009")
    assert w.where() == (
        "SystemModstamp >= 2026-01-01T00:00:00Z AND SystemModstamp < 2026-01-02T00:00:00Z"
        " AND Id >= '00T5g0000000001' AND Id < '00T5g0000000009'"
    )


def test_window_rejects_injected_id_bounds() -> None:
    with pytest.raises(InvalidIdentifierError):
        Window(T0, T1, "x' OR Id != '").where()


def test_clamp_never_reaches_into_the_lag() -> None:
    now = datetime(2026, 1, 1, 12, 0, 30, 500_000, tzinfo=UTC)
    w = clamp_to_lag(T0, T1, now, timedelta(minutes=5))
    assert w is not None and w.end == datetime(2026, 1, 1, 11, 55, 30, tzinfo=UTC)
    assert clamp_to_lag(now - timedelta(minutes=1), T1, now, timedelta(minutes=5)) is None


def test_id_int_round_trip_preserves_order() -> None:
    ids = ["00T5g0000000001", "00T5g000000000A", "00T5g000000000a", "00T5g00000000z0"]
    assert sorted(ids) == ids
    assert [id_to_int(i) for i in ids] == sorted(id_to_int(i) for i in ids)
    assert all(int_to_id(id_to_int(i)) == i for i in ids)


id15 = st.text(alphabet=BASE62, min_size=15, max_size=15)


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(id15, min_size=1, max_size=300, unique=True), max_rows=st.integers(1, 50))
def test_split_covers_every_id_exactly_once(ids: list[str], max_rows: int) -> None:
    ids.sort()
    keys = [id_to_int(i) for i in ids]

    def rows_in(w: Window) -> list[str]:
        lo = id_to_int(w.id_lo) if w.id_lo else 0
        hi = id_to_int(w.id_hi) if w.id_hi else ID_SPACE
        return ids[bisect_left(keys, lo) : bisect_left(keys, hi)]

    pieces = split_by_id(
        Window(T0, T1),
        len(ids),
        lambda w: len(rows_in(w)),
        max_rows,
        lo=keys[0],
        hi=keys[-1] + 1,
    )
    covered = [i for w in pieces for i in rows_in(w)]
    assert sorted(covered) == ids  # every row once, none twice
    assert all(0 < len(rows_in(w)) <= max_rows for w in pieces)
    assert pieces[0].id_lo is None and pieces[-1].id_hi is None  # outer bounds stay open


def test_split_refuses_a_single_id_over_the_cap() -> None:
    with pytest.raises(WindowTooLargeError):
        split_by_id(Window(T0, T1), 5, lambda w: 5, 1, lo=10, hi=11)
