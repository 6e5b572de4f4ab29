"""CDC events: Avro layout, decoding, bitmaps, merges, gaps and overflow."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfdc_emulator import cdc
from sfdc_emulator.describe import DEFAULT_OBJECTS
from sfdc_emulator.store import OVERFLOW_LIMIT, Mutation, OrgStore


def _decode(store: OrgStore, replay_ids: list[int]) -> list[dict[str, Any]]:
    events = store.events_after(min(replay_ids) - 1, None, len(replay_ids))
    return [cdc.decode(store.schema_json(e.schema_id), e.payload) for e in events]


def _positions(schema_text: str, bitmaps: list[str]) -> set[str]:
    """The reference §2.4 algorithm over top-level fields: int(hex, 16) >> i & 1."""
    names = [f["name"] for f in json.loads(schema_text)["fields"]]
    top = [b for b in bitmaps if b.startswith("0x")]
    return {n for b in top for i, n in enumerate(names) if int(b, 16) >> i & 1}


def test_schema_puts_the_header_first_and_every_field_nullable() -> None:
    for spec in DEFAULT_OBJECTS:
        schema = cdc.avro_schema(spec)
        assert schema["name"] == f"{spec.name}ChangeEvent"
        assert schema["namespace"] == "com.sforce.eventbus"
        assert schema["fields"][0]["name"] == "ChangeEventHeader"
        names = [f["name"] for f in schema["fields"][1:]]
        assert not {"Id", "IsDeleted", "SystemModstamp"} & set(names)
        for f in schema["fields"][1:]:
            assert f["type"][0] == "null" and f["default"] is None
        symbols = schema["fields"][0]["type"]["fields"][2]["type"]["symbols"]
        assert symbols[-1] == "GAP_OVERFLOW" and len(symbols) == 9


def test_compounds_replace_their_components() -> None:
    contact = {s.name: s for s in DEFAULT_OBJECTS}["Contact"]
    fields = {f["name"]: f for f in cdc.avro_schema(contact)["fields"]}
    assert fields["Name"]["type"][1]["name"] == "Switchable_PersonName"
    assert fields["MailingAddress"]["type"][1]["name"] == "Address"
    assert not {"FirstName", "LastName", "MailingCity"} & set(fields)
    assert fields["CreatedDate"]["type"] == ["null", "long"]
    assert fields["Birthdate"]["doc"] == "Data:DateOnly"


def test_schema_id_is_22_url_safe_chars_and_stable() -> None:
    spec = DEFAULT_OBJECTS[0]
    sid = cdc.schema_id(cdc.avro_schema(spec))
    assert len(sid) == 22 and "=" not in sid and "+" not in sid and "/" not in sid
    assert sid == cdc.schema_id(json.loads(cdc.schema_json(cdc.avro_schema(spec))))


@given(st.sets(st.integers(0, 80), min_size=0, max_size=20))
def test_bitmaps_are_even_length_uppercase_hex_of_the_positions(positions: set[int]) -> None:
    text = cdc.bitmap(positions)
    digits = text[2:]
    assert text.startswith("0x") and len(digits) % 2 == 0
    assert digits == digits.upper()
    assert {i for i in range(81) if int(text, 16) >> i & 1} == positions


def test_create_event_decodes_with_all_fields(empty_store: OrgStore) -> None:
    result = empty_store.commit(
        [
            Mutation(
                "create",
                "Contact",
                values={"FirstName": "Ada", "LastName": "Lovelace", "MailingCity": "London"},
            )
        ]
    )
    (event,) = _decode(empty_store, result.replay_ids)
    header = event["ChangeEventHeader"]
    assert header["changeType"] == "CREATE"
    assert header["recordIds"] == result.ids
    assert header["entityName"] == "Contact"
    assert header["commitTimestamp"] == result.commit_ts
    assert header["changedFields"] == [] and header["nulledFields"] == []
    assert event["Name"]["FirstName"] == "Ada" and event["Name"]["LastName"] == "Lovelace"
    assert event["MailingAddress"]["City"] == "London"
    assert event["CreatedDate"] == result.commit_ts // 1000 * 1000
    assert event["Email"] is None and event["HasOptedOutOfEmail"] is False


OPP_UPDATES = {
    "Amount": st.one_of(st.none(), st.integers(0, 10**6)),
    "StageName": st.sampled_from(["Prospecting", "Closed Won", "Closed Lost", "Qualification"]),
    "NextStep": st.one_of(st.none(), st.sampled_from(["call", "email"])),
    "Description": st.one_of(st.none(), st.text(max_size=20)),
    "CloseDate": st.dates(date(2020, 1, 1), date(2030, 1, 1)),
    "Region__c": st.one_of(st.none(), st.sampled_from(["AMER", "EMEA"])),
    "Discount_Percent__c": st.one_of(st.none(), st.floats(0, 50, allow_nan=False)),
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.fixed_dictionaries({}, optional=OPP_UPDATES))
def test_update_bitmaps_name_exactly_the_changed_and_nulled_fields(
    store: OrgStore, values: dict[str, Any]
) -> None:
    cur = store.read_cursor()
    (opp,) = cur.execute('SELECT Id FROM "Opportunity" WHERE NOT IsDeleted LIMIT 1').fetchone()
    before = store.get("Opportunity", opp)
    result = store.commit([Mutation("update", "Opportunity", opp, values)])
    after = store.get("Opportunity", opp)
    assert before is not None and after is not None
    # formula fields (ExpectedRevenue) change with their inputs, yet no event names them:
    # the body below must hold them null (issue 10, reference §2.3)
    formulas = {f.name for f in store.schema.get("Opportunity").fields if f.is_formula}
    changed = {
        k
        for k in after
        if k not in ("Id", "IsDeleted", "SystemModstamp", *formulas) and after[k] != before[k]
    }
    if not changed:
        assert result.replay_ids == []
        return
    (event,) = store.events_after(result.replay_ids[0] - 1, None, 1)
    schema_text = store.schema_json(event.schema_id)
    body = cdc.decode(schema_text, event.payload)
    header = body["ChangeEventHeader"]
    assert header["changeType"] == "UPDATE"
    assert _positions(schema_text, header["changedFields"]) == changed
    assert _positions(schema_text, header["nulledFields"]) == {
        k for k in changed if after[k] is None
    }
    for name, value in body.items():
        if name != "ChangeEventHeader" and name not in changed:
            assert value is None, name


def test_compound_child_changes_use_parent_position_bitmaps(store: OrgStore) -> None:
    cur = store.read_cursor()
    (contact,) = cur.execute('SELECT Id FROM "Contact" WHERE NOT IsDeleted LIMIT 1').fetchone()
    result = store.commit(
        [Mutation("update", "Contact", contact, {"LastName": "Zed", "MailingCity": None})]
    )
    (event,) = _decode(store, result.replay_ids)
    header = event["ChangeEventHeader"]
    schema = json.loads(store.schema_json(store.current_schema_id("Contact")))
    names = [f["name"] for f in schema["fields"]]
    name_pos, address_pos = names.index("Name"), names.index("MailingAddress")
    assert f"{name_pos}-0x04" in header["changedFields"]  # LastName is child 2
    assert f"{address_pos}-0x02" in header["changedFields"]  # City is child 1
    assert header["nulledFields"][1:] == [f"{address_pos}-0x02"]
    assert cdc.decode_bitmaps(schema, header["nulledFields"]) == ["MailingAddress.City"]
    assert event["Name"]["LastName"] == "Zed" and event["Name"]["FirstName"] is None


def test_identical_changes_to_several_records_merge_into_one_event(store: OrgStore) -> None:
    cur = store.read_cursor()
    rows = cur.execute('SELECT Id FROM "Task" WHERE NOT IsDeleted ORDER BY Id LIMIT 3').fetchall()
    ids = [r[0] for r in rows]
    store.commit([Mutation("update", "Task", i, {"Description": "same"}) for i in ids])
    result = store.commit([Mutation("update", "Task", i, {"Description": "merged"}) for i in ids])
    (event,) = _decode(store, result.replay_ids)
    assert sorted(event["ChangeEventHeader"]["recordIds"]) == sorted(ids)
    assert event["Description"] == "merged"


def test_events_of_one_transaction_share_the_key_and_count_up(empty_store: OrgStore) -> None:
    result = empty_store.commit(
        [Mutation("create", "Account", values={"Name": f"A{i}"}) for i in range(3)]
        + [Mutation("create", "Lead", values={"LastName": "L", "Company": "C"})]
    )
    headers = [e["ChangeEventHeader"] for e in _decode(empty_store, result.replay_ids)]
    assert [h["sequenceNumber"] for h in headers] == [1, 2, 3, 4]
    assert len({h["transactionKey"] for h in headers}) == 1
    assert [h["entityName"] for h in headers] == ["Account"] * 3 + ["Lead"]


def test_delete_is_header_only_and_undelete_carries_all_fields(store: OrgStore) -> None:
    cur = store.read_cursor()
    (opp,) = cur.execute('SELECT Id FROM "Opportunity" WHERE NOT IsDeleted LIMIT 1').fetchone()
    deleted = store.commit([Mutation("delete", "Opportunity", opp)])
    restored = store.commit([Mutation("undelete", "Opportunity", opp)])
    delete_event, undelete_event = _decode(store, deleted.replay_ids + restored.replay_ids)
    assert delete_event["ChangeEventHeader"]["changeType"] == "DELETE"
    assert all(v is None for k, v in delete_event.items() if k != "ChangeEventHeader")
    assert undelete_event["ChangeEventHeader"]["changeType"] == "UNDELETE"
    assert undelete_event["Name"] == store.get("Opportunity", opp)["Name"]
    assert undelete_event["StageName"] is not None


def test_gap_events_carry_record_ids_but_no_field_data(store: OrgStore) -> None:
    cur = store.read_cursor()
    rows = cur.execute('SELECT Id FROM "Task" WHERE NOT IsDeleted LIMIT 2').fetchall()
    ids = [r[0] for r in rows]
    result = store.gap("Task", ids, {"Description": "archived"})
    (event,) = _decode(store, result.replay_ids)
    header = event["ChangeEventHeader"]
    assert header["changeType"] == "GAP_UPDATE"
    assert sorted(header["recordIds"]) == sorted(ids)
    assert header["sequenceNumber"] == 1
    assert all(v is None for k, v in event.items() if k != "ChangeEventHeader")
    assert store.get("Task", ids[0])["Description"] == "archived"


def test_more_than_100000_changes_overflow_into_one_gap_overflow_per_entity(
    empty_store: OrgStore,
) -> None:
    n = OVERFLOW_LIMIT + 5
    ids = empty_store.reserve_ids("Task", n)
    stamp = pa.array([empty_store.clock.now().replace(tzinfo=None)] * n, pa.timestamp("us"))
    user = pa.array([empty_store.integration_user_id] * n)
    empty_store.seed(
        "Task",
        pa.table(
            {
                "Id": ids,
                "IsDeleted": pa.array([False] * n),
                "Status": pa.array(["Not Started"] * n),
                "Priority": pa.array(["Normal"] * n),
                "OwnerId": user,
                "CreatedDate": stamp,
                "CreatedById": user,
                "LastModifiedDate": stamp,
                "LastModifiedById": user,
                "SystemModstamp": stamp,
            }
        ),
    )
    result = empty_store.commit([Mutation("delete", "Task", i) for i in ids.to_pylist()])
    events = empty_store.events_after(result.replay_ids[0] - 1, None, len(result.replay_ids))
    normal = [e for e in events if e.change_type == "DELETE"]
    overflow = [e for e in events if e.change_type == "GAP_OVERFLOW"]
    assert sum(len(e.record_ids) for e in normal) == OVERFLOW_LIMIT
    assert len(overflow) == 1 and overflow[0].record_ids == [] and overflow[0].entity == "Task"
    assert overflow[0].sequence_number == len(events)
    assert empty_store.count("Task") == 0


def test_second_address_compound_bitmap_decodes_through_the_named_record(
    store: OrgStore,
) -> None:
    """Regression: ShippingAddress refers to the Address record by name (Avro defines it
    once, under BillingAddress); decoding its child bitmap used to raise StopIteration."""
    schema = json.loads(store.schema_json(store.current_schema_id("Account")))
    names = [f["name"] for f in schema["fields"]]
    pos = names.index("ShippingAddress")
    assert cdc.decode_bitmaps(schema, ["0x00", f"{pos}-0x02"]) == ["ShippingAddress.City"]
