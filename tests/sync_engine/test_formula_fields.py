"""Formula fields (issue 10): no change event sets them; reads and formula refreshes do."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_engine import changes as ch
from sync_engine.apply import apply_batch
from sync_engine.reference_fold import fold
from sync_engine.spec import FieldSpec, ObjectSpec
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import read_current, read_history

SPEC = ObjectSpec(
    "Opportunity",
    (
        FieldSpec("Amount", "currency", 2),
        FieldSpec("SystemModstamp", "datetime"),
        FieldSpec("Account_Region__c", "string", calculated=True),
    ),
)
RID = "006000000000001AAA"
T0 = dt.datetime(2024, 5, 1, 12, 0, 0)


def _create(ms: int, amount: str, region: str | None = None) -> dict:
    return ch.cdc_change(
        SPEC,
        event_uuid=f"e-{ms}",
        record_id=RID,
        change_type="CREATE",
        commit_ms=ms,
        values={"Amount": Decimal(amount), "Account_Region__c": region},
    )


def _snapshot(at: dt.datetime, read: dt.datetime, amount: str, region: str) -> dict:
    return ch.snapshot_change(
        SPEC,
        record_id=RID,
        values={"Amount": Decimal(amount), "SystemModstamp": at, "Account_Region__c": region},
        system_modstamp=at,
        read_started_at=read,
    )


def test_describe_marks_calculated_fields_and_equality_ignores_the_flag():
    spec = ObjectSpec.from_describe(
        {
            "name": "Opportunity",
            "fields": [
                {"name": "Amount", "type": "currency", "scale": 2},
                {"name": "ExpectedRevenue", "type": "currency", "scale": 2, "calculated": True},
            ],
        }
    )
    assert spec.calculated_fields == ("ExpectedRevenue",)
    # The schema registry rebuilds specs without the flag; they must still compare equal.
    assert spec == ObjectSpec.of(
        "Opportunity", [("Amount", "currency", 2), ("ExpectedRevenue", "currency", 2)]
    )


def test_a_cdc_create_or_update_never_sets_a_formula_field():
    ms = ch.ms_of(T0)
    create = _create(ms, "10.00", region="EMEA")
    assert "Account_Region__c" not in create["set_fields"]
    update = ch.cdc_change(
        SPEC,
        event_uuid="e-2",
        record_id=RID,
        change_type="UPDATE",
        commit_ms=ms + 5000,
        values={"Account_Region__c": None},
        changed_fields=[],
        nulled_fields=["Account_Region__c"],
    )
    assert "Account_Region__c" not in update["set_fields"]


def test_an_event_after_a_read_keeps_the_formula_value_the_read_brought():
    # Regression for issue 10: CDC events carry formulas as null; were they to set the
    # field, every event would blank a formula the last read had filled.
    first = _snapshot(T0, T0 + dt.timedelta(seconds=1), "10.00", "EMEA")
    later = ch.cdc_change(
        SPEC,
        event_uuid="e-3",
        record_id=RID,
        change_type="UPDATE",
        commit_ms=ch.ms_of(T0) + 60_000,
        values={"Amount": Decimal("20.00"), "Account_Region__c": None},
        changed_fields=["Amount"],
    )
    current = fold(SPEC, [first, later]).current[RID]
    assert current["amount"] == Decimal("20.00")
    assert current["account_region__c"] == "EMEA"


def test_a_later_formula_refresh_beats_an_earlier_read_of_the_unchanged_record():
    snapshot = _snapshot(T0, T0 + dt.timedelta(hours=1), "10.00", "EMEA")
    refresh = ch.formula_change(
        SPEC,
        record_id=RID,
        values={"Account_Region__c": "APAC"},
        read_started_at=T0 + dt.timedelta(hours=2),
    )
    assert refresh["set_fields"] == ["Account_Region__c"]
    assert refresh["version"] > snapshot["version"]
    result = fold(SPEC, [refresh, snapshot])
    assert result.current[RID]["account_region__c"] == "APAC"
    assert result.current[RID]["amount"] == Decimal("10.00")
    # A real change of the state: one more scd2 version, valid from the refresh's read.
    assert [h["account_region__c"] for h in result.history] == ["EMEA", "APAC"]


def test_a_refresh_with_the_value_current_holds_opens_no_version():
    snapshot = _snapshot(T0, T0 + dt.timedelta(seconds=5), "10.00", "EMEA")
    refresh = ch.formula_change(
        SPEC,
        record_id=RID,
        values={"Account_Region__c": "EMEA"},
        read_started_at=T0 + dt.timedelta(hours=2),
    )
    wh = fresh_duckdb(spec=SPEC)
    apply_batch(wh, SPEC, ch.build_batch(SPEC, [snapshot]))
    apply_batch(wh, SPEC, ch.build_batch(SPEC, [refresh]))
    assert len(read_history(wh, SPEC)) == 1
    assert read_current(wh, SPEC)[RID]["account_region__c"] == "EMEA"
    wh.close()


def test_a_formula_refresh_must_name_only_formula_fields():
    with pytest.raises(ValueError, match="formula fields"):
        ch.formula_change(
            SPEC, record_id=RID, values={"Amount": Decimal("1.00")}, read_started_at=T0
        )
    with pytest.raises(ValueError, match="formula fields"):
        ch.formula_change(SPEC, record_id=RID, values={}, read_started_at=T0)


def test_a_rest_and_a_bulk_read_of_the_same_state_are_two_observations_in_any_order():
    # Regression (found by test_chunked_batches_mixing_new_and_existing_records_equal_the_
    # reference_fold): both reads had one change id, so raw kept whichever arrived first
    # and current's _source depended on arrival order. The re-read after CDC makes this
    # common: a REST re-read, then a Bulk re-backfill of the unchanged record.
    reads = [
        ch.snapshot_change(
            SPEC,
            record_id=RID,
            values={"Amount": Decimal("5.00"), "SystemModstamp": T0},
            system_modstamp=T0,
            read_started_at=T0 + dt.timedelta(seconds=30),
            source=source,
        )
        for source in ("rest", "bulk")
    ]
    assert reads[0]["change_id"] != reads[1]["change_id"]
    tables = []
    for order in (reads, reads[::-1]):
        wh = fresh_duckdb(spec=SPEC)
        for read in order:
            apply_batch(wh, SPEC, ch.build_batch(SPEC, [read]))
        tables.append((read_current(wh, SPEC), read_history(wh, SPEC)))
        wh.close()
    assert tables[0] == tables[1]
    assert len(tables[0][1]) == 1  # the same state: one version


@settings(max_examples=25, deadline=None)
@given(
    record=st.integers(0, 10**6),
    cents=st.integers(0, 10**9),
    read_after_ms=st.integers(0, 60_000),
)
def test_a_bulk_re_read_of_what_rest_saw_leaves_scd2_as_it_was(record, cents, read_after_ms):
    # Regression: with the versions' tie decided by the ids' hashes, the Bulk read won for
    # about half the records, so a 30-day re-backfill after live traffic rewrote
    # _version/_source of those scd2 versions (test_re_backfill_of_a_30_day_range_after_
    # live_traffic_changes_nothing). REST ranks first at one version ms and one state.
    rid = f"006{record:015d}"
    reads = {
        source: ch.snapshot_change(
            SPEC,
            record_id=rid,
            values={"Amount": Decimal(cents) / 100, "SystemModstamp": T0},
            system_modstamp=T0,
            read_started_at=T0 + dt.timedelta(milliseconds=read_after_ms),
            source=source,
        )
        for source in ("rest", "bulk")
    }
    assert reads["rest"]["version"] < reads["bulk"]["version"]
    histories = []
    for order in (["rest"], ["rest", "bulk"], ["bulk", "rest"]):
        wh = fresh_duckdb(spec=SPEC)
        for source in order:
            apply_batch(wh, SPEC, ch.build_batch(SPEC, [reads[source]]))
        histories.append(read_history(wh, SPEC))
        wh.close()
    assert histories[0] == histories[1] == histories[2]
    assert [row["_source"] for row in histories[0]] == ["rest"]
