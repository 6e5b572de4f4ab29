"""CDC decoding: bitmaps (compound children included), set fields per change type, explode."""

from __future__ import annotations

import io

import fastavro
import pytest

from resources.salesforce.cdc_decode import EventSchema, decode_event, explode

HEADER = {
    "type": "record",
    "name": "ChangeEventHeader",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {
            "name": "changeType",
            "type": {
                "type": "enum",
                "name": "ChangeType",
                "symbols": [
                    "CREATE",
                    "UPDATE",
                    "DELETE",
                    "UNDELETE",
                    "GAP_CREATE",
                    "GAP_UPDATE",
                    "GAP_DELETE",
                    "GAP_UNDELETE",
                    "GAP_OVERFLOW",
                ],
            },
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}
ADDRESS = {
    "type": "record",
    "name": "Address",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": p, "type": ["null", "string"], "default": None}
        for p in ("Street", "City", "State", "PostalCode", "Country")
    ],
}


def n(name: str, t: object) -> dict:
    return {"name": name, "type": ["null", t], "default": None}


# Positions: 0 header, 1 Name, 2 Industry, 3 BillingAddress, 4 ShippingAddress,
# 5 LastModifiedDate, 6 AnnualRevenue
ACCOUNT = {
    "type": "record",
    "name": "AccountChangeEvent",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "ChangeEventHeader", "type": HEADER},
        n("Name", "string"),
        n("Industry", "string"),
        n("BillingAddress", ADDRESS),
        n("ShippingAddress", "com.sforce.eventbus.Address"),
        n("LastModifiedDate", "long"),
        n("AnnualRevenue", "double"),
    ],
}


def encode(record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(ACCOUNT), record)
    return buf.getvalue()


def header(change_type: str, ids: list[str], **bitmaps: list[str]) -> dict:
    return {
        "entityName": "Account",
        "recordIds": ids,
        "changeType": change_type,
        "changeOrigin": "",
        "transactionKey": "tx-1",
        "sequenceNumber": 1,
        "commitTimestamp": 1_700_000_000_123,
        "commitNumber": 1,
        "commitUser": "005000000000001AAA",
        "nulledFields": bitmaps.get("nulled", []),
        "diffFields": bitmaps.get("diff", []),
        "changedFields": bitmaps.get("changed", []),
    }


def body(**values: object) -> dict:
    out = {f["name"]: None for f in ACCOUNT["fields"][1:]}
    out.update(values)
    return out


@pytest.fixture
def schema() -> EventSchema:
    return EventSchema(ACCOUNT)


def test_top_level_bitmap_names_fields_by_position(schema: EventSchema) -> None:
    # bits 2 (Industry) and 5 (LastModifiedDate)
    assert schema.bitmap_fields(["0x24"]) == ["Industry", "LastModifiedDate"]


def test_child_bitmap_names_the_compound_component(schema: EventSchema) -> None:
    assert schema.bitmap_fields(["0x00", "3-0x02"]) == ["BillingAddress.City"]
    assert schema.flatten(["BillingAddress.City"]) == ["BillingCity"]


def test_parent_bit_without_child_bitmap_means_every_child(schema: EventSchema) -> None:
    names = schema.flatten(schema.bitmap_fields(["0x10"]))
    assert names == [
        "ShippingStreet",
        "ShippingCity",
        "ShippingState",
        "ShippingPostalCode",
        "ShippingCountry",
    ]


def test_wide_bitmap_reads_the_whole_hex_as_one_integer(schema: EventSchema) -> None:
    assert schema.bitmap_fields(["0x0042"]) == ["Name", "AnnualRevenue"]


def test_child_bitmap_on_a_plain_field_is_rejected(schema: EventSchema) -> None:
    with pytest.raises(ValueError, match="non-compound"):
        schema.bitmap_fields(["0x00", "2-0x01"])


def test_update_sets_changed_and_nulled_fields_only(schema: EventSchema) -> None:
    payload = encode(
        {
            "ChangeEventHeader": header(
                "UPDATE", ["001A"], changed=["0x24", "3-0x02"], nulled=["0x40"]
            ),
            **body(Industry="Energy", LastModifiedDate=5, BillingAddress={"City": "Oslo"}),
        }
    )
    event = decode_event(
        schema, payload, replay_id=b"\0" * 7 + b"\x09", event_id="e1", schema_id="s1"
    )
    [row] = explode(event, schema)
    assert row.set_fields == ("Industry", "LastModifiedDate", "BillingCity", "AnnualRevenue")
    assert row.payload == {
        "Industry": "Energy",
        "LastModifiedDate": 5,
        "BillingCity": "Oslo",
        "AnnualRevenue": None,
    }
    assert row.replay_id == 9
    assert row.commit_ts == 1_700_000_000_123


def test_create_sets_every_field_and_is_deleted_false(schema: EventSchema) -> None:
    payload = encode({"ChangeEventHeader": header("CREATE", ["001A"]), **body(Name="Acme")})
    event = decode_event(schema, payload, replay_id=b"\x01", event_id="e", schema_id="s")
    [row] = explode(event, schema)
    assert row.set_fields[0] == "Name"
    assert "BillingCity" in row.set_fields and row.set_fields[-1] == "IsDeleted"
    assert row.payload["Name"] == "Acme" and row.payload["IsDeleted"] is False
    assert row.payload["BillingCity"] is None


def test_merged_event_explodes_into_one_row_per_record(schema: EventSchema) -> None:
    payload = encode({"ChangeEventHeader": header("DELETE", ["001A", "001B", "001C"]), **body()})
    event = decode_event(schema, payload, replay_id=b"\x01", event_id="e", schema_id="s")
    rows = explode(event, schema)
    assert [r.record_id for r in rows] == ["001A", "001B", "001C"]
    assert all(r.set_fields == ("IsDeleted",) and r.payload == {"IsDeleted": True} for r in rows)


def test_gap_and_overflow_events_set_nothing(schema: EventSchema) -> None:
    gap = decode_event(
        schema,
        encode({"ChangeEventHeader": header("GAP_UPDATE", ["001A"]), **body()}),
        replay_id=b"\x01",
        event_id="e",
        schema_id="s",
    )
    over = decode_event(
        schema,
        encode({"ChangeEventHeader": header("GAP_OVERFLOW", []), **body()}),
        replay_id=b"\x02",
        event_id="f",
        schema_id="s",
    )
    assert [r.set_fields for r in explode(gap, schema)] == [()]
    [row] = explode(over, schema)
    assert row.record_id is None and row.change_type == "GAP_OVERFLOW"


def test_diff_encoded_fields_are_not_applied(schema: EventSchema) -> None:
    payload = encode(
        {
            "ChangeEventHeader": header("UPDATE", ["001A"], changed=["0x06"], diff=["0x02"]),
            **body(Name="--- \n+++ abc\n@@", Industry="Tech"),
        }
    )
    event = decode_event(schema, payload, replay_id=b"\x01", event_id="e", schema_id="s")
    assert event.diff_fields == ("Name",)
    [row] = explode(event, schema)
    assert row.set_fields == ("Industry",)
