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


def _index_scan(wh: DuckDBWarehouse, sql: str) -> bool:
    plan = "\n".join(r[1] for r in wh.query(f"EXPLAIN ANALYZE {sql}"))
    return "Index Scan" in plan


def test_lookup_fields_get_an_index_that_answers_in_lists(duck):
    """objects.yaml `lookup_fields`: dbt reads a parent's children by these columns."""
    rows = [
        cdc("CREATE", i, f"006{i:015d}", 1, values={**FULL, "AccountId": f"001{i % 7:015d}"})
        for i in range(50)
    ]
    apply_batch(duck, SPEC, build_batch(SPEC, rows))
    lookup = "SELECT id FROM sfdc.opportunity WHERE accountid IN ('001000000000000003')"
    assert not _index_scan(duck, lookup)
    assert registry.ensure_lookups(duck, SPEC, ("accountId",)) == ["accountid"]
    assert registry.ensure_lookups(duck, SPEC, ("AccountId",)) == ["accountid"]  # idempotent
    names = duck.query(
        "SELECT index_name FROM duckdb_indexes() WHERE schema_name = 'sfdc' "
        "AND table_name = 'opportunity'"
    )
    assert names == [("opportunity_accountid_lookup_idx",)]
    assert _index_scan(duck, lookup)
    assert len(duck.query(lookup)) == len([i for i in range(50) if i % 7 == 3])
    # The applies keep it up to date (the engine deletes and re-inserts touched rows).
    moved = [
        cdc(
            "UPDATE",
            100 + i,
            f"006{i:015d}",
            2,
            values={"AccountId": "001000000000000003"},
            changed_fields=["AccountId"],
        )
        for i in range(5)
    ]
    apply_batch(duck, SPEC, build_batch(SPEC, moved))
    expected = {f"006{i:015d}" for i in {*range(5), *(i for i in range(50) if i % 7 == 3)}}
    assert {r[0] for r in duck.query(lookup)} == expected
    # the same answer without the index (an expression it cannot serve)
    scan = lookup.replace("WHERE accountid IN", "WHERE accountid || '' IN")
    assert {r[0] for r in duck.query(scan)} == expected


def test_an_unknown_lookup_field_is_refused_by_name(duck):
    refused = r"Opportunity\.OwnerId.*lookup_fields"
    with pytest.raises(registry.UnknownLookupFieldError, match=refused):
        registry.ensure_lookups(duck, SPEC, ("AccountId", "OwnerId"))
    # Nothing half-done: the valid field before it got no index either.
    indexes = "SELECT COUNT(*) FROM duckdb_indexes() WHERE schema_name = 'sfdc'"
    assert duck.query(indexes) == [(0,)]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lookup_fields_get_search_optimization_on_snowflake_when_asked(tmp_path):
    import fakesnow
    import snowflake.connector

    db = tmp_path / "fake"
    db.mkdir()
    with fakesnow.patch(db_path=db, nop_regexes=[".*ADD SEARCH OPTIMIZATION.*"]):
        spec = registry.sync_schema(_snowflake(True), SPEC).spec
    # fakesnow runs neither statement: DESCRIBE answers nothing (no column optimized yet),
    # and the ADD failing shows it is issued.
    with fakesnow.patch(db_path=db, nop_regexes=["^DESCRIBE SEARCH OPTIMIZATION.*"]):
        with pytest.raises(snowflake.connector.ProgrammingError, match=r"(?i)search"):
            registry.ensure_lookups(_snowflake(True), spec, ("AccountId",))
        # Off (the default): no statement.
        assert registry.ensure_lookups(_snowflake(None), spec, ("AccountId",)) == ["accountid"]
