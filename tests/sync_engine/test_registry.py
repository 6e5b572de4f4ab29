"""Schema registry and evolution on DuckDB."""

from __future__ import annotations

from typing import Any

import pytest

from resources.duckdb_warehouse import DuckDBWarehouse
from sync_engine import registry
from sync_engine.apply import apply_batch
from sync_engine.changes import build_batch
from sync_engine.registry import IncompatibleTypeChangeError
from sync_engine.spec import FieldSpec, ObjectSpec
from tests.sync_engine.histories import FULL, RECORD_IDS, SPEC, cdc, read_current

A = RECORD_IDS[0]


def _columns(wh: DuckDBWarehouse, schema: str) -> set[str]:
    rows = wh.query(
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_schema = '{schema}' AND table_name = 'opportunity'"
    )
    return {r[0] for r in rows}


def test_first_describe_creates_every_layer_and_registers_fields():
    wh = DuckDBWarehouse(path=":memory:")
    synced = registry.sync_schema(wh, SPEC)
    assert synced.change.created_tables and synced.spec == SPEC
    for schema in ("sfdc_raw", "sfdc", "sfdc_history"):
        assert {"amount", "is_deleted"} <= _columns(wh, schema)
    assert _columns(wh, "sfdc_quarantine") >= {"reason", "payload"}
    registered = wh.query('SELECT COUNT(*) FROM "sfdc_meta"."schema_registry"')[0][0]
    assert registered == len(SPEC.fields)


def test_new_field_adds_its_column_everywhere(duck):
    wider = ObjectSpec(SPEC.name, (*SPEC.fields, FieldSpec("Region__c", "picklist")))
    synced = registry.sync_schema(duck, wider)
    assert synced.change.added == ["Region__c"]
    for schema in ("sfdc_raw", "sfdc", "sfdc_history"):
        assert "region__c" in _columns(duck, schema)


def test_removed_field_keeps_its_column_and_values(duck):
    apply_batch(duck, SPEC, build_batch(SPEC, [cdc("CREATE", 1, A, 0, values=FULL)]))
    narrower = ObjectSpec(SPEC.name, tuple(f for f in SPEC.fields if f.name != "Tags__c"))
    synced = registry.sync_schema(duck, narrower)
    assert synced.change.removed == ["Tags__c"]
    assert "tags__c" in [f.column for f in synced.spec.fields]  # carried by the merge
    later = cdc("UPDATE", 2, A, 1, values={"Name": "New"}, changed_fields=["Name"])
    apply_batch(duck, synced.spec, build_batch(synced.spec, [later]))
    row = read_current(duck)[A]
    assert row["tags__c"] == "a;b" and row["name"] == "New"
    removed_at = duck.query(
        "SELECT removed_at FROM sfdc_meta.schema_registry WHERE field_name = 'Tags__c'"
    )[0][0]
    assert removed_at is not None


def test_incompatible_type_change_names_object_field_and_types(duck):
    retyped = ObjectSpec(
        SPEC.name,
        tuple(FieldSpec(f.name, "string") if f.name == "Amount" else f for f in SPEC.fields),
    )
    with pytest.raises(IncompatibleTypeChangeError) as err:
        registry.sync_schema(duck, retyped)
    message = str(err.value)
    assert "Opportunity.Amount" in message and "decimal(18,2)" in message and "text" in message
    assert "runbook" not in message.lower() or registry.RUNBOOK in message


def test_compatible_type_change_is_accepted(duck):
    # picklist -> string: both text columns, nothing to do.
    relabeled = ObjectSpec(
        SPEC.name,
        tuple(FieldSpec(f.name, "picklist") if f.name == "Name" else f for f in SPEC.fields),
    )
    assert registry.sync_schema(duck, relabeled).change.added == []


def _snowflake(search_optimization: bool | None) -> Any:
    from resources.snowflake_warehouse import SnowflakeWarehouse

    return SnowflakeWarehouse(
        account="fake",
        user="fake",
        password="snow",
        database="SFDCSEARCH",
        search_optimization=search_optimization,
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_search_optimization_is_added_with_the_first_describe_only_when_asked(tmp_path):
    import fakesnow
    import snowflake.connector

    db, off = tmp_path / "fake", tmp_path / "off"
    db.mkdir()
    off.mkdir()
    # fakesnow cannot run ADD SEARCH OPTIMIZATION: that it fails shows it is issued.
    with fakesnow.patch(db_path=db), pytest.raises(snowflake.connector.ProgrammingError):
        registry.sync_schema(_snowflake(True), SPEC)
    with fakesnow.patch(db_path=off):
        registry.sync_schema(_snowflake(None), SPEC)  # off by default: nothing issued
    with fakesnow.patch(db_path=db, nop_regexes=[".*ADD SEARCH OPTIMIZATION.*"]):
        assert registry.sync_schema(_snowflake(True), SPEC).change.created_tables
    with fakesnow.patch(db_path=db):
        # The tables exist: a later describe does not issue it again.
        assert not registry.sync_schema(_snowflake(True), SPEC).change.created_tables
