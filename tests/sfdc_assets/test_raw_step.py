"""The raw step's plain parts (sfdc_assets/raw.py, incomplete.py): no Dagster, no I/O."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
import pytest

from resources.landing import Manifest
from sfdc_assets.batches import PartRef
from sfdc_assets.checks import BATCH_REJECTED, Validation
from sfdc_assets.incomplete import carries_partial_changes, partial_only, repair_tag
from sfdc_assets.raw import (
    BACKFILL,
    MICRO_BATCHES,
    REBACKFILL,
    PartOutcome,
    RawOutcome,
    RawRunConfig,
    accepts,
    ledger_days,
    plan_raw,
    replay_range,
    whole_batch,
)

UTC = dt.UTC
WINDOW = (dt.datetime(2025, 1, 14, tzinfo=UTC), dt.datetime(2025, 1, 16, tzinfo=UTC))
NOW = dt.datetime(2025, 1, 15, 12, 30, 45, 123456, tzinfo=UTC)
OPP_A = "006000000000001AAA"
OPP_B = "006000000000002AAA"


def manifest(kind: str = "cdc", **meta: str) -> Manifest:
    return Manifest(kind, "Opportunity", "2025-01-15", "b1", (), 1, 0, meta)


def test_no_run_config_plans_a_bulk_read_of_exactly_the_partition_window() -> None:
    plan = plan_raw("Opportunity", RawRunConfig(), WINDOW, 300, NOW)

    assert plan.mode == BACKFILL
    assert plan.read == WINDOW
    assert plan.lag == dt.timedelta(seconds=300)
    assert not plan.rereads_incomplete and plan.batches == ()


def test_since_plans_an_open_ended_re_backfill_from_that_second() -> None:
    run = RawRunConfig(since="2025-01-15T10:00:00.900+01:00", lag_seconds=0)
    plan = plan_raw("Opportunity", run, WINDOW, 300, NOW)

    assert plan.mode == REBACKFILL
    assert plan.read == (
        dt.datetime(2025, 1, 15, 9, 0, 0, tzinfo=UTC),
        dt.datetime(2025, 1, 17, 12, 30, 45, tzinfo=UTC),
    )
    assert plan.lag == dt.timedelta(0)


def test_landing_batches_plan_the_given_micro_batches_and_the_re_read_of_incomplete_ones() -> None:
    run = RawRunConfig(landing_batches=["cdc/Opportunity/2025-01-15/cdc-x-01-0f"])
    plan = plan_raw("Opportunity", run, WINDOW, 300, NOW, ["Forecast__c"])

    assert plan.mode == MICRO_BATCHES
    assert plan.read is None
    assert plan.batches == (PartRef("cdc", "Opportunity", dt.date(2025, 1, 15), "cdc-x-01-0f", 0),)
    assert plan.rereads_incomplete
    assert plan.fill_fields == ("Forecast__c",)
    assert plan.fill_day == dt.date(2025, 1, 14)


def test_a_landing_batch_of_another_object_is_refused_with_both_named() -> None:
    run = RawRunConfig(landing_batches=["cdc/Account/2025-01-15/cdc-x-01-0f"])

    with pytest.raises(ValueError, match=r"cdc-x-01-0f is not a Opportunity"):
        plan_raw("Opportunity", run, WINDOW, 300, NOW)


def test_a_part_is_accepted_only_without_schema_errors_and_within_the_threshold() -> None:
    assert accepts([], 5.0, 5.0)
    assert not accepts([], 5.1, 5.0)
    assert not accepts(["column Amount missing"], 0.0, 5.0)


def test_the_outcome_sums_parts_and_keeps_the_rejected_ones_with_their_schema_errors() -> None:
    outcome = RawOutcome()
    outcome.add(PartOutcome("a#0", True, 10, 9, 1, 10.0, {"bad id": 1}))
    outcome.add(PartOutcome("b#0", False, 4, 0, 4, 50.0, {"bad id": 2}, ("no Id column",)))

    assert outcome.totals() == {
        "parts": 2,
        "rows_landed": 14,
        "rows_appended": 9,
        "rows_quarantined": 5,
    }
    assert outcome.reasons == {"bad id": 3}
    assert outcome.rejected == ["b#0"] and outcome.schema_errors == ["no Id column"]
    assert outcome.worst_pct == 50.0
    assert not outcome.passed


def test_ledger_days_cover_the_changes_or_the_landing_day_and_fills_the_run_s_day() -> None:
    day = dt.date(2025, 1, 15)
    changes = [dt.date(2025, 1, 13), dt.date(2025, 1, 15), dt.date(2025, 1, 14)]

    assert ledger_days(changes, day, False, dt.date(2020, 1, 1)) == (
        dt.date(2025, 1, 13),
        dt.date(2025, 1, 15),
    )
    assert ledger_days([], day, False, dt.date(2020, 1, 1)) == (day, day)
    assert ledger_days(changes, day, True, dt.date(2020, 1, 1)) == (
        dt.date(2020, 1, 1),
        dt.date(2020, 1, 1),
    )


def test_the_replay_range_spans_every_cdc_batch_and_ignores_the_others() -> None:
    batches = [
        manifest(first_replay="0005", last_replay="0009"),
        manifest("backfill", source="bulk"),
        manifest(first_replay="0001", last_replay="0004"),
    ]

    assert replay_range(batches) == ("0001", "0009")
    assert replay_range([manifest("backfill")]) is None


def test_a_rejected_batch_quarantines_every_row_with_the_reason_for_the_healthy_ones() -> None:
    changes = pa.table(
        {"change_id": ["c1", "c2"], "record_id": [OPP_A, OPP_B], "payload": ["{}", "{}"]}
    )
    bad = pl.DataFrame(
        {"change_id": ["c1"], "record_id": [OPP_A], "reason": ["Id format"], "payload": ["{}"]}
    )
    checked = Validation(rows=2, good=changes.slice(1), quarantine=bad)

    rows = whole_batch(changes, checked, 50.0, 5.0)

    assert rows["change_id"].to_list() == ["c1", "c2"]
    assert rows["reason"][0] == "Id format"
    assert rows["reason"][1].startswith(BATCH_REJECTED)
    assert "50.0%" in rows["reason"][1] and "threshold 5.0%" in rows["reason"][1]


def test_only_records_changed_partially_and_never_whole_in_the_batch_are_re_read() -> None:
    frames = [
        pl.DataFrame({"change_type": ["UPDATE", "UPDATE"], "record_id": [OPP_A, OPP_B]}),
        pl.DataFrame({"change_type": ["CREATE", "DELETE"], "record_id": [OPP_B, "006*"]}),
    ]

    assert partial_only(frames) == [OPP_A]


def test_records_the_run_re_reads_whole_by_rest_are_not_looked_up_again() -> None:
    # Regression: with re-read after CDC every changed record rode in the run whole, yet
    # was looked up in raw (a read of nearly all of raw per CDC run) and read again.
    events = [pl.DataFrame({"change_type": ["UPDATE", "UPDATE"], "record_id": [OPP_A, OPP_B]})]
    rereads = [pl.DataFrame({"change_type": ["SNAPSHOT", "DELETE"], "record_id": [OPP_A, OPP_B]})]

    assert partial_only(events, rereads) == [OPP_B]  # a re-read delete is not an image


def test_bulk_parts_and_rest_re_reads_are_whole_and_cdc_batches_may_be_partial() -> None:
    assert carries_partial_changes(manifest(source="cdc"))
    assert not carries_partial_changes(manifest(source="rest"))
    assert not carries_partial_changes(manifest("backfill"))


def test_a_re_read_is_named_by_its_ids_whatever_their_order() -> None:
    assert repair_tag([OPP_A, OPP_B]) == repair_tag([OPP_B, OPP_A])
    assert repair_tag([OPP_A]) != repair_tag([OPP_B])
