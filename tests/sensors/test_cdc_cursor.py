"""sensors/cursor.py: the typed CDC cursor reads and writes the JSON earlier versions wrote."""

from __future__ import annotations

from sensors.cursor import CUSTOM, EARLIEST, LATEST, CdcCursor, Landed, Rebackfill

# A cursor as the untyped sensor stored it (dumps of the dict `_load_cursor` filled).
STORED = (
    '{"last_commit_ms":1736935200000,"pending":[{"not_before":1736935500.25,'
    '"object":"Account","reason":"overflow","since_ms":1736934600000}],"policy":"CUSTOM",'
    '"replay":"00000000000000ff","unpositioned_since_ms":null,"unrequested":[{"batch_id":'
    '"cdc-data_RevenueChannel_chn-01-0f","day":"2025-01-15","kind":"cdc","meta":{"source":'
    '"cdc"},"object":"Opportunity"}]}'
)


def test_a_stored_cursor_reads_typed_and_writes_back_byte_for_byte() -> None:
    cursor = CdcCursor.from_json(STORED)

    assert cursor.replay_id == bytes.fromhex("00000000000000ff")
    assert cursor.policy == CUSTOM
    assert cursor.pending == [Rebackfill("Account", 1736934600000, "overflow", 1736935500.25)]
    assert cursor.unrequested[0] == Landed(
        "cdc", "Opportunity", "2025-01-15", "cdc-data_RevenueChannel_chn-01-0f", {"source": "cdc"}
    )
    assert cursor.to_json() == STORED


def test_a_new_sensor_starts_at_earliest_and_an_old_partial_cursor_takes_defaults() -> None:
    fresh = CdcCursor.from_json(None)
    assert (fresh.replay, fresh.policy) == (None, EARLIEST)
    assert fresh.pending == [] and fresh.unrequested == []

    partial = CdcCursor.from_json('{"replay": null, "policy": "LATEST"}')
    assert partial.policy == LATEST and partial.unpositioned_since_ms is None


def test_due_re_backfills_leave_the_cursor_and_later_ones_stay() -> None:
    cursor = CdcCursor()
    cursor.owe(["Account", "Opportunity"], 1000, "replay-id-expired", not_before=50.0)
    cursor.owe(["Task"], 2000, "overflow", not_before=90.0)

    due = cursor.take_due(now_s=60.0)

    assert [p.object for p in due] == ["Account", "Opportunity"]
    assert [p.object for p in cursor.pending] == ["Task"]


def test_regaining_a_position_after_a_resubscribe_reports_since_when_nothing_was_read() -> None:
    cursor = CdcCursor(replay="aa", policy=CUSTOM)
    cursor.resubscribe_latest(now_ms=5_000)
    assert (cursor.replay, cursor.policy, cursor.unpositioned_since_ms) == (None, LATEST, 5_000)

    assert cursor.position(b"\x00\x10", now_ms=9_000) == 5_000
    assert (cursor.replay, cursor.policy, cursor.unpositioned_since_ms) == ("0010", CUSTOM, None)
    # Positioned already: nothing unread.
    assert cursor.position(b"\x00\x11", now_ms=10_000) is None


def test_the_last_commit_only_moves_forward_and_a_copy_is_independent() -> None:
    cursor = CdcCursor(last_commit_ms=500)
    cursor.saw_commits([100, 300])
    assert cursor.last_commit_ms == 500
    cursor.saw_commits([700])
    assert cursor.last_commit_ms == 700

    copy = cursor.copy()
    copy.owe(["Account"], 1, "overflow", 0.0)
    assert cursor.pending == []
