"""Bulk CSV typing from describe: empty is null, datetimes to UTC, exact currency."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl

from resources.salesforce.csv_types import read_page, schema_for
from resources.salesforce.rest import FieldInfo, ObjectDescribe, parse_describe

DESCRIBE = ObjectDescribe(
    "Opportunity",
    "006",
    (
        FieldInfo("Id", "id"),
        FieldInfo("Amount", "currency", precision=18, scale=2),
        FieldInfo("CloseDate", "date"),
        FieldInfo("SystemModstamp", "datetime"),
        FieldInfo("IsDeleted", "boolean"),
        FieldInfo("Name", "string"),
        FieldInfo("Qty", "int"),
        FieldInfo("Probability", "percent"),
    ),
)
COLS = ["Id", "Amount", "CloseDate", "SystemModstamp", "IsDeleted", "Name", "Qty", "Probability"]


def test_page_is_typed_and_empty_is_null() -> None:
    csv = (
        b'"Id","Amount","CloseDate","SystemModstamp","IsDeleted","Name","Qty","Probability"\n'
        b'"006A","12.50","2024-01-02","2024-01-31T12:34:56.000Z","false","","3","10.5"\n'
        b'"006B","","","2024-01-31T12:34:56.123+0000","true","a,""b""","",""\n'
    )
    df = read_page(csv, schema_for(DESCRIBE, COLS))
    assert df.schema["SystemModstamp"] == pl.Datetime("ms", "UTC")
    first, second = df.to_dicts()
    assert first["Amount"] == Decimal("12.50") and first["Name"] is None
    assert first["CloseDate"] == date(2024, 1, 2) and first["IsDeleted"] is False
    assert second["SystemModstamp"] == datetime(2024, 1, 31, 12, 34, 56, 123000, tzinfo=UTC)
    assert second["Name"] == 'a,"b"' and second["Qty"] is None and second["Amount"] is None


def test_empty_page_keeps_the_schema() -> None:
    df = read_page(b"", schema_for(DESCRIBE, COLS))
    assert df.height == 0 and df.columns == COLS


def test_describe_drops_compound_parents_and_flags_pii() -> None:
    body = {
        "name": "Account",
        "keyPrefix": "001",
        "fields": [
            {"name": "Id", "type": "id"},
            {"name": "BillingAddress", "type": "address"},
            {"name": "BillingCity", "type": "string", "compoundFieldName": "BillingAddress"},
            {"name": "Phone", "type": "phone"},
        ],
    }
    d = parse_describe(body, ["phone"])
    assert d.field_names == ["Id", "BillingCity", "Phone"]
    assert d.compound_parents == ("BillingAddress",)
    assert d.pii_fields == ["Phone"]


def test_person_name_stays_queryable() -> None:
    body = {
        "name": "Contact",
        "fields": [
            {"name": "Name", "type": "string"},
            {"name": "FirstName", "type": "string", "compoundFieldName": "Name"},
        ],
    }
    assert parse_describe(body).field_names == ["Name", "FirstName"]


def test_other_spellings_fall_back_to_the_forgiving_casts() -> None:
    csv = (
        b'"Id","SystemModstamp","IsDeleted"\n'
        b'"006A","2024-01-31T12:34:56.5+0000","TRUE"\n'
        b'"006B",,"False"\n'
    )
    df = read_page(csv, schema_for(DESCRIBE, ["Id", "SystemModstamp", "IsDeleted"]))
    assert df.schema["SystemModstamp"] == pl.Datetime("ms", "UTC")
    assert df["IsDeleted"].to_list() == [True, False]
    assert df["SystemModstamp"].to_list() == [
        datetime(2024, 1, 31, 12, 34, 56, 500000, tzinfo=UTC),
        None,
    ]


def test_fast_path_matches_the_forgiving_casts() -> None:
    from resources.salesforce.csv_types import _slow_cast

    csv = b'"Id","Amount","CloseDate","SystemModstamp","IsDeleted","Name","Qty","Probability"\n'
    csv += b"".join(
        f'"006{i}","{i}.25","2024-01-{i % 28 + 1:02d}","2024-01-31T12:34:{i % 60:02d}.{i:03d}Z",'
        f'"{"true" if i % 2 else "false"}","n{i}",,"{i / 2}"\n'.encode()
        for i in range(200)
    )
    schema = schema_for(DESCRIBE, COLS)
    fast = read_page(csv, schema)
    raw = pl.read_csv(csv, infer_schema=False, null_values="")
    slow = raw.with_columns(_slow_cast(n, t).alias(n) for n, t in schema.items())
    assert fast.equals(slow)
