"""tables: the small (parameterised) and bulk (Arrow) paths of row reads and writes agree."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from sfdc_emulator import ids as idmod
from sfdc_emulator import tables
from sfdc_emulator.describe import SObjectDef, default_catalog

ACCOUNT: SObjectDef = default_catalog()["Account"]


@pytest.fixture
def cur() -> Iterator[duckdb.DuckDBPyConnection]:
    conn = duckdb.connect()
    cursor = conn.cursor()
    tables.create_object_table(cursor, ACCOUNT)
    yield cursor
    cursor.close()
    conn.close()


def _rows(n: int, start: int = 1) -> dict[str, dict[str, Any]]:
    out = {}
    for i in range(start, start + n):
        rid = idmod.make_id(ACCOUNT.key_prefix, i)
        row: dict[str, Any] = {f.name: None for f in ACCOUNT.stored_fields()}
        row.update(
            Id=rid,
            IsDeleted=False,
            Name=f"A{i}",
            AnnualRevenue=Decimal(i),
            CreatedDate=datetime(2025, 1, 1, 0, 0, i % 60),
        )
        out[rid] = row
    return out


def _table(cur: duckdb.DuckDBPyConnection) -> list[tuple]:
    return cur.execute(f"SELECT * FROM {tables.quote('Account')} ORDER BY Id").fetchall()


@pytest.mark.parametrize("n", [1, tables.SMALL_WRITE, tables.SMALL_WRITE + 1, 70])
def test_inserts_updates_and_purges_land_the_same_on_either_path(
    cur: duckdb.DuckDBPyConnection, n: int
) -> None:
    rows = _rows(n)
    tables.write_rows(cur, ACCOUNT, rows, loaded=set())
    assert tables.fetch_rows(cur, "Account", list(rows)) == rows
    updated: dict[str, dict[str, Any] | None] = {
        rid: dict(r, Name=r["Name"] + "!") for rid, r in rows.items()
    }
    updated[next(iter(rows))] = None  # purged
    tables.write_rows(cur, ACCOUNT, updated, loaded=set(rows))
    expected = {rid: r for rid, r in updated.items() if r is not None}
    assert tables.fetch_rows(cur, "Account", list(rows)) == expected
    assert len(_table(cur)) == n - 1


@pytest.mark.parametrize("n", [1, 2, tables.SMALL_IN, tables.SMALL_IN + 1])
def test_fetch_rows_returns_only_the_ids_that_exist(cur: duckdb.DuckDBPyConnection, n: int) -> None:
    rows = _rows(n)
    tables.write_rows(cur, ACCOUNT, rows, loaded=set())
    missing = idmod.make_id(ACCOUNT.key_prefix, 10_000)
    wanted = [*rows, missing] if n > 1 else list(rows)
    assert tables.fetch_rows(cur, "Account", wanted) == rows


def test_meta_entries_are_replaced_not_duplicated(cur: duckdb.DuckDBPyConnection) -> None:
    tables.create_system_tables(cur)
    tables.put_meta(cur, {"a": "1", "b": "2"})
    tables.put_meta(cur, {"a": "3"})
    assert tables.read_meta(cur) == {"a": "3", "b": "2"}
    assert tables.get_meta(cur, "missing") is None
