"""bench.dbt_snowflake_statements: how a dbt statement is classified and attributed."""

from bench.dbt_snowflake_statements import Capture, kind, resolve, scanned, view_sources, written

COMMENT = '/* {"app": "dbt", "node_id": "model.sfdc_sync.dim_account"} */'


def test_kinds_separate_warehouse_work_from_cloud_services() -> None:
    assert kind("select count(*) from SFDCDBT.marts.dim_account") == "compute"
    assert kind("create or replace transient table SFDCDBT.marts.t as (-- c\nselect 1)") == (
        "compute"
    )
    assert kind("delete from SFDCDBT.marts.t where id in (select _key from x)") == "compute"
    assert kind("create or replace view SFDCDBT.staging.v as (select * from s.a)") == "ddl"
    assert kind("drop table if exists SFDCDBT.marts.t__dbt_tmp cascade") == "ddl"
    assert kind("create schema if not exists SFDCDBT.marts") == "metadata"
    assert kind("describe table SFDCDBT.sfdc.account") == "metadata"
    assert kind("show objects in SFDCDBT.marts limit 10000") == "metadata"
    assert kind("BEGIN") == kind("COMMIT") == "transaction"


def test_views_resolve_to_the_tables_under_them_and_dbt_temp_tables_are_left_out() -> None:
    capture = Capture()
    with capture.run("r"):
        capture.record("create or replace view db.staging.v as (select * from db.sfdc.account)")
        capture.record("create or replace view db.legacy.w as (select * from db.staging.v)")
        capture.record(f"create or replace table db.marts.m__dbt_tmp as (select 1) {COMMENT}")
        capture.record("insert into db.marts.m select * from db.marts.m__dbt_tmp")
        capture.record("select * from db.legacy.w join db.sfdc.user u on true")
    capture.record("select 1 from db.outside.run")  # not under a run: not recorded
    views = view_sources(capture.statements)
    assert resolve(frozenset({"legacy.w"}), views) == {"sfdc.account"}
    assert scanned(capture.statements, views) == {"sfdc.account", "sfdc.user"}
    assert written(capture.statements) == {"marts.m"}
    nodes = [s.node for s in capture.statements]
    # Statements without dbt's comment belong to the node that sent the last one with it.
    assert nodes == ["(run)", "(run)", *["model.sfdc_sync.dim_account"] * 3]
