"""`sync_engine.drift`: the reconciliation's set arithmetic, against a plain-Python spec.

Any current table and any listing (records present in either, stamps before, equal to or
after each other, deletion flags) give exactly the stale, missing and formula-drift sets
the module docstring defines, on DuckDB and through fakesnow.
"""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import fakesnow
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources.snowflake_warehouse import SnowflakeWarehouse
from sync_engine import changes as ch
from sync_engine import drift, registry
from sync_engine.apply import apply_batch
from sync_engine.spec import FieldSpec, ObjectSpec
from sync_engine.warehouse import Warehouse
from tests.sync_engine.conftest import fresh_duckdb

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")

SPEC = ObjectSpec(
    "Opportunity",
    (
        FieldSpec("Name", "string"),
        FieldSpec("SystemModstamp", "datetime"),
        FieldSpec("ExpectedRevenue", "currency", 2, calculated=True),
    ),
)
IDS = [f"006{i:012d}AAA" for i in range(1, 9)]
BASE = dt.datetime(2024, 3, 1)
WINDOW = drift.Window(BASE + dt.timedelta(seconds=2), BASE + dt.timedelta(seconds=8))
REVENUE = [Decimal("10.00"), Decimal("12.50"), None]
_db_numbers = itertools.count()


def _stamp(second: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=second)


record = st.fixed_dictionaries(
    {"second": st.integers(0, 9), "deleted": st.booleans(), "revenue": st.sampled_from(REVENUE)}
)
sides = st.lists(
    st.tuples(st.none() | record, st.none() | record), min_size=len(IDS), max_size=len(IDS)
)


def _current_changes(current: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        ch.snapshot_change(
            SPEC,
            record_id=rid,
            values={
                "Name": "n",
                "SystemModstamp": _stamp(r["second"]),
                "ExpectedRevenue": r["revenue"],
            },
            system_modstamp=_stamp(r["second"]),
            read_started_at=_stamp(r["second"] + 1),
            is_deleted=r["deleted"],
        )
        for rid, r in current.items()
    ]


def _listing(listed: dict[str, dict[str, Any]], formulas: bool) -> pa.Table:
    ids = sorted(listed)
    if formulas:
        return pa.table(
            {
                "id": ids,
                "expectedrevenue": pa.array(
                    [listed[i]["revenue"] for i in ids], type=pa.decimal128(18, 2)
                ),
            }
        )
    return pa.table(
        {
            "id": ids,
            "systemmodstamp": pa.array(
                [_stamp(listed[i]["second"]) for i in ids], type=pa.timestamp("us")
            ),
            "is_deleted": [listed[i]["deleted"] for i in ids],
        }
    )


def _expected(current: dict, listed: dict) -> tuple[list[str], list[str], list[str]]:
    stale = sorted(
        rid
        for rid, lr in listed.items()
        if rid not in current
        or current[rid]["second"] < lr["second"]
        or (current[rid]["second"] == lr["second"] and current[rid]["deleted"] != lr["deleted"])
    )
    missing = sorted(
        rid
        for rid, cr in current.items()
        if not cr["deleted"]
        and WINDOW.start <= _stamp(cr["second"]) < WINDOW.end
        and rid not in listed
    )
    formula = sorted(
        rid
        for rid, lr in listed.items()
        if rid in current and current[rid]["revenue"] != lr["revenue"]
    )
    return stale, missing, formula


def _check(wh: Warehouse, pairs: list[tuple[dict | None, dict | None]]) -> None:
    current = {rid: c for rid, (c, _) in zip(IDS, pairs, strict=True) if c is not None}
    listed = {rid: lr for rid, (_, lr) in zip(IDS, pairs, strict=True) if lr is not None}
    if current:
        apply_batch(wh, SPEC, ch.build_batch(SPEC, _current_changes(current)))
    stale, missing, formula = _expected(current, listed)

    # Two parts, so the part-by-part load is exercised.
    table = _listing(listed, formulas=False)
    n = drift.load_listing(wh, SPEC, [table.slice(0, 3), table.slice(3)])
    found = drift.find_drift(wh, SPEC, WINDOW, n)
    assert n == len(listed)
    assert list(found.stale) == stale
    assert list(found.missing) == missing

    n = drift.load_listing(wh, SPEC, [_listing(listed, formulas=True)], ["ExpectedRevenue"])
    rows = drift.find_formula_drift(wh, SPEC, ["ExpectedRevenue"]).to_pylist()
    assert [r["id"] for r in rows] == formula
    assert all(r["expectedrevenue"] == listed[r["id"]]["revenue"] for r in rows)
    assert drift.live_ids(wh, SPEC, IDS) == sorted(
        rid for rid, c in current.items() if not c["deleted"]
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=sides)
def test_drift_on_duckdb_is_exactly_the_specified_sets(pairs) -> None:
    wh = fresh_duckdb(spec=SPEC)
    try:
        _check(wh, pairs)
    finally:
        wh.close()


@pytest.fixture(scope="module")
def fake_snowflake() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with fakesnow.patch():
            yield


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=sides)
def test_drift_through_fakesnow_is_exactly_the_specified_sets(fake_snowflake, pairs) -> None:
    wh = SnowflakeWarehouse(
        account="fake", user="fake", password="snow", database=f"DRIFT{next(_db_numbers)}"
    )
    registry.sync_schema(wh, SPEC)
    try:
        _check(wh, pairs)
    finally:
        wh.close()


def test_a_whole_history_window_counts_every_live_record_missing_from_the_listing() -> None:
    wh = fresh_duckdb(spec=SPEC)
    current = {IDS[0]: {"second": 0, "deleted": False, "revenue": None}}
    apply_batch(wh, SPEC, ch.build_batch(SPEC, _current_changes(current)))
    n = drift.load_listing(wh, SPEC, [])
    whole = drift.Window(None, _stamp(9))
    assert drift.find_drift(wh, SPEC, whole, n).missing == (IDS[0],)
    assert drift.find_drift(wh, SPEC, WINDOW, n).missing == ()  # stamped before the window
    wh.close()
