"""The parallel-run dbt test (dbt/tests/legacy_parallel_run.sql, docs/migration.md) on
DuckDB: the legacy views against a copy standing in for the old replication's tables.

The org is the emulator's tiny one through the real engine; the "old tables" are made
from the legacy views themselves (what a correct old replication holds), then broken in
the two ways the test exists for: a deal whose Amount differs, an Account row missing.
Not verified: the Snowflake rendering (relation quoting of the old database and schema
against a real account); the SQL uses only the project's cross-db macros.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.dbt.harness import build_org_warehouse, once, run_dbt

pytestmark = [pytest.mark.xdist_group("dbt"), pytest.mark.slow]

OBJECTS = (
    "ACCOUNT",
    "CONTACT",
    "EVENT",
    "LEAD",
    "OPPORTUNITY",
    "OPPORTUNITYLINEITEM",
    "TASK",
    "USER",
)


def _build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("parallel_run")
    path = base / "warehouse.duckdb"
    build_org_warehouse(path, base / "org")
    run = run_dbt(["run", "--select", "legacy"], path, base / "dbt_run")
    assert run.returncode == 0, run.stdout[-3000:]
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA legacy_old")
    for name in OBJECTS:
        con.execute(f'CREATE TABLE legacy_old."{name}" AS SELECT * FROM legacy."{name}"')
    con.close()
    return path


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return once("parallel_run", lambda: _build(tmp_path_factory))


def _test(path: Path, work: Path, monkeypatch: pytest.MonkeyPatch, enabled: str = "true"):
    monkeypatch.setenv("SFDC_LEGACY_PARALLEL_RUN", enabled)
    monkeypatch.setenv("SFDC_LEGACY_COMPARE_LAG_MINUTES", "0")
    return run_dbt(["test", "--select", "legacy_parallel_run"], path, work)


def test_identical_old_tables_pass_then_a_changed_amount_and_a_missing_row_fail(
    warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _test(warehouse, tmp_path / "same", monkeypatch)
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.failures("legacy_parallel_run") == ("pass", 0)

    con = duckdb.connect(str(warehouse))
    (deal,) = con.execute(
        'SELECT "Id" FROM legacy_old."OPPORTUNITY" WHERE "Amount" IS NOT NULL ORDER BY "Id" LIMIT 1'
    ).fetchone()
    con.execute(
        'UPDATE legacy_old."OPPORTUNITY" SET "Amount" = "Amount" + 1 WHERE "Id" = ?', [deal]
    )
    con.execute(
        'DELETE FROM legacy_old."ACCOUNT" WHERE "Id" = (SELECT MIN("Id") FROM legacy_old."ACCOUNT")'
    )
    con.close()
    try:
        run = _test(warehouse, tmp_path / "broken", monkeypatch)
        assert run.returncode != 0
        # One Amount difference (that deal) and one row count (Account).
        assert run.failures("legacy_parallel_run") == ("fail", 2)

        # Off (the default outside a parallel run): the same differences are not reported.
        run = _test(warehouse, tmp_path / "off", monkeypatch, enabled="false")
        assert run.failures("legacy_parallel_run") == ("pass", 0)
    finally:
        con = duckdb.connect(str(warehouse))
        con.execute('DELETE FROM legacy_old."OPPORTUNITY"')
        con.execute('INSERT INTO legacy_old."OPPORTUNITY" SELECT * FROM legacy."OPPORTUNITY"')
        con.execute('DELETE FROM legacy_old."ACCOUNT"')
        con.execute('INSERT INTO legacy_old."ACCOUNT" SELECT * FROM legacy."ACCOUNT"')
        con.close()
