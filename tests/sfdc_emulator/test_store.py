"""OrgStore write path, retention, delivery faults, schema changes and persistence."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from sfdc_emulator import cdc
from sfdc_emulator.clock import Clock
from sfdc_emulator.describe import FieldDef
from sfdc_emulator.store import CommitResult, Mutation, OrgStore, StoreError


def _opp(store: OrgStore, **values: object) -> str:
    base = {"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2025-03-31"}
    return store.commit([Mutation("create", "Opportunity", values={**base, **values})]).ids[0]


def _header(store: OrgStore, replay_id: int) -> dict:
    (event,) = [e for e in store.events_after(replay_id - 1, None, 1)]
    return cdc.decode(store.schema_json(event.schema_id), event.payload)["ChangeEventHeader"]


def test_commit_sets_system_modstamp_truncated_to_the_second(empty_store: OrgStore) -> None:
    result = empty_store.commit(
        [Mutation("create", "Account", values={"Name": "Acme", "Phone": "555"})]
    )
    row = empty_store.get("Account", result.ids[0])
    assert row is not None
    second = datetime.fromtimestamp(result.commit_ts // 1000, UTC).replace(tzinfo=None)
    assert row["SystemModstamp"] == second
    assert row["SystemModstamp"].microsecond == 0
    assert row["CreatedDate"] == row["LastModifiedDate"] == second
    assert row["CreatedById"] == empty_store.integration_user_id
    assert row["OwnerId"] == empty_store.integration_user_id
    assert row["IsDeleted"] is False


class _TickingClock(Clock):
    """Emulator time that moves 1 ms on every read, from ``next_ms``."""

    def __init__(self, next_ms: int) -> None:
        super().__init__()
        self.next_ms = next_ms

    def now_ms(self) -> int:
        self.next_ms += 1
        return self.next_ms - 1 + self.offset_ms


def test_a_delete_is_stamped_in_the_second_of_its_event_commit_timestamp(tmp_path: Path) -> None:
    """Regression (issue 10 item 6): the sync derives a deleted record's LastModifiedDate
    from the DELETE event's commit second, so the row's stamp must come from the same
    clock read as commitTimestamp, wherever the clock crosses a second mid-commit."""
    clock = _TickingClock(1_750_000_000_000)
    with OrgStore(tmp_path / "org", clock=clock) as store:
        creates = [Mutation("create", "Account", values={"Name": f"A{i}"}) for i in range(6)]
        record_ids = store.commit(creates).ids
        for reads_before_the_second in range(6):
            # the second boundary falls after this many clock reads of the delete's commit
            clock.next_ms = (clock.next_ms // 1000 + 1) * 1000 + 1000 - reads_before_the_second
            rid = record_ids[reads_before_the_second]
            deleted = store.commit([Mutation("delete", "Account", id=rid)])
            header = _header(store, deleted.replay_ids[0])
            row = store.get("Account", rid)
            assert row is not None
            second = datetime.fromtimestamp(header["commitTimestamp"] // 1000, UTC)
            assert header["changeType"] == "DELETE"
            assert header["commitTimestamp"] == deleted.commit_ts
            assert row["LastModifiedDate"] == second.replace(tzinfo=None), rid
            assert row["SystemModstamp"] == row["LastModifiedDate"]
            assert row["LastModifiedById"] == header["commitUser"]


def test_commit_timestamps_strictly_increase(empty_store: OrgStore) -> None:
    stamps = [
        empty_store.commit([Mutation("create", "Account", values={"Name": f"A{i}"})]).commit_ts
        for i in range(20)
    ]
    assert stamps == sorted(set(stamps))


def test_automation_update_moves_system_modstamp_but_not_last_modified(
    empty_store: OrgStore,
) -> None:
    opp = _opp(empty_store)
    before = empty_store.get("Opportunity", opp)
    empty_store.clock.advance(5)
    result = empty_store.commit(
        [Mutation("update", "Opportunity", opp, {"Region__c": "EMEA"})], automation=True
    )
    after = empty_store.get("Opportunity", opp)
    assert before is not None and after is not None
    assert after["LastModifiedDate"] == before["LastModifiedDate"]
    assert after["LastModifiedById"] == before["LastModifiedById"]
    assert after["SystemModstamp"] > before["SystemModstamp"]
    header = _header(empty_store, result.replay_ids[0])
    assert header["commitUser"] == empty_store.automation_user_id
    assert header["changeOrigin"] == ""


def test_user_update_moves_last_modified_and_names_the_user(empty_store: OrgStore) -> None:
    opp = _opp(empty_store)
    empty_store.clock.advance(3)
    user = empty_store.automation_user_id  # any existing user id
    empty_store.commit([Mutation("update", "Opportunity", opp, {"Amount": 10})], user_id=user)
    row = empty_store.get("Opportunity", opp)
    assert row is not None
    assert row["LastModifiedDate"] == row["SystemModstamp"]
    assert row["LastModifiedById"] == user


def test_unknown_field_is_a_value_error_naming_object_and_field(empty_store: OrgStore) -> None:
    with pytest.raises(ValueError, match=r"Bogus__c.*Account") as info:
        empty_store.commit([Mutation("create", "Account", values={"Name": "x", "Bogus__c": 1})])
    assert isinstance(info.value, StoreError)
    assert info.value.error_code == "INVALID_FIELD"


def test_read_only_and_required_fields_are_enforced(empty_store: OrgStore) -> None:
    with pytest.raises(StoreError) as info:
        _opp(empty_store, IsWon=True)
    assert info.value.error_code == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(StoreError) as info:
        empty_store.commit([Mutation("create", "Opportunity", values={"Name": "no stage"})])
    assert info.value.error_code == "REQUIRED_FIELD_MISSING"
    assert set(info.value.fields) == {"StageName", "CloseDate"}


def test_failed_transaction_writes_nothing_and_burns_no_ids(empty_store: OrgStore) -> None:
    last = empty_store.ids.last("001")
    with pytest.raises(StoreError):
        empty_store.commit(
            [
                Mutation("create", "Account", values={"Name": "ok"}),
                Mutation("create", "Account", values={"Nope": 1}),
            ]
        )
    assert empty_store.count("Account") == 0
    assert empty_store.ids.last("001") == last
    assert empty_store.latest_replay_id() == 0


def test_calculated_fields_are_recomputed_on_every_write(empty_store: OrgStore) -> None:
    opp = _opp(empty_store, Amount=1000)
    row = empty_store.get("Opportunity", opp)
    assert row is not None
    assert row["Probability"] == 10 and row["ExpectedRevenue"] == Decimal("100.00")
    assert (row["IsClosed"], row["IsWon"], row["FiscalQuarter"]) == (False, False, 1)
    empty_store.commit([Mutation("update", "Opportunity", opp, {"StageName": "Closed Won"})])
    row = empty_store.get("Opportunity", opp)
    assert row is not None
    assert (row["IsClosed"], row["IsWon"], row["Probability"]) == (True, True, 100)
    assert row["ExpectedRevenue"] == Decimal("1000.00")
    line = empty_store.commit(
        [
            Mutation(
                "create",
                "OpportunityLineItem",
                values={"OpportunityId": opp, "Quantity": 3, "UnitPrice": "19.99"},
            )
        ]
    ).ids[0]
    assert empty_store.get("OpportunityLineItem", line)["TotalPrice"] == Decimal("59.97")
    contact = empty_store.commit(
        [Mutation("create", "Contact", values={"FirstName": "Ada", "LastName": "Lovelace"})]
    ).ids[0]
    empty_store.commit([Mutation("update", "Contact", contact, {"FirstName": None})])
    assert empty_store.get("Contact", contact)["Name"] == "Lovelace"


def test_delete_undelete_and_purge(empty_store: OrgStore) -> None:
    opp = _opp(empty_store)
    empty_store.commit([Mutation("delete", "Opportunity", opp)])
    assert empty_store.get("Opportunity", opp)["IsDeleted"] is True
    with pytest.raises(StoreError, match="deleted"):
        empty_store.commit([Mutation("update", "Opportunity", opp, {"Amount": 1})])
    empty_store.commit([Mutation("undelete", "Opportunity", opp)])
    assert empty_store.get("Opportunity", opp)["IsDeleted"] is False
    before = empty_store.latest_replay_id()
    result = empty_store.commit([Mutation("purge", "Opportunity", opp)])
    assert result.replay_ids == [] and empty_store.latest_replay_id() == before
    assert empty_store.get("Opportunity", opp) is None
    assert opp not in empty_store.truth("Opportunity").column("Id").to_pylist()


def test_readers_see_committed_rows_from_another_thread(empty_store: OrgStore) -> None:
    opp = _opp(empty_store, Amount=5)
    seen: list[object] = []

    def read() -> None:
        cur = empty_store.read_cursor()
        seen.append(cur.execute('SELECT Amount FROM "Opportunity" WHERE Id = ?', [opp]).fetchone())
        cur.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert seen == [(Decimal("5.00"),)]


def test_seed_rows_emit_no_events(store: OrgStore) -> None:
    assert store.count("Task", include_deleted=True) == 60
    assert store.latest_replay_id() == 0
    assert store.events_after(0, None, 10) == []


def test_ids_and_replay_ids_never_repeat_across_restarts(tmp_path: Path) -> None:
    first = OrgStore(tmp_path / "org")
    a = first.commit([Mutation("create", "Account", values={"Name": "a"})])
    first.close()
    second = OrgStore(tmp_path / "org")
    b = second.commit([Mutation("create", "Account", values={"Name": "b"})])
    assert b.ids[0] != a.ids[0]
    assert b.replay_ids[0] > a.replay_ids[0]
    assert second.get("Account", a.ids[0])["Name"] == "a"
    second.close()


def test_clock_offset_survives_a_restart(tmp_path: Path) -> None:
    first = OrgStore(tmp_path / "org")
    first.advance_clock(3600)
    first.close()
    second = OrgStore(tmp_path / "org")
    assert second.clock.offset_ms >= 3_600_000
    second.close()


def test_events_expire_after_72_hours_of_emulator_time(empty_store: OrgStore) -> None:
    old = _opp(empty_store)
    assert empty_store.earliest_retained_replay_id() == 1
    empty_store.advance_clock(71 * 3600)
    assert empty_store.earliest_retained_replay_id() == 1
    empty_store.advance_clock(2 * 3600)
    assert empty_store.earliest_retained_replay_id() is None
    assert empty_store.events_after(0, None, 10) == []
    assert empty_store.get("Opportunity", old) is not None
    new = empty_store.commit([Mutation("update", "Opportunity", old, {"Amount": 1})])
    assert empty_store.earliest_retained_replay_id() == new.replay_ids[0] == 2
    assert empty_store.latest_replay_id() == 2


def test_delayed_delivery_puts_replay_order_out_of_commit_order(empty_store: OrgStore) -> None:
    empty_store.faults.delay_events(1.0, 5)
    late: CommitResult = empty_store.commit(
        [Mutation("create", "Account", values={"Name": "late"})]
    )
    assert late.replay_ids == []
    empty_store.faults.delay_events(0, 0)
    early = empty_store.commit([Mutation("create", "Account", values={"Name": "early"})])
    assert [e.record_ids for e in empty_store.events_after(0, None, 10)] == [early.ids]
    empty_store.advance_clock(6)
    events = empty_store.events_after(0, None, 10)
    assert [e.record_ids[0] for e in events] == [early.ids[0], late.ids[0]]
    assert events[1].commit_ts < events[0].commit_ts
    assert events[1].replay_id > events[0].replay_id


def test_adding_a_field_changes_the_schema_id_and_old_ids_still_resolve(
    tmp_path: Path,
) -> None:
    store = OrgStore(tmp_path / "org")
    opp = _opp(store)
    old_id = store.current_schema_id("Opportunity")
    store.schema.add_field("Opportunity", FieldDef("Segment__c", "string", "Segment", length=40))
    new_id = store.current_schema_id("Opportunity")
    assert new_id != old_id
    result = store.commit([Mutation("update", "Opportunity", opp, {"Segment__c": "Mid"})])
    event = store.events_after(result.replay_ids[0] - 1, None, 1)[0]
    assert event.schema_id == new_id
    body = cdc.decode(store.schema_json(new_id), event.payload)
    assert body["Segment__c"] == "Mid"
    assert "Segment__c" not in store.schema_json(old_id)
    store.schema.remove_field("Opportunity", "Segment__c")
    assert store.current_schema_id("Opportunity") == old_id  # same describe, same schema
    store.close()
    reopened = OrgStore(tmp_path / "org")
    assert "Segment__c" in reopened.schema_json(new_id)
    assert not reopened.schema.get("Opportunity").has_field("Segment__c")
    assert "Segment__c" not in reopened.truth("Opportunity").column_names
    reopened.close()


def test_picklist_change_keeps_the_schema_id(empty_store: OrgStore) -> None:
    before = empty_store.current_schema_id("Opportunity")
    empty_store.schema.set_picklist("Opportunity", "Region__c", ["AMER", "EMEA", "MARS"])
    assert empty_store.current_schema_id("Opportunity") == before
    field = empty_store.schema.get("Opportunity").field("Region__c")
    assert field.picklist_values == ("AMER", "EMEA", "MARS")


def test_single_record_commits_take_a_few_milliseconds(store: OrgStore) -> None:
    cur = store.read_cursor()
    (opp,) = cur.execute('SELECT Id FROM "Opportunity" WHERE NOT IsDeleted LIMIT 1').fetchone()
    start = time.perf_counter()
    for i in range(50):
        store.commit([Mutation("update", "Opportunity", opp, {"NextStep": f"step {i}"})])
    per_commit = (time.perf_counter() - start) / 50
    assert per_commit < 0.05
