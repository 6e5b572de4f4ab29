"""change_events.build_events without a store: merging, sequence numbers and overflow."""

from __future__ import annotations

from functools import cache

from sfdc_emulator import cdc
from sfdc_emulator.change_events import (
    MAX_MERGED_IDS,
    CommitHeader,
    PendingEvent,
    build_events,
)
from sfdc_emulator.describe import default_catalog
from sfdc_emulator.transaction import Change

HEADER = CommitHeader(
    commit_ts=1_750_000_000_123,
    commit_number=1_750_000_000_123_000,
    transaction_key="txn-1",
    origin="com/salesforce/api/rest/59.0",
    user="0055g0000000001AAA",
)


@cache
def layout(obj: str) -> cdc.EventLayout:
    return cdc.EventLayout(default_catalog()[obj])


def _update(rid: str, **values: object) -> Change:
    return Change("Account", "UPDATE", rid, sorted(values), [], dict(values))


def _header(event: PendingEvent) -> dict:
    return cdc.decode(layout(event.entity).schema_json, event.payload)["ChangeEventHeader"]


def test_identical_updates_and_deletes_merge_while_creates_stay_apart() -> None:
    changes = [
        _update("001A", Rating="Hot"),
        Change("Account", "CREATE", "001C", [], [], {"Name": "c"}),
        _update("001B", Rating="Hot"),
        _update("001D", Rating="Cold"),
        Change("Account", "DELETE", "001E", [], [], None),
        Change("Account", "DELETE", "001F", [], [], None),
        Change("Account", "CREATE", "001G", [], [], {"Name": "g"}),
    ]
    events = build_events(changes, layout, HEADER, overflow_limit=100_000)
    assert [(e.change_type, e.record_ids) for e in events] == [
        ("UPDATE", ["001A", "001B"]),
        ("CREATE", ["001C"]),
        ("UPDATE", ["001D"]),
        ("DELETE", ["001E", "001F"]),
        ("CREATE", ["001G"]),
    ]
    assert [e.sequence_number for e in events] == [1, 2, 3, 4, 5]


def test_every_event_carries_the_commit_header() -> None:
    (event,) = build_events(
        [Change("Account", "DELETE", "001E", [], [], None)], layout, HEADER, 100_000
    )
    header = _header(event)
    assert event.commit_ts == header["commitTimestamp"] == HEADER.commit_ts
    assert header["commitNumber"] == HEADER.commit_number
    assert event.transaction_key == header["transactionKey"] == "txn-1"
    assert header["changeOrigin"] == HEADER.origin
    assert header["commitUser"] == HEADER.user
    assert event.schema_id == layout("Account").schema_id


def test_a_merged_event_names_at_most_max_merged_ids_records() -> None:
    changes = [
        Change("Account", "DELETE", f"001{i:015d}", [], [], None) for i in range(MAX_MERGED_IDS + 1)
    ]
    events = build_events(changes, layout, HEADER, overflow_limit=100_000)
    assert [len(e.record_ids) for e in events] == [MAX_MERGED_IDS, 1]


def test_changes_past_the_limit_become_one_gap_overflow_per_entity_after_the_rest() -> None:
    changes = [
        _update("001A", Rating="Hot", Phone="1"),  # costs 2
        Change("Contact", "CREATE", "003A", [], [], {"LastName": "a"}),  # 3
        Change("Account", "CREATE", "001B", [], [], {"Name": "b"}),  # 4: over
        Change("Contact", "DELETE", "003B", [], [], None),
        Change("Account", "DELETE", "001C", [], [], None),
    ]
    events = build_events(changes, layout, HEADER, overflow_limit=3)
    assert [(e.entity, e.change_type, e.record_ids) for e in events] == [
        ("Account", "UPDATE", ["001A"]),
        ("Contact", "CREATE", ["003A"]),
        ("Account", "GAP_OVERFLOW", []),
        ("Contact", "GAP_OVERFLOW", []),
    ]
    assert [e.sequence_number for e in events] == [1, 2, 3, 4]


def test_gap_updates_merge_without_field_data_and_number_one() -> None:
    changes = [
        Change("Account", "GAP_UPDATE", "001A", ["Rating"], [], {"Rating": "Hot"}),
        Change("Account", "GAP_UPDATE", "001B", ["Rating"], [], {"Rating": "Cold"}),
    ]
    (event,) = build_events(changes, layout, HEADER, overflow_limit=100_000)
    assert event.record_ids == ["001A", "001B"]
    assert event.sequence_number == 1
    payload = cdc.decode(layout("Account").schema_json, event.payload)
    assert payload["Rating"] is None
    assert payload["ChangeEventHeader"]["changedFields"] == []
