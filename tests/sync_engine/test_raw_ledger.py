"""The raw-append ledger decides "already in raw?" without reading raw where it can.

Issue 11 item 3: every part of a whole-history Bulk read was anti-joined with raw over its
days, which are all of raw's, so a bootstrap was quadratic. The ledger
(`sfdc_meta.raw_appends`) records each append's change-id family, day and record-id
ranges, read and part; a part is compared with raw only when an earlier append could
hold one of its change ids. Parts of one read (a Bulk job returns each record once) are
not compared with each other. These tests hold the central invariant with reads in the
mix, on DuckDB and through fakesnow, and pin the fallbacks that keep it.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator
from typing import Any

import fakesnow
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources.snowflake_warehouse import SnowflakeWarehouse
from sync_engine import registry
from sync_engine.apply import append_raw, apply_batch
from sync_engine.changes import build_batch
from sync_engine.dialect import dialect_of
from sync_engine.reference_fold import fold
from sync_engine.warehouse import Warehouse
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import (
    FULL,
    SPEC,
    deliveries,
    histories,
    normalize_expected,
    read_current,
    read_history,
    snapshot,
)

READ = "backfill/Opportunity/2024-01-01/bulk-750000000000001"
_db_numbers = itertools.count()
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")


@pytest.fixture(scope="module")
def fake_snowflake() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with fakesnow.patch():
            yield


def fresh_snowflake() -> SnowflakeWarehouse:
    wh = SnowflakeWarehouse(
        account="fake", user="fake", password="snow", database=f"SFDCLEDGER{next(_db_numbers)}"
    )
    registry.sync_schema(wh, SPEC)
    return wh


def raw_ids(wh: Warehouse) -> tuple[int, int]:
    """(rows, distinct change ids) of raw."""
    d = dialect_of(wh)
    rows, distinct = wh.query(
        f"SELECT COUNT(*), COUNT(DISTINCT {d.q('change_id')}) "
        f"FROM {d.table(wh.schema_names.raw, SPEC.table)}"
    )[0]
    return int(rows), int(distinct)


@st.composite
def read_parts(draw: st.DrawFn, history: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """One Bulk read of some of the history's records: each at most once, in parts."""
    by_record: dict[str, list[dict[str, Any]]] = {}
    for row in history:
        if row["source"] == "bulk" and row["change_type"] == "SNAPSHOT":
            by_record.setdefault(row["record_id"], []).append(row)
    read = [draw(st.sampled_from(rows)) for rows in by_record.values() if draw(st.booleans())]
    if not read:
        return []
    count = draw(st.integers(1, len(read)))
    parts = [draw(st.integers(0, count - 1)) for _ in read]
    return [[r for r, p in zip(read, parts, strict=True) if p == i] for i in range(count)]


def deliver_with_a_read(wh: Warehouse, data: st.DataObject, history: list[dict[str, Any]]) -> None:
    """Every change once at least: a read's parts (appended first, sometimes twice, or
    only applied) and the other deliveries, in any order."""
    ops: list[tuple[str, int, list[dict[str, Any]]]] = [
        ("part", i, part) for i, part in enumerate(data.draw(read_parts(history)))
    ]
    ops += [("batch", i, rows) for i, rows in enumerate(data.draw(deliveries(history)))]
    modes = st.sampled_from(["append_apply", "append_twice_apply", "apply"])
    for kind, i, rows in data.draw(st.permutations(ops)):
        if kind == "batch":
            apply_batch(wh, SPEC, build_batch(SPEC, rows))
            continue
        label, mode = f"bulk-750000000000001-p{i}", data.draw(modes)
        for _ in range(2 if mode == "append_twice_apply" else 1 if mode != "apply" else 0):
            append_raw(wh, SPEC, build_batch(SPEC, rows), batch_id=label, read_id=READ)
        apply_batch(wh, SPEC, build_batch(SPEC, rows), batch_id=label, read_id=READ)


def _check(wh: Warehouse, history: list[dict[str, Any]]) -> None:
    expected = fold(SPEC, history)
    assert read_current(wh) == {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    assert read_history(wh) == normalize_expected(expected.history)
    distinct = len({r["change_id"] for r in history})
    assert raw_ids(wh) == (distinct, distinct)


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=histories(max_size=12))
def test_a_reads_parts_among_other_deliveries_equal_the_reference_fold(data, history):
    wh = fresh_duckdb()
    deliver_with_a_read(wh, data, history)
    _check(wh, history)
    wh.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=histories(max_size=8))
def test_snowflake_a_reads_parts_among_other_deliveries_equal_the_reference_fold(
    fake_snowflake, data, history
):
    wh = fresh_snowflake()
    deliver_with_a_read(wh, data, history)
    _check(wh, history)
    wh.close()


A, B, C = "006000000000001AAA", "006000000000002AAA", "006000000000003AAA"


def _part(*rids: str, second: int = 0) -> list[dict[str, Any]]:
    return [snapshot(r, second, 5000, FULL) for r in rids]


@pytest.fixture(params=["duckdb", "snowflake"])
def warehouse(request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        wh: Warehouse = fresh_duckdb()
        yield wh
    else:
        request.getfixturevalue("fake_snowflake")
        wh = fresh_snowflake()
        yield wh
    wh.close()


def test_another_read_repeating_raws_changes_is_compared_and_adds_nothing(
    warehouse: Warehouse,
) -> None:
    first = build_batch(SPEC, _part(A, B))
    assert append_raw(warehouse, SPEC, first, batch_id="bulk-1-p0", read_id="read-1") == 2
    # A re-backfill (another Bulk job) sees the same states again, plus a new record.
    again = build_batch(SPEC, _part(B, C))
    assert append_raw(warehouse, SPEC, again, batch_id="bulk-2-p0", read_id="read-2") == 1
    # The first read's part again (a retried run): the same part is compared with raw.
    assert append_raw(warehouse, SPEC, first, batch_id="bulk-1-p0", read_id="read-1") == 0
    assert raw_ids(warehouse) == (3, 3)


def test_a_raw_table_older_than_the_ledger_is_seeded_so_its_changes_are_still_found(
    warehouse: Warehouse,
) -> None:
    append_raw(warehouse, SPEC, build_batch(SPEC, _part(A, B)), batch_id="old")
    d = dialect_of(warehouse)
    warehouse.execute(f"DROP TABLE {d.table(warehouse.schema_names.meta, 'raw_appends')}")

    registry.sync_schema(warehouse, SPEC)  # every raw run does this first
    added = append_raw(
        warehouse, SPEC, build_batch(SPEC, _part(B, C)), batch_id="bulk-9-p0", read_id="read-9"
    )

    assert added == 1
    assert raw_ids(warehouse) == (3, 3)


def test_a_part_appended_then_applied_is_found_in_the_ledger_and_applied_once(
    warehouse: Warehouse,
) -> None:
    def batch() -> Any:
        return build_batch(SPEC, _part(A, B, C))

    assert append_raw(warehouse, SPEC, batch(), batch_id="bulk-1-p0", read_id=READ) == 3
    assert append_raw(warehouse, SPEC, batch(), batch_id="bulk-1-p0", read_id=READ) == 0
    result = apply_batch(warehouse, SPEC, batch(), batch_id="bulk-1-p0", read_id=READ)
    again = apply_batch(warehouse, SPEC, batch(), batch_id="bulk-1-p0", read_id=READ)

    assert (result.raw_inserted, result.applied, result.inserted) == (0, 3, 3)
    assert (again.raw_inserted, again.applied) == (0, 0)
    assert sorted(read_current(warehouse)) == [A, B, C]
