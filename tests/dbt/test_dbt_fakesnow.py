"""The dbt project on the Snowflake adapter: dbt-snowflake 1.12 on fakesnow, against DuckDB.

The same org (the emulator's tiny org, backfilled by the real engine: `SnowflakeWarehouse`
on fakesnow 0.12.1 in patch mode, `DuckDBWarehouse` on a file) is built by `dbt build` on
both targets: `local` (dbt-duckdb, a subprocess as Dagster runs it) and `fake` (the real
dbt-snowflake adapter in process, `dbtRunner`, a temporary profile of type snowflake and a
copy of the project: bench/dbt_snowflake_statements.py `fake_project`). Every node must
pass on both, and every mart must hold the same rows; then the same change set goes
through the engine on both and the revenue and activities domains are rebuilt
incrementally (`replace_keys`: dbt-snowflake's BEGIN / DELETE / INSERT / COMMIT on
fakesnow), and the marts must still agree.

Not verified here (fakesnow runs on DuckDB): the incremental marts' `__dbt_tmp` as a
Snowflake TEMPORARY table (a plain table under target `fake`, the one shim:
tests/dbt/fakesnow_macros/fakesnow_shims.sql); Snowflake's transaction isolation and
locking; TRANSIENT and CLUSTER BY (accepted, ignored); more than one dbt thread;
timings and pruning. `built_at` (the build's clock) and `synced_at` (the engine's write
stamp) are left out of the comparison: the two warehouses are filled seconds apart.
"""

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.dbt_snowflake_statements import (
    DATABASE,
    change_set,
    fake_project,
    fake_warehouse,
    quiet,
    run_dbt,
)
from tests.dbt.harness import backfill, build_org_warehouse, engine, query
from tests.dbt.harness import run_dbt as run_duck_dbt

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dbt")]

MARTS = (
    "commission_preview",
    "dim_account",
    "fct_account_activity",
    "fct_opportunity_history",
    "fct_pipeline",
)
INCREMENTAL = ["build", "--select", "tag:revenue", "tag:activities", "--vars", "{recent_days: 2}"]
# The same build again, its affected keys in temporary tables instead of inlined literals
# (macros/incremental.sql keys_table, over incremental_inline_keys_max): within the
# lookback it rebuilds the same keys, so the marts must not change.
KEYS_TABLE = [
    *INCREMENTAL[:-1],
    "{recent_days: 2, incremental_inline_keys_max: 0}",
]
# The build's clock and the engine's write stamp (`_synced_at`): the two warehouses are
# filled and built seconds apart.
CLOCK = {"built_at", "synced_at"}


def _value(v: Any) -> Any:
    if isinstance(v, Decimal | float):
        return round(float(v), 6)
    return v


def _rows(names: list[str], rows: list[tuple]) -> list[tuple]:
    keep = [i for i, n in enumerate(names) if n.lower() not in CLOCK]
    return sorted((tuple(_value(r[i]) for i in keep) for r in rows), key=repr)


def _duck_marts(path: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    out = {}
    for mart in MARTS:
        names = [r[0] for r in query(path, f"describe marts.{mart}")]
        out[mart] = (
            [n.lower() for n in names if n.lower() not in CLOCK],
            _rows(names, query(path, f"select * from marts.{mart}")),
        )
    return out


def _fake_marts() -> dict[str, tuple[list[str], list[tuple]]]:
    import snowflake.connector

    con = snowflake.connector.connect(
        account="fakesnow", user="fake", password="fake", database=DATABASE, schema="marts"
    )
    out = {}
    try:
        for mart in MARTS:
            cur = con.cursor()
            cur.execute(f"select * from {DATABASE}.marts.{mart}")
            names = [d[0] for d in cur.description]
            out[mart] = (
                [n.lower() for n in names if n.lower() not in CLOCK],
                _rows(names, cur.fetchall()),
            )
    finally:
        con.close()
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> Iterator[dict[str, Any]]:
    import fakesnow

    base = tmp_path_factory.mktemp("dbt_fakesnow")
    duck = base / "warehouse.duckdb"
    built = build_org_warehouse(duck, base / "org_duck")
    full = run_duck_dbt(["build"], duck, base / "duck_full")
    assert full.returncode == 0, full.stdout[-3000:]
    out: dict[str, Any] = {"duck_full": _duck_marts(duck)}
    project, profiles = fake_project(base / "fake")
    with quiet(), fakesnow.patch():
        wh = fake_warehouse()
        fake_built = {"specs": backfill(wh, built["truth"]), "truth": built["truth"]}
        wh.close()
        out["fake_full_run"] = run_dbt(project, profiles, ["build"])
        out["fake_full"] = _fake_marts()
        wh = fake_warehouse()
        change_set(wh, fake_built)
        wh.close()
        out["fake_incremental_run"] = run_dbt(project, profiles, INCREMENTAL)
        out["fake_incremental"] = _fake_marts()
        out["fake_keys_table_run"] = run_dbt(project, profiles, KEYS_TABLE)
        out["fake_keys_table"] = _fake_marts()
    with engine(duck) as wh:
        change_set(wh, built)
    inc = run_duck_dbt(INCREMENTAL, duck, base / "duck_incremental")
    assert inc.returncode == 0, inc.stdout[-3000:]
    out["duck_incremental"] = _duck_marts(duck)
    yield out


def test_every_node_builds_and_passes_on_dbt_snowflake(both) -> None:
    for run in ("fake_full_run", "fake_incremental_run", "fake_keys_table_run"):
        result = both[run]
        assert result.success, result.error
    full = both["fake_full_run"].nodes
    # dim_account, fct_account_activity, fct_opportunity_history, fct_pipeline
    assert sum(kind == "incremental" for kind in full.values()) == 4
    assert sum(kind == "test" for kind in full.values()) >= 40


@pytest.mark.parametrize(
    ("stage", "fake_stage"),
    [("full", "full"), ("incremental", "incremental"), ("incremental", "keys_table")],
)
def test_marts_hold_the_same_rows_as_on_duckdb(both, stage: str, fake_stage: str) -> None:
    duck, fake = both[f"duck_{stage}"], both[f"fake_{fake_stage}"]
    for mart in MARTS:
        assert fake[mart][0] == duck[mart][0], mart
        assert fake[mart][1] == duck[mart][1], mart
        assert duck[mart][1], f"{mart} is empty: the comparison proves nothing"


def test_the_change_set_changed_the_incremental_marts(both) -> None:
    for mart in ("dim_account", "fct_opportunity_history", "fct_account_activity"):
        assert both["fake_incremental"][mart][1] != both["fake_full"][mart][1], mart
