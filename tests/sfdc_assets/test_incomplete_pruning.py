"""`read_whole_before` answers from current's `_read_whole` marker, and reads raw only for
the records the marker does not settle, from their first version on, not all of raw.

Issue 11 item 3: the CDC run's "was this record ever read whole?" lookup queried raw by
`record_id IN (...)` alone, a scan of all of raw on every CDC run. It now prunes raw by
change_date from the earliest day a whole image of those records can have (their first
scd2 version, or the first day of a part appended but not applied yet). Real DuckDB file.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from resources.duckdb_warehouse import DuckDBWarehouse
from sfdc_assets import batches
from sfdc_assets.incomplete import earliest_whole_day, read_whole_before
from sync_engine import registry
from sync_engine.apply import append_raw, apply_batch
from sync_engine.changes import build_batch
from tests.sync_engine.histories import FULL, SPEC, cdc, snapshot

A, B, C, D = (f"006{i:012d}AAA" for i in range(1, 5))
OLD_DAY = dt.date(2021, 3, 1)
# DuckDB prunes by row group (zone maps): whole groups of old rows, so a group is all old.
ROW_GROUP = 122_880


def old_raw_rows(wh: DuckDBWarehouse, rows: int) -> None:
    """`rows` raw rows of other records, all changed in 2021 (before A..D's first change)."""
    wh.connection.execute(
        "INSERT INTO sfdc_raw.opportunity (change_id, record_id, source, change_type, version, "
        "version_ts, set_fields, batch_id, change_date) SELECT md5(i::VARCHAR), "
        "'006' || lpad(i::VARCHAR, 12, '0') || 'ZZZ', 'bulk', 'SNAPSHOT', "
        "lpad(i::VARCHAR, 40, '0'), TIMESTAMP '2021-03-01', ['Name'], 'old', "
        f"DATE '{OLD_DAY}' FROM range({rows}) r(i)"
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    wh = DuckDBWarehouse(path=str(tmp_path / "wh.duckdb"))
    registry.sync_schema(wh, SPEC)
    batches.ensure_ledger(wh)
    return wh


def test_records_first_seen_recently_are_looked_up_in_their_recent_days_only(
    tmp_path: Path,
) -> None:
    scanned = {}
    for rows in (2 * ROW_GROUP, 8 * ROW_GROUP):
        wh = DuckDBWarehouse(path=str(tmp_path / f"wh{rows}.duckdb"))
        registry.sync_schema(wh, SPEC)
        batches.ensure_ledger(wh)
        old_raw_rows(wh, rows)
        # A was created by CDC (a whole image); B only ever got a partial update.
        apply_batch(wh, SPEC, build_batch(SPEC, [cdc("CREATE", 1, A, 0, values=FULL)]))
        apply_batch(wh, SPEC, build_batch(SPEC, [cdc("UPDATE", 2, B, 5, changed_fields=["Name"])]))
        wh.execute("CHECKPOINT")
        con = wh.connection
        profile = tmp_path / f"profile{rows}.json"
        con.execute("PRAGMA enable_profiling = 'json'")
        con.execute(f"PRAGMA profiling_output = '{profile}'")
        seen = read_whole_before(wh, SPEC, [A, B])
        con.execute("PRAGMA disable_profiling")
        scanned[rows] = json.loads(profile.read_text())["query"]["total_rows_scanned"]
        assert seen == {A}
        wh.close()

    # The raw lookup (the last query) reads the recent days only, whatever raw's size.
    assert scanned[2 * ROW_GROUP] == scanned[8 * ROW_GROUP] < ROW_GROUP


def test_a_record_read_whole_long_ago_is_still_found(warehouse: DuckDBWarehouse) -> None:
    old_raw_rows(warehouse, 1_000)
    apply_batch(warehouse, SPEC, build_batch(SPEC, [snapshot(C, -86_400 * 900, 5000, FULL)]))
    apply_batch(
        warehouse, SPEC, build_batch(SPEC, [cdc("UPDATE", 3, C, 0, changed_fields=["Name"])])
    )

    assert earliest_whole_day(warehouse, SPEC, [C]) < dt.date(2022, 1, 1)
    assert read_whole_before(warehouse, SPEC, [C]) == {C}


def test_a_whole_image_appended_but_not_applied_yet_is_found_through_the_pending_part(
    warehouse: DuckDBWarehouse,
) -> None:
    part = batches.PartRef("backfill", "Opportunity", OLD_DAY, "bulk-7500000000000AA", 0)
    row = snapshot(D, -86_400 * 900, 5000, FULL)
    append_raw(warehouse, SPEC, build_batch(SPEC, [row]), batch_id=part.label)
    day = row["change_date"]
    batches.register(
        warehouse,
        batches.LedgerRow(
            "Opportunity", part, "valid", day, day, 1, 1, 0, "bulk", "r", dt.datetime(2026, 1, 1)
        ),
    )

    assert read_whole_before(warehouse, SPEC, [D]) == {D}
    assert read_whole_before(warehouse, SPEC, [A]) == set()


def _pending(warehouse: DuckDBWarehouse, row: dict, n: int) -> None:
    """Append `row` to raw as a valid part of the ledger not applied yet."""
    part = batches.PartRef("backfill", "Opportunity", OLD_DAY, f"bulk-75000000000000{n}", 0)
    append_raw(warehouse, SPEC, build_batch(SPEC, [row]), batch_id=part.label)
    day = row["change_date"]
    batches.register(
        warehouse,
        batches.LedgerRow(
            "Opportunity", part, "valid", day, day, 1, 1, 0, "bulk", "r", dt.datetime(2026, 1, 1)
        ),
    )


def test_the_marker_finds_exactly_the_records_never_read_whole(
    warehouse: DuckDBWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    E, F, G = (f"006{i:012d}AAA" for i in range(5, 8))
    old_raw_rows(warehouse, 1_000)
    # Before the marker: C read whole long ago, E only ever partially changed.
    apply_batch(warehouse, SPEC, build_batch(SPEC, [snapshot(C, -86_400 * 900, 5000, FULL)]))
    apply_batch(
        warehouse, SPEC, build_batch(SPEC, [cdc("UPDATE", 1, E, 0, changed_fields=["Name"])])
    )
    warehouse.execute("ALTER TABLE sfdc.opportunity DROP COLUMN _read_whole")
    registry.sync_schema(warehouse, SPEC)  # adds it back: NULL (unknown) for C and E
    # After: A read whole, B and G partial only; G's and D's whole images are appended to
    # raw but not applied yet (pending parts); F is unknown everywhere.
    apply_batch(warehouse, SPEC, build_batch(SPEC, [snapshot(A, 0, 500, FULL)]))
    apply_batch(
        warehouse,
        SPEC,
        build_batch(
            SPEC,
            [
                cdc("UPDATE", 2, B, 5, changed_fields=["Name"]),
                cdc("UPDATE", 3, G, 5, changed_fields=["Name"]),
            ],
        ),
    )
    markers = dict(warehouse.query("SELECT id, _read_whole FROM sfdc.opportunity"))
    assert markers == {A: True, B: False, G: False, C: None, E: None}

    # Marked records alone: answered by current, raw is not read.
    sent: list[str] = []
    query = DuckDBWarehouse.query

    def recording(self: DuckDBWarehouse, sql: str, *args: object, **kwargs: object) -> object:
        sent.append(sql)
        return query(self, sql, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DuckDBWarehouse, "query", recording)
    assert read_whole_before(warehouse, SPEC, [A]) == {A}
    assert not [s for s in sent if "sfdc_raw" in s]
    # Partial-only records with no part pending: current, then the ledger; no raw read.
    sent.clear()
    assert read_whole_before(warehouse, SPEC, [B, G, F]) == set()
    assert not [s for s in sent if "sfdc_raw" in s]

    _pending(warehouse, snapshot(G, 10, 500, FULL), 1)
    _pending(warehouse, snapshot(D, 10, 500, FULL), 2)
    sent.clear()
    assert read_whole_before(warehouse, SPEC, [A, B, C, D, E, F, G]) == {A, C, D, G}
    # Only the unknown (C, E) and the unmarked (B, D, F, G) ids were looked up in raw.
    raw_reads = [s for s in sent if "sfdc_raw" in s]
    assert raw_reads and all(A not in s for s in raw_reads)
