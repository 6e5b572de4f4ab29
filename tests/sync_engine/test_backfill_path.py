"""The backfill path: new records written without a fold, big batches applied in chunks.

A record new to current with one change in the batch is inserted as that change
(`insert_new_history`/`insert_new_current`); the rest of the batch takes the general
merge. A batch above `apply.CHUNK_ROWS` is applied as chunks of whole records, each its
own batch. Both must leave exactly the tables of the reference fold, whatever the mix of
new and existing records and wherever the chunk boundaries fall.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from decimal import Decimal
from typing import Any
from unittest import mock

import fakesnow
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources.snowflake_warehouse import SnowflakeWarehouse
from sync_engine import apply as apply_mod
from sync_engine import registry
from sync_engine.apply import apply_batch, default_batch_id
from sync_engine.changes import build_batch
from sync_engine.reference_fold import fold
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import (
    FULL,
    SPEC,
    cdc,
    deliveries,
    histories,
    normalize_expected,
    read_current,
    read_history,
    snapshot,
)
from tests.sync_engine.test_crash_recovery import Crash


def _rid(group: int, rid: str) -> str:
    return f"006{group:03d}{rid[6:]}"


@st.composite
def wide_histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to 4 independent histories on disjoint record ids (up to 12 records in all)."""
    rows = []
    for group, history in enumerate(draw(st.lists(histories(max_size=8), min_size=1, max_size=4))):
        for row in history:
            # Change ids stay unique across groups (the same event uuid recurs in each).
            cid = hashlib.sha1(f"{group}:{row['change_id']}".encode()).hexdigest()[:32]
            rows.append({**row, "record_id": _rid(group, row["record_id"]), "change_id": cid})
    return rows


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=wide_histories(), chunk_rows=st.integers(1, 5))
def test_chunked_batches_mixing_new_and_existing_records_equal_the_reference_fold(
    data, history, chunk_rows
):
    expected = fold(SPEC, history)
    expected_current = {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    wh = fresh_duckdb()
    with mock.patch.object(apply_mod, "CHUNK_ROWS", chunk_rows):
        for batch in data.draw(deliveries(history)):
            apply_batch(wh, SPEC, build_batch(SPEC, batch))
    assert read_current(wh) == expected_current
    assert read_history(wh) == normalize_expected(expected.history)
    wh.close()


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=wide_histories(), chunk_rows=st.integers(1, 5))
def test_batches_appended_to_raw_first_then_applied_equal_the_reference_fold(
    data, history, chunk_rows
):
    # The production shape: the raw asset appends each part (append_raw), the current
    # asset applies it with the same label; sometimes the append saw the part's rows in
    # another order (so other chunks), sometimes it is skipped, or the apply runs twice.
    expected = fold(SPEC, history)
    expected_current = {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    wh = fresh_duckdb()
    modes = st.sampled_from(["apply", "append", "append_reversed", "append_apply_twice"])
    with mock.patch.object(apply_mod, "CHUNK_ROWS", chunk_rows):
        for i, rows in enumerate(data.draw(deliveries(history))):
            mode, label = data.draw(modes), f"part{i}"
            if mode != "apply":
                order = rows[::-1] if mode == "append_reversed" else rows
                apply_mod.append_raw(wh, SPEC, build_batch(SPEC, order), batch_id=label)
            batch = build_batch(SPEC, rows)
            result = apply_batch(wh, SPEC, batch, batch_id=label)
            if mode != "apply":
                assert result.raw_inserted == 0
            if mode == "append_apply_twice":  # a rerun of an applied part changes nothing
                tables = read_current(wh), read_history(wh)
                apply_batch(wh, SPEC, batch, batch_id=label)
                assert (read_current(wh), read_history(wh)) == tables
    assert read_current(wh) == expected_current
    assert read_history(wh) == normalize_expected(expected.history)
    wh.close()


def test_a_part_appended_in_another_row_order_then_applied_in_chunks_loses_nothing(monkeypatch):
    # Chunk ids used to be `<batch id>.c<i>`: the slices of a reordered batch got the ids
    # of other rows, and a chunk logged as applied hid rows raw held under its id.
    # (A reordered part may still leave raw rows under a chunk id no apply logs: later
    # deliveries of those changes apply them again, to the same tables.)
    monkeypatch.setattr(apply_mod, "CHUNK_ROWS", 1)
    rows = _backfill(0, 3)
    wh = fresh_duckdb()
    assert apply_mod.append_raw(wh, SPEC, build_batch(SPEC, rows[::-1]), batch_id="p") == 3
    result = apply_batch(wh, SPEC, build_batch(SPEC, rows), batch_id="p")
    assert (result.raw_inserted, result.applied) == (0, 3)
    assert sorted(read_current(wh)) == [f"006{i:015d}" for i in range(3)]
    wh.close()


class _Recording:
    """Delegates to a warehouse; records the statements it runs."""

    def __init__(self, inner) -> None:
        self.inner, self.statements = inner, []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def execute(self, sql: str, params=None) -> int:
        self.statements.append(sql)
        return self.inner.execute(sql, params)


def test_a_part_appended_to_raw_is_applied_without_joining_raw(duck):
    batch = build_batch(SPEC, _backfill(0, 4))
    assert apply_mod.append_raw(duck, SPEC, batch, batch_id="part0") == 4
    recording = _Recording(duck)
    result = apply_batch(recording, SPEC, batch, batch_id="part0")
    assert (result.raw_inserted, result.applied, result.inserted) == (0, 4, 4)
    assert not [q for q in recording.statements if '"sfdc_raw"' in q]
    assert len(read_current(duck)) == 4
    again = apply_batch(recording, SPEC, batch, batch_id="part0")  # logged: nothing to do
    assert (again.raw_inserted, again.applied) == (0, 0)
    # Raw holds the rows under another label: the general path (anti-join, join) decides.
    recording.statements.clear()
    assert apply_batch(recording, SPEC, batch, batch_id="other").applied == 0
    assert [q for q in recording.statements if q.startswith('INSERT INTO "sfdc_raw"')]


def _backfill(first: int, count: int, second: int = 0) -> list[dict[str, Any]]:
    return [
        snapshot(f"006{i:015d}", second, 1000, {**FULL, "Name": f"Deal {i}"})
        for i in range(first, first + count)
    ]


def _mixed() -> list[dict[str, Any]]:
    """After `_backfill(0, n)`: an update of record 0, three new records, one new deleted."""
    amount = {"Amount": Decimal("9")}
    return [
        cdc("UPDATE", 1, f"006{0:015d}", 5, values=amount, changed_fields=["Amount"]),
        *_backfill(10, 3, second=5),
        cdc("DELETE", 2, f"006{20:015d}", 6),  # new, and deleted on arrival
    ]


def test_backfill_of_new_records_writes_one_open_version_each_without_a_fold(duck):
    result = apply_batch(duck, SPEC, build_batch(SPEC, _backfill(0, 5)))
    assert (result.inserted, result.history_rows, result.records) == (5, 5, 5)
    assert duck.query("SELECT COUNT(*) FROM sfdc_tmp_class WHERE NOT is_new")[0][0] == 0
    history = read_history(duck)
    assert [(r["name"], r["is_current"], r["valid_to"]) for r in history] == [
        (f"Deal {i}", True, None) for i in range(5)
    ]
    assert {k: v["name"] for k, v in read_current(duck).items()} == {
        f"006{i:015d}": f"Deal {i}" for i in range(5)
    }


def test_batch_mixing_new_and_existing_records_counts_each_kind(duck):
    apply_batch(duck, SPEC, build_batch(SPEC, _backfill(0, 2)))
    existing = f"006{0:015d}"
    result = apply_batch(duck, SPEC, build_batch(SPEC, _mixed()))
    assert (result.inserted, result.updated, result.deleted) == (4, 1, 1)
    assert result.history_rows == 5
    current = read_current(duck)
    assert current[existing]["amount"] == Decimal("9")
    assert current[f"006{20:015d}"]["is_deleted"] is True
    assert len(current) == 6


def test_batch_above_chunk_rows_is_applied_in_chunks_of_whole_records(duck, monkeypatch):
    monkeypatch.setattr(apply_mod, "CHUNK_ROWS", 2)
    rid = f"006{50:015d}"
    rows = [
        *_backfill(0, 4),
        cdc("CREATE", 1, rid, 1, values=FULL),
        cdc("UPDATE", 2, rid, 2, values={"Name": "Two"}, changed_fields=["Name"]),
        cdc("UPDATE", 3, rid, 3, values={"Name": "Three"}, changed_fields=["Name"]),
    ]
    result = apply_batch(duck, SPEC, build_batch(SPEC, rows))
    assert (result.changes, result.applied, result.records) == (7, 7, 5)
    logged = [r[0] for r in duck.query("SELECT batch_id FROM sfdc_meta.load_log")]
    # Up to 4 chunks of about 2 rows (split by a hash of the record id: some may be empty).
    assert 1 < len(logged) <= 4
    assert all(b.startswith(result.batch_id + ".c") for b in logged)
    assert read_current(duck)[rid]["name"] == "Three"
    assert [r["name"] for r in read_history(duck) if r["id"] == rid] == ["Acme", "Two", "Three"]
    again = apply_batch(duck, SPEC, build_batch(SPEC, rows))
    assert (again.raw_inserted, again.applied) == (0, 0)


class _CrashOnSecondLog:
    """Delegates to a warehouse; crashes on the second load_log insert (chunk 2's commit)."""

    def __init__(self, inner) -> None:
        self.inner, self.logs = inner, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def execute(self, sql: str, params=None) -> int:
        if sql.startswith('INSERT INTO "sfdc_meta"."load_log"'):
            self.logs += 1
            if self.logs == 2:
                raise Crash("chunk 2")
        return self.inner.execute(sql, params)


def test_crash_between_chunks_keeps_the_committed_ones_and_rerun_converges(monkeypatch):
    monkeypatch.setattr(apply_mod, "CHUNK_ROWS", 2)
    batch = build_batch(SPEC, _backfill(0, 6))
    clean = fresh_duckdb()
    apply_batch(clean, SPEC, batch)
    wh = fresh_duckdb()
    with pytest.raises(Crash):
        apply_batch(_CrashOnSecondLog(wh), SPEC, batch)
    assert len(read_current(wh)) == 2  # the first chunk committed, the second rolled back
    rerun = apply_batch(wh, SPEC, batch)
    assert rerun.applied == 4  # the committed chunk is not applied again
    assert read_current(wh) == read_current(clean)
    assert read_history(wh) == read_history(clean)


def test_batch_id_is_the_hash_of_its_sorted_change_ids_for_arrow_and_polars():
    batch = build_batch(SPEC, [*_backfill(0, 3), *_backfill(0, 1)])
    ids = sorted(set(batch.column("change_id").to_pylist()))
    expected = "b" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:31]
    assert default_batch_id(batch) == expected
    assert apply_mod._prepare(SPEC, pl.from_arrow(batch), None).batch_id == expected


def test_snowflake_sql_takes_the_same_new_record_path_and_chunks(monkeypatch):
    monkeypatch.setattr(apply_mod, "CHUNK_ROWS", 2)
    batches = [_backfill(0, 3), _mixed()]
    duck = fresh_duckdb()
    for rows in batches:
        apply_batch(duck, SPEC, build_batch(SPEC, rows))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fakesnow's Arrow-copy notice
        with fakesnow.patch():
            # Not "SFDC": fakesnow cannot tell database SFDC from schema SFDC apart.
            wh = SnowflakeWarehouse(
                account="fake", user="fake", password="snow", database="SFDCBACKFILL"
            )
            registry.sync_schema(wh, SPEC)
            results = [apply_batch(wh, SPEC, build_batch(SPEC, rows)) for rows in batches]
            snow = read_current(wh), read_history(wh)
    assert [r.inserted for r in results] == [3, 4]
    assert snow == (read_current(duck), read_history(duck))


def test_a_big_write_checkpoints_the_duckdb_file_and_a_small_one_does_not(tmp_path, monkeypatch):
    # Rows of a commit below a row group wait in memory and the WAL for a checkpoint.
    monkeypatch.setattr(apply_mod, "CHECKPOINT_ROWS", 6)
    monkeypatch.setattr(apply_mod, "CHECKPOINT_WAL_BYTES", 1)
    path = str(tmp_path / "w.duckdb")
    wal = tmp_path / "w.duckdb.wal"
    wh = fresh_duckdb(path)
    wh.execute("CHECKPOINT")
    apply_batch(wh, SPEC, build_batch(SPEC, _backfill(0, 1)))  # 3 rows written
    assert wal.exists() and wal.stat().st_size > 0
    apply_batch(wh, SPEC, build_batch(SPEC, _backfill(1, 2)))  # 6 rows written
    assert not wal.exists() or wal.stat().st_size == 0
    assert apply_mod.append_raw(wh, SPEC, build_batch(SPEC, _backfill(3, 5))) == 5
    assert wal.exists() and wal.stat().st_size > 0
    assert apply_mod.append_raw(wh, SPEC, build_batch(SPEC, _backfill(8, 6))) == 6
    assert not wal.exists() or wal.stat().st_size == 0
    wh.close()


def test_arrow_scanned_and_loaded_batches_alternate_and_a_failed_one_leaves_no_view(duck):
    # Distinct change ids: DuckDB scans the chunk in place; duplicates: loaded and deduped.
    unique = build_batch(SPEC, _backfill(0, 2))
    duplicated = build_batch(SPEC, [*_backfill(2, 2), *_backfill(2, 1)])
    crash = mock.patch.object(apply_mod, "_after_raw_append", side_effect=Crash("raw"))
    with crash, pytest.raises(Crash):
        apply_batch(duck, SPEC, unique)
    assert not duck.query("SELECT view_name FROM duckdb_views() WHERE view_name = 'sfdc_tmp_batch'")
    assert apply_batch(duck, SPEC, unique).applied == 2  # the rerun applies what raw took
    assert apply_batch(duck, SPEC, duplicated).applied == 2
    assert apply_batch(duck, SPEC, build_batch(SPEC, _backfill(4, 1))).applied == 1
    assert sorted(read_current(duck)) == [f"006{i:015d}" for i in range(5)]
    assert len(read_history(duck)) == 5
