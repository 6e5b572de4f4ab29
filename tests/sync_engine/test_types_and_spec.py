"""Salesforce -> warehouse types and object specs."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sync_engine.spec import InvalidObjectSpecError, ObjectSpec
from sync_engine.types import UnknownFieldTypeError, warehouse_type
from sync_engine.warehouse import InvalidIdentifierError


@pytest.mark.parametrize(
    ("sf_type", "scale", "duckdb", "snowflake", "arrow"),
    [
        ("id", None, "VARCHAR(18)", "VARCHAR(18)", pa.string()),
        ("reference", None, "VARCHAR(18)", "VARCHAR(18)", pa.string()),
        ("currency", 2, "DECIMAL(18,2)", "NUMBER(18,2)", pa.decimal128(18, 2)),
        ("double", 4, "DECIMAL(18,4)", "NUMBER(18,4)", pa.decimal128(18, 4)),
        ("percent", None, "DECIMAL(18,2)", "NUMBER(18,2)", pa.decimal128(18, 2)),
        ("int", None, "BIGINT", "NUMBER(18,0)", pa.int64()),
        ("datetime", None, "TIMESTAMP", "TIMESTAMP_NTZ", pa.timestamp("us")),
        ("date", None, "DATE", "DATE", pa.date32()),
        ("boolean", None, "BOOLEAN", "BOOLEAN", pa.bool_()),
        ("multipicklist", None, "VARCHAR", "VARCHAR", pa.string()),
        ("textarea", None, "VARCHAR", "VARCHAR", pa.string()),
    ],
)
def test_salesforce_types_map_to_warehouse_types(sf_type, scale, duckdb, snowflake, arrow):
    wt = warehouse_type(sf_type, scale)
    assert (wt.duckdb(), wt.snowflake(), wt.arrow()) == (duckdb, snowflake, arrow)


def test_unknown_salesforce_type_is_refused():
    with pytest.raises(UnknownFieldTypeError):
        warehouse_type("hologram")


def test_spec_from_describe_skips_compound_fields_id_and_isdeleted():
    spec = ObjectSpec.from_describe(
        {
            "name": "Account",
            "fields": [
                {"name": "Id", "type": "id"},
                {"name": "IsDeleted", "type": "boolean"},
                {"name": "BillingAddress", "type": "address"},
                {"name": "BillingCity", "type": "string"},
                {"name": "AnnualRevenue", "type": "currency", "scale": 0},
            ],
        }
    )
    assert spec.columns == ("billingcity", "annualrevenue")
    assert spec.table == "account"


def test_spec_refuses_unsafe_names_and_engine_column_collisions():
    with pytest.raises(InvalidIdentifierError):
        ObjectSpec.of("Account; DROP TABLE x", [])
    with pytest.raises(InvalidIdentifierError):
        ObjectSpec.of("Account", [('Name" --', "string")])
    with pytest.raises(InvalidObjectSpecError):
        ObjectSpec.of("Account", [("Version", "string")])
