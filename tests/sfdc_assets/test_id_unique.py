"""`current_id_unique` reads the ids a run touched; `current_id_unique_full` the whole table.

Issue 11 item 3: the per-run check counted distinct ids over the whole current table on
every CDC run. These tests put a duplicate into a real current table (DuckDB file and
fakesnow; the table is rebuilt without its PRIMARY KEY, which Snowflake never enforces)
and show which check sees it, then measure what the per-run statement reads.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import fakesnow
import pyarrow as pa
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from resources.duckdb_warehouse import DuckDBWarehouse
from resources.snowflake_warehouse import SnowflakeWarehouse
from sfdc_assets.checks import (
    CHECK_IDS_TABLE,
    SCOPE_TOUCHED,
    SCOPE_WHOLE,
    full_id_unique_result,
    id_unique_full_check,
    id_unique_result,
    live_count_check,
    nightly_checks_schedule,
    run_id_counts,
    touched_id_counts,
)
from sfdc_assets.keys import CURRENT_ID_UNIQUE_FULL, asset_key
from sfdc_assets.objects import load_config
from sync_engine import registry
from sync_engine import statements as st
from sync_engine.dialect import SNOWFLAKE, dialect_of
from sync_engine.warehouse import SchemaNames, Warehouse
from tests.sync_engine.histories import SPEC

KEY = asset_key("current", "Opportunity")
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")


def rid(i: int) -> str:
    return f"006{i:012d}AAA"


def fill_current(wh: Warehouse, rows: int) -> None:
    """`rows` current rows with ids rid(0..rows-1)."""
    d = dialect_of(wh)
    q = d.q
    wh.load_temp_table("ids", f"{q('id')} VARCHAR", pa.table({"id": [rid(i) for i in range(rows)]}))
    table = d.table(wh.schema_names.current, SPEC.table)
    wh.execute(
        f"INSERT INTO {table} ({q('id')}, {q('is_deleted')}, {q('_version')}, {q('_source')}, "
        f"{q('_synced_at')}) SELECT {q('id')}, FALSE, 'v', 'bulk', "
        f"{d.timestamp_literal(dt.datetime(2025, 1, 1))} FROM {q('ids')}"
    )


def drop_primary_key(wh: Warehouse) -> None:
    """Rebuild current without its PRIMARY KEY: Snowflake's is informational only."""
    d = dialect_of(wh)
    table = d.table(wh.schema_names.current, SPEC.table)
    copy = d.table(wh.schema_names.current, "opportunity_copy")
    wh.execute(f"CREATE TABLE {copy} AS SELECT * FROM {table}")
    wh.execute(f"DROP TABLE {table}")
    wh.execute(f"ALTER TABLE {copy} RENAME TO {d.q(SPEC.table)}")


def duplicate(wh: Warehouse, record_id: str) -> None:
    d = dialect_of(wh)
    table = d.table(wh.schema_names.current, SPEC.table)
    wh.execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE {d.q('id')} = '{record_id}'")


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    wh = DuckDBWarehouse(path=str(tmp_path / "wh.duckdb"))
    registry.sync_schema(wh, SPEC)
    yield wh
    wh.close()


@pytest.fixture
def snow() -> Iterator[SnowflakeWarehouse]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with fakesnow.patch():
            wh = SnowflakeWarehouse(
                account="fake", user="fake", password="snow", database="SFDCUNIQUE"
            )
            registry.sync_schema(wh, SPEC)
            yield wh
            wh.close()


@pytest.fixture(params=["duckdb", "snowflake"])
def warehouse(request: pytest.FixtureRequest) -> Warehouse:
    return request.getfixturevalue("duck" if request.param == "duckdb" else "snow")


def test_a_duplicate_among_the_touched_ids_fails_the_run_check(warehouse: Warehouse) -> None:
    fill_current(warehouse, 50)
    drop_primary_key(warehouse)
    duplicate(warehouse, rid(7))

    rows, dupes = touched_id_counts(warehouse, SPEC, pa.array([rid(7), rid(8), rid(7)]))
    result = id_unique_result(KEY, rows, dupes)

    assert (rows, dupes) == (3, 1)
    assert not result.passed


def test_a_duplicate_outside_the_run_is_seen_by_the_nightly_check_only(
    warehouse: Warehouse,
) -> None:
    fill_current(warehouse, 50)
    drop_primary_key(warehouse)
    duplicate(warehouse, rid(40))

    rows, dupes = touched_id_counts(warehouse, SPEC, pa.array([rid(1), rid(2)]))
    nightly = full_id_unique_result(warehouse, "Opportunity", KEY)

    assert id_unique_result(KEY, rows, dupes).passed and (rows, dupes) == (2, 0)
    assert not nightly.passed
    assert nightly.metadata["duplicate_ids"].value == 1
    assert nightly.metadata["rows"].value == 51


def _no_ids() -> list[pa.Array]:
    raise AssertionError("a whole-table count reads no ids")


def test_a_run_that_touched_a_tenth_of_current_is_counted_over_the_whole_table(
    warehouse: Warehouse,
) -> None:
    fill_current(warehouse, 50)
    drop_primary_key(warehouse)
    duplicate(warehouse, rid(40))

    # 6 touched ids of 51 rows: the whole table, in one count; the ids are never read.
    rows, dupes, scope = run_id_counts(warehouse, SPEC, 6, _no_ids)

    assert (rows, dupes, scope) == (51, 1, SCOPE_WHOLE)
    assert not id_unique_result(KEY, rows, dupes, scope).passed
    assert id_unique_result(KEY, rows, dupes, scope).metadata["scope"].value == SCOPE_WHOLE


def test_a_small_run_is_counted_over_its_ids_part_by_part(warehouse: Warehouse) -> None:
    fill_current(warehouse, 100)
    drop_primary_key(warehouse)
    duplicate(warehouse, rid(7))
    duplicate(warehouse, rid(40))
    parts = [pa.array([rid(1), rid(2)]), pa.array([rid(7)])]

    rows, dupes, scope = run_id_counts(warehouse, SPEC, 3, lambda: parts)

    # rid(7) is touched and doubled; rid(40) is not touched: the nightly check's.
    assert (rows, dupes, scope) == (4, 1, SCOPE_TOUCHED)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=hs.integers(min_value=1, max_value=60),
    touched=hs.sets(hs.integers(min_value=0, max_value=59), max_size=12),
    doubled=hs.integers(min_value=0, max_value=59),
)
def test_the_run_check_fails_exactly_when_a_duplicate_is_in_its_scope(
    tmp_path_factory: pytest.TempPathFactory, rows: int, touched: set[int], doubled: int
) -> None:
    wh = DuckDBWarehouse(path=str(tmp_path_factory.mktemp("prop") / "wh.duckdb"))
    try:
        registry.sync_schema(wh, SPEC)
        fill_current(wh, rows)
        drop_primary_key(wh)
        doubled %= rows
        duplicate(wh, rid(doubled))
        ids = [rid(i) for i in sorted(touched)]

        counted, dupes, scope = run_id_counts(wh, SPEC, len(ids), lambda: [pa.array(ids)])

        whole = len(ids) >= 0.1 * (rows + 1)
        assert scope == (SCOPE_WHOLE if whole else SCOPE_TOUCHED)
        assert (dupes > 0) == (whole or doubled in touched)
        in_table = [i for i in touched if i < rows]
        assert counted == (rows + 1 if whole else len(in_table) + (doubled in touched))
    finally:
        wh.close()


def _rows_scanned(wh: DuckDBWarehouse, run: Callable[[], object], profile: Path) -> int:
    """DuckDB's `total_rows_scanned` of the last query `run()` issues (the counting one)."""
    con = wh.connection
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{profile}'")
    try:
        run()
    finally:
        con.execute("PRAGMA disable_profiling")
    return int(json.loads(profile.read_text())["query"]["total_rows_scanned"])


def test_the_run_check_reads_the_touched_ids_not_the_table(tmp_path: Path) -> None:
    scanned, full = {}, {}
    touched = pa.array([rid(i) for i in range(0, 2_000, 10)])  # 200 ids
    for rows in (20_000, 400_000):
        wh = DuckDBWarehouse(path=str(tmp_path / f"wh{rows}.duckdb"))
        registry.sync_schema(wh, SPEC)
        fill_current(wh, rows)
        counts: list[tuple[int, int]] = []
        profile = tmp_path / f"profile{rows}.json"
        scanned[rows] = _rows_scanned(
            wh,
            lambda wh=wh, counts=counts: counts.append(touched_id_counts(wh, SPEC, touched)),
            profile,
        )
        full[rows] = _rows_scanned(
            wh, lambda wh=wh: full_id_unique_result(wh, "Opportunity", KEY), profile
        )
        assert counts == [(200, 0)]
        wh.close()

    # The touched ids' rows only, whatever the table's size; the nightly check reads all.
    assert scanned[20_000] == scanned[400_000] <= 200
    assert full[400_000] >= 400_000 > full[20_000] >= 20_000


def test_on_snowflake_the_run_check_reads_current_through_the_touched_id_temp_table() -> None:
    sql = st.id_counts(
        SNOWFLAKE, SPEC, SchemaNames(), f'SELECT "ID" FROM "{CHECK_IDS_TABLE.upper()}"'
    )
    tree = sqlglot.parse_one(sql, read="snowflake")
    where = tree.find(sqlglot.exp.Where)
    assert where is not None
    inner = where.find(sqlglot.exp.Select)
    assert inner is not None
    assert [t.name for t in inner.find_all(sqlglot.exp.Table)] == [CHECK_IDS_TABLE.upper()]


def test_the_nightly_schedule_runs_every_objects_full_check(tmp_path: Path) -> None:
    sync = load_config()
    schedule = nightly_checks_schedule(sync)
    # The job also runs the polled objects' live count (tests/sfdc_assets/test_check_schedules.py).
    polled = [
        live_count_check(o.name, asset_key("current", o), o.key_name)
        for o in sync.objects
        if o.mode == "polling"
    ]
    defs = dg.Definitions(
        asset_checks=[
            *(id_unique_full_check(o.name, asset_key("current", o)) for o in sync.objects),
            *polled,
        ],
        schedules=[schedule],
        resources={
            "warehouse": DuckDBWarehouse(path=str(tmp_path / "wh.duckdb")),
            "salesforce": dg.ResourceDefinition.none_resource(),
        },
    )
    job = defs.resolve_job_def(schedule.job_name)
    checks = [
        c for c in job.asset_layer.asset_graph.asset_check_keys if c.name == CURRENT_ID_UNIQUE_FULL
    ]

    assert schedule.name == "sfdc_nightly_checks"
    assert schedule.cron_schedule == sync.settings.dbt.nightly_cron
    assert {c.asset_key for c in checks} == {asset_key("current", o) for o in sync.objects}


def test_the_nightly_check_fails_on_a_duplicate_in_a_real_run(tmp_path: Path) -> None:
    path = str(tmp_path / "wh.duckdb")
    wh = DuckDBWarehouse(path=path)
    registry.sync_schema(wh, SPEC)
    fill_current(wh, 30)
    drop_primary_key(wh)
    duplicate(wh, rid(3))
    wh.close()
    check = id_unique_full_check("Opportunity", KEY)

    result = dg.materialize(
        [dg.AssetSpec(KEY), check],
        selection=dg.AssetSelection.checks(check),
        resources={"warehouse": DuckDBWarehouse(path=path)},
        raise_on_error=False,
    )

    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CURRENT_ID_UNIQUE_FULL and not evaluation.passed
