"""apply_batch on DuckDB: the behaviours of DESIGN §4, one at a time."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from sync_engine import apply as apply_mod
from sync_engine import changes as ch
from sync_engine.apply import ApplyResult, WritePlan, append_raw, apply_batch, write_statements
from sync_engine.changes import build_batch
from sync_engine.dialect import DUCKDB
from sync_engine.warehouse import SchemaNames
from tests.sync_engine.histories import (
    FULL,
    RECORD_IDS,
    SPEC,
    cdc,
    read_current,
    read_history,
    sample_history,
    snapshot,
)

A = RECORD_IDS[0]


def _apply(wh, *rows):
    return apply_batch(wh, SPEC, build_batch(SPEC, rows))


def test_late_update_does_not_regress_amount(duck):
    _apply(duck, cdc("CREATE", 1, A, 0, values=FULL))
    _apply(
        duck,
        cdc("UPDATE", 3, A, 3, values={"Amount": Decimal("300.00")}, changed_fields=["Amount"]),
    )
    result = _apply(
        duck,
        cdc(
            "UPDATE",
            2,
            A,
            2,
            values={"Amount": Decimal("200.00"), "Name": "Late"},
            changed_fields=["Amount", "Name"],
        ),
    )
    current = read_current(duck)[A]
    assert current["amount"] == Decimal("300.00")
    assert current["name"] == "Late"  # the late change still wins the field nobody overwrote
    assert result.late == 1
    assert [(r["amount"], r["name"]) for r in read_history(duck)] == [
        (Decimal("100.00"), "Acme"),
        (Decimal("200.00"), "Late"),
        (Decimal("300.00"), "Late"),
    ]


def test_snapshot_beats_event_on_exact_tie(duck):
    # Modstamp second 0, read long after: version = second 0 + 999 ms, the event's ms too.
    event = cdc("UPDATE", 1, A, 0, 999, values={"Name": "Event"}, changed_fields=["Name"])
    snap = snapshot(A, 0, 5000, {**FULL, "Name": "Snapshot"})
    assert ch.version_ms(event["version"]) == ch.version_ms(snap["version"])
    _apply(duck, snap)
    _apply(duck, event)
    assert read_current(duck)[A]["name"] == "Snapshot"


def test_snapshot_version_is_clamped_into_its_modstamp_second():
    second = 1_700_000_000
    assert ch.snapshot_version_ms(second * 1000 - 5, second * 1000 + 10) == second * 1000
    assert ch.snapshot_version_ms(second * 1000 + 400, second * 1000) == second * 1000 + 399
    assert ch.snapshot_version_ms(second * 1000 + 9000, second * 1000) == second * 1000 + 999


def test_same_observation_always_gets_the_same_change_id():
    assert (
        cdc("UPDATE", 1, A, 0, changed_fields=["Name"])["change_id"]
        == cdc("UPDATE", 1, A, 0, changed_fields=["Name"])["change_id"]
    )
    # Re-reading an unchanged record after its modstamp second: same id (a re-backfill).
    assert snapshot(A, 0, 5000, FULL)["change_id"] == snapshot(A, 0, 9000, FULL)["change_id"]
    assert (
        snapshot(A, 0, 5000, FULL)["change_id"]
        != snapshot(A, 0, 5000, {**FULL, "Name": "Other"})["change_id"]
    )


def test_versions_order_events_by_commit_then_transaction_then_sequence():
    v = [cdc("UPDATE", n, A, s, ms)["version"] for n, s, ms in [(1, 0, 5), (2, 0, 6), (3, 1, 0)]]
    assert v == sorted(v)
    same_tx = [ch.event_version(1000, "tx", seq, None, "cid00000") for seq in (1, 2, 10)]
    assert same_tx == sorted(same_tx)


def test_explicit_null_in_update_clears_the_field(duck):
    _apply(duck, cdc("CREATE", 1, A, 0, values=FULL))
    _apply(duck, cdc("UPDATE", 2, A, 1, changed_fields=["CloseDate"], nulled_fields=["CloseDate"]))
    current = read_current(duck)[A]
    assert current["closedate"] is None
    assert current["name"] == "Acme"  # a partial update leaves other fields alone


def test_delete_closes_the_open_version_and_undelete_reopens(duck):
    _apply(duck, cdc("CREATE", 1, A, 0, values=FULL))
    result = _apply(duck, cdc("DELETE", 2, A, 1))
    assert result.deleted == 1
    assert read_current(duck)[A]["is_deleted"] is True
    _apply(duck, cdc("UNDELETE", 3, A, 2, values=FULL))
    rows = read_history(duck)
    assert [r["is_deleted"] for r in rows] == [False, True, False]
    assert [r["is_current"] for r in rows] == [False, False, True]
    assert rows[0]["valid_to"] == rows[1]["valid_from"] and rows[2]["valid_to"] is None
    assert read_current(duck)[A]["amount"] == Decimal("100.00")  # DELETE cleared no field


def test_noop_change_adds_no_history_row(duck):
    _apply(duck, cdc("CREATE", 1, A, 0, values=FULL))
    result = _apply(duck, snapshot(A, 3, 5000, FULL))
    assert result.noop == 1 and result.history_rows == 0
    assert len(read_history(duck)) == 1
    assert read_current(duck)[A]["_source"] == "bulk"  # the newest version is recorded


def test_replayed_batch_changes_nothing(duck):
    history = sample_history()
    _apply(duck, *history)
    before = (read_current(duck), read_history(duck))
    again = _apply(duck, *history, *history)
    assert again.raw_inserted == 0 and again.applied == 0
    assert (read_current(duck), read_history(duck)) == before
    assert duck.query('SELECT COUNT(*) FROM "sfdc_raw"."opportunity"')[0][0] == len(history)


def test_gap_event_is_kept_in_raw_but_not_applied(duck):
    result = _apply(duck, cdc("GAP_UPDATE", 1, A, 0))
    assert result.raw_inserted == 1 and result.records == 0
    assert read_current(duck) == {}


def test_raw_is_never_updated_or_deleted_by_the_code_path(duck):
    statements: list[str] = []
    execute = duck.execute

    def spy(sql, params=None):
        statements.append(sql)
        return execute(sql, params)

    object.__setattr__(duck, "execute", spy)
    history = sample_history()
    _apply(duck, *history[:4])
    _apply(duck, *history[4:], cdc("UPDATE", 50, A, 0, 1, changed_fields=["Name"]))  # late
    touching_raw = [s for s in statements if '"sfdc_raw"' in s.split(" SELECT ")[0]]
    assert touching_raw and all(s.startswith('INSERT INTO "sfdc_raw"') for s in touching_raw)


def test_polars_batches_are_accepted(duck):
    frame = pl.from_arrow(build_batch(SPEC, sample_history()))
    result = apply_batch(duck, SPEC, frame)
    assert result.inserted == 2


def test_counts_report_inserts_updates_and_late_records(duck):
    first = _apply(duck, *sample_history()[:2])
    assert (first.inserted, first.updated, first.records) == (1, 0, 1)
    second = _apply(duck, cdc("UPDATE", 9, A, 9, values={"Name": "X"}, changed_fields=["Name"]))
    assert (second.inserted, second.updated, second.late) == (0, 1, 0)
    logged = duck.query('SELECT COUNT(*) FROM "sfdc_meta"."load_log"')[0][0]
    assert logged == 2


def test_malformed_record_ids_are_refused_before_reaching_sql(duck):
    row = cdc("UPDATE", 1, A, 0, changed_fields=["Name"])
    row["record_id"] = "006') OR 1=1 --"
    with pytest.raises(ValueError, match="malformed record_id"):
        _apply(duck, row)
    assert duck.query('SELECT COUNT(*) FROM "sfdc_raw"."opportunity"')[0][0] == 0


def test_append_raw_lands_in_raw_only_until_apply_batch_merges_it(duck):
    batch = build_batch(SPEC, [cdc("CREATE", 1, A, 0, values=FULL)])
    assert append_raw(duck, SPEC, batch, batch_id="cdc-1") == 1
    assert append_raw(duck, SPEC, batch, batch_id="cdc-1") == 0  # idempotent
    assert read_current(duck) == {}
    assert read_history(duck) == []

    result = apply_batch(duck, SPEC, batch, batch_id="cdc-1")
    assert (result.raw_inserted, result.applied, result.inserted) == (0, 1, 1)
    assert read_current(duck)[A]["name"] == "Acme"
    raw_rows = duck.query(f"SELECT COUNT(*) FROM sfdc_raw.{SPEC.table}")[0][0]
    assert raw_rows == 1


NOW = dt.datetime(2024, 6, 1, 12)


def _write_targets(plan: WritePlan) -> list[str]:
    """The write transaction's statements, as their verb and table."""
    statements = write_statements(DUCKDB, SPEC, SchemaNames(), plan, ApplyResult("b1"), NOW)
    return [" ".join(sql.split(" (")[0].split()[:3]).replace(" USING", "") for sql in statements]


def test_an_all_new_chunk_writes_only_the_new_rows_and_the_log():
    plan = WritePlan(f"'{A}'", None, merge=False, new=True, close_by_index=False)
    assert _write_targets(plan) == [
        'INSERT INTO "sfdc_history"."opportunity"',
        'INSERT INTO "sfdc"."opportunity"',
        'INSERT INTO "sfdc_meta"."load_log"',
    ]


def test_a_late_chunk_rebuilds_scd2_before_replacing_current_rows():
    plan = WritePlan(f"'{A}'", f"'{A}'", merge=True, new=False, close_by_index=True)
    assert _write_targets(plan) == [
        'DELETE FROM "sfdc_history"."opportunity"',
        'UPDATE "sfdc_history"."opportunity" SET',
        'UPDATE "sfdc_history"."opportunity" SET',
        'INSERT INTO "sfdc_history"."opportunity"',
        'DELETE FROM "sfdc"."opportunity"',
        'INSERT INTO "sfdc"."opportunity"',
        'INSERT INTO "sfdc_meta"."load_log"',
    ]
    close = write_statements(DUCKDB, SPEC, SchemaNames(), plan, ApplyResult("b1"), NOW)[2]
    assert "CASE WHEN" in close  # the index-driven close


def test_classify_finds_late_and_new_records_and_inlines_their_ids_on_duckdb(duck):
    other = RECORD_IDS[1]
    _apply(duck, cdc("CREATE", 1, A, 5, values=FULL))
    late = cdc("UPDATE", 2, A, 1, values={"Amount": Decimal("1")}, changed_fields=["Amount"])
    batch = build_batch(SPEC, [late, cdc("CREATE", 3, other, 2, values=FULL)])
    with apply_mod._staged_chunk(duck, SPEC, batch, "b-test", True, NOW) as staged:
        assert apply_mod._append_and_select(duck, SPEC, staged, True) == 2
    classified = apply_mod._classify(duck, SPEC)
    assert classified is not None
    assert (classified.records, classified.applied, classified.late, classified.new) == (2, 2, 1, 1)
    assert not classified.all_new and classified.literal_ids
    assert classified.late_filter == f"'{A}'"
    assert sorted(classified.id_filter.split(", ")) == sorted([f"'{A}'", f"'{other}'"])
    plan = apply_mod._plan(duck, SPEC, classified)
    assert (plan.merge, plan.new, plan.close_by_index) == (True, True, False)
    assert list(read_current(duck)) == [A]  # classify and plan write no table


def test_a_chunk_over_the_list_limit_keeps_its_ids_inlined_in_lists_on_a_large_table(
    duck, monkeypatch
):
    # LITERAL_ID_LIMIT lowered to 1: three touched records on a table of >= 10 rows per id
    # are three lists (index lookups), not the touched-id subquery (a whole-table join).
    monkeypatch.setattr(apply_mod, "LITERAL_ID_LIMIT", 1)
    monkeypatch.setattr(apply_mod, "LIST_MIN_ROWS_PER_ID", 1)
    ids = list(RECORD_IDS)
    _apply(duck, *(cdc("CREATE", i, rid, 1, values=FULL) for i, rid in enumerate(ids)))
    updates = [
        cdc("UPDATE", 10 + i, rid, 5, values={"Amount": Decimal(i)}, changed_fields=["Amount"])
        for i, rid in enumerate(ids)
    ]
    with apply_mod._staged_chunk(
        duck, SPEC, build_batch(SPEC, updates), "b-lists", True, NOW
    ) as staged:
        apply_mod._append_and_select(duck, SPEC, staged, True)
    classified = apply_mod._classify(duck, SPEC)
    assert classified is not None and classified.literal_ids
    assert sorted(classified.id_chunks) == sorted(f"'{rid}'" for rid in ids)
    assert "SELECT" in classified.id_filter  # several lists: folds read the subquery
    assert duck.query("SELECT COUNT(*) FROM sfdc_tmp_old")[0][0] == 3  # every list fetched
    plan = apply_mod._plan(duck, SPEC, classified)
    assert plan.close_by_index  # a scan per list would read scd2 once per list
    out = write_statements(DUCKDB, SPEC, SchemaNames(), plan, ApplyResult("b1"), NOW)
    assert sum(s.startswith('DELETE FROM "sfdc"."opportunity"') for s in out) == 3
    assert sum(s.startswith('UPDATE "sfdc_history"."opportunity"') for s in out) == 3

    # Below LIST_MIN_ROWS_PER_ID rows per id (a chunk comparable to the table): the join.
    monkeypatch.setattr(apply_mod, "LIST_MIN_ROWS_PER_ID", 10)
    assert not apply_mod._classify(duck, SPEC).literal_ids


@pytest.mark.parametrize("overlapping", [False, True])
def test_a_large_chunk_beyond_every_current_id_skips_the_current_lookups(
    duck, monkeypatch, overlapping
):
    # LITERAL_ID_LIMIT lowered to 1 makes a two-record chunk "large". Records b and c lie
    # beyond a, the one current row: the probes prove them new and current is not read by
    # id. With a in the chunk a probe finds it and the lookups run as before.
    monkeypatch.setattr(apply_mod, "LITERAL_ID_LIMIT", 1)
    monkeypatch.setattr(apply_mod, "LIST_MIN_ROWS_PER_ID", 0)
    probed = []
    real = apply_mod.st.no_current_rows
    monkeypatch.setattr(apply_mod.st, "no_current_rows", lambda *a: probed.append(1) or real(*a))
    a, b, c = RECORD_IDS
    _apply(duck, cdc("CREATE", 0, a, 1, values=FULL))
    first = a if overlapping else b
    result = _apply(
        duck,
        cdc("UPDATE", 1, first, 2, values={"Amount": Decimal(7)}, changed_fields=["Amount"])
        if overlapping
        else cdc("CREATE", 1, first, 2, values=FULL),
        cdc("CREATE", 2, c, 2, values=FULL),
    )
    assert probed == ([] if overlapping else [1])
    assert result.inserted == (1 if overlapping else 2)
    current = read_current(duck)
    assert sorted(current) == ([a, c] if overlapping else [a, b, c])
    if overlapping:
        assert current[a]["amount"] == 7
