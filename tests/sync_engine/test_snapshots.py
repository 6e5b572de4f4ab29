"""The vectorised snapshot builder gives exactly the batch of the per-row definition."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources.salesforce.to_changes import _exact_rows
from sync_engine.changes import EPOCH, build_batch, fill_change, snapshot_change
from sync_engine.snapshots import fill_changes, snapshot_changes
from sync_engine.spec import ObjectSpec

OBSERVED = "_observed_at_ms"
SPEC = ObjectSpec.of(
    "Thing__c",
    [
        ("Name", "string"),
        ("Stage__c", "picklist"),
        ("AccountId", "reference"),
        ("Amount", "currency", 2),
        ("Probability", "percent", 0),
        ("Ratio__c", "double", 3),
        ("Seats__c", "int"),
        ("IsWon", "boolean"),
        ("CloseDate", "date"),
        ("LastActivity__c", "datetime"),
        ("SystemModstamp", "datetime"),
        ("NotLanded__c", "string"),  # in the spec, not in the frame: null, hashed as null
    ],
)
UTC_MS = pl.Datetime("ms", "UTC")

# Text as Salesforce could hold it: any character but lone surrogates (not UTF-8).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ['a "quoted" \\ value', "tab\there", "line\nbreak", "\x7f", "é", "日本", "😀", ""]
)
STAMPS = st.datetimes(min_value=dt.datetime(1999, 1, 1), max_value=dt.datetime(2040, 1, 1))


def _ms(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@st.composite
def frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 12))

    def column(strategy: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(st.none() | strategy, min_size=n, max_size=n))

    stamps = [_ms(s) for s in draw(st.lists(STAMPS, min_size=n, max_size=n))]
    lag = draw(st.lists(st.integers(-2_000, 5_000), min_size=n, max_size=n))
    observed = [
        (s - EPOCH) // dt.timedelta(milliseconds=1) + d for s, d in zip(stamps, lag, strict=True)
    ]
    decimals = st.decimals(-(10**9), 10**9, places=2, allow_nan=False)
    floats = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from(
        [0.5, 1.5, 12.5, 0.125, 0.0, -0.0, -0.4]
    )
    data = {
        "Id": [f"a0X{i:015d}" for i in range(n)],
        "Name": column(TEXT),
        "Stage__c": column(st.sampled_from(["Prospecting", "Closed Won"])),
        "AccountId": column(st.just("001000000000000AAA")),
        "Amount": column(decimals),
        "Probability": column(floats),
        "Ratio__c": column(floats),
        "Seats__c": column(st.integers(-(2**40), 2**40)),
        "IsWon": column(st.booleans()),
        "CloseDate": column(st.dates(dt.date(1950, 1, 1), dt.date(2100, 1, 1))),
        "LastActivity__c": [None if v is None else _ms(v) for v in column(STAMPS)],
        "SystemModstamp": stamps,
        "IsDeleted": column(st.booleans()),
        OBSERVED: observed,
        "_job_id": column(st.just("750000000000001AAA")),
        "Extra__c": column(floats),  # landed but not (yet) in the spec: payload only
    }
    schema = {
        "Id": pl.String,
        "Name": pl.String,
        "Stage__c": pl.String,
        "AccountId": pl.String,
        "Amount": pl.Decimal(38, 2),
        "Probability": pl.Float64,
        "Ratio__c": pl.Float64,
        "Seats__c": pl.Int64,
        "IsWon": pl.Boolean,
        "CloseDate": pl.Date,
        "LastActivity__c": pl.Datetime("ms"),
        "SystemModstamp": pl.Datetime("ms"),
        "IsDeleted": pl.Boolean,
        OBSERVED: pl.Int64,
        "_job_id": pl.String,
        "Extra__c": pl.Float64,
    }
    frame = pl.DataFrame(data, schema=schema)
    # As landed from Bulk CSV: datetimes are UTC-aware.
    return frame.with_columns(
        pl.col("LastActivity__c", "SystemModstamp").dt.replace_time_zone("UTC")
    )


def by_row(spec: ObjectSpec, frame: pl.DataFrame, source: str = "bulk") -> pa.Table:
    """The definition: one `snapshot_change` per row (what `snapshot_batch` did before)."""
    rows = [
        snapshot_change(
            spec,
            record_id=rec["Id"],
            values=rec,
            system_modstamp=rec["SystemModstamp"],
            read_started_at=EPOCH + dt.timedelta(milliseconds=int(rec[OBSERVED])),
            is_deleted=bool(rec.get("IsDeleted")),
            source=source,
        )
        for rec in _exact_rows(spec, frame)
    ]
    return build_batch(spec, rows, "b1")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames(), source=st.sampled_from(["bulk", "rest"]))
def test_the_vectorised_batch_equals_the_per_row_definition(
    frame: pl.DataFrame, source: str
) -> None:
    want = by_row(SPEC, frame, source)
    got = snapshot_changes(SPEC, frame, observed_ms=OBSERVED, source=source, batch_id="b1")
    assert got.schema == want.schema
    for name in want.column_names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


FILLABLE = ["Name", "Amount", "Probability", "CloseDate", "LastActivity__c", "NotLanded__c"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames(), data=st.data())
def test_the_vectorised_fill_equals_the_per_row_definition(
    frame: pl.DataFrame, data: st.DataObject
) -> None:
    fields = data.draw(st.lists(st.sampled_from(FILLABLE), min_size=1, max_size=4, unique=True))
    landed = frame.select(
        ["Id", "SystemModstamp", OBSERVED, *(f for f in fields if f in frame.columns)]
    )
    rows = [
        fill_change(
            SPEC,
            record_id=rec["Id"],
            fields=fields,
            values=rec,
            read_started_at=EPOCH + dt.timedelta(milliseconds=int(rec[OBSERVED])),
            system_modstamp=rec.get("SystemModstamp"),
        )
        for rec in _exact_rows(SPEC, landed)
    ]
    want = build_batch(SPEC, rows, "b1")
    got = fill_changes(SPEC, landed, fields, observed_ms=OBSERVED, batch_id="b1")
    assert got.schema == want.schema
    for name in want.column_names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def test_a_fill_of_unknown_fields_is_refused() -> None:
    frame = pl.DataFrame({"Id": ["a0X000000000000001"], OBSERVED: [1]})
    with pytest.raises(ValueError, match="known fields"):
        fill_changes(SPEC, frame, ["Nope__c"], observed_ms=OBSERVED)


def test_decimal_ties_round_half_even_as_the_definition_does() -> None:
    frame = pl.DataFrame(
        {
            "Id": ["a0X000000000000001", "a0X000000000000002"],
            "Probability": [12.5, 13.5],
            "SystemModstamp": [dt.datetime(2024, 1, 1, 12)] * 2,
            OBSERVED: [1_704_110_400_500] * 2,
        }
    ).with_columns(pl.col("SystemModstamp").dt.replace_time_zone("UTC"))
    spec = ObjectSpec.of(
        "Thing__c", [("Probability", "percent", 0), ("SystemModstamp", "datetime")]
    )
    got = snapshot_changes(spec, frame, observed_ms=OBSERVED)
    assert got.column("probability").to_pylist() == [Decimal(12), Decimal(14)]


def test_rows_without_a_systemmodstamp_are_refused_with_what_to_do() -> None:
    frame = pl.DataFrame(
        {"Id": ["a0X000000000000001"], "SystemModstamp": [None], OBSERVED: [1]},
        schema={"Id": pl.String, "SystemModstamp": UTC_MS, OBSERVED: pl.Int64},
    )
    spec = ObjectSpec.of("Thing__c", [("SystemModstamp", "datetime")])
    with pytest.raises(ValueError, match="SystemModstamp"):
        snapshot_changes(spec, frame, observed_ms=OBSERVED)
    with pytest.raises(ValueError, match="lack columns"):
        snapshot_changes(spec, frame.drop(OBSERVED), observed_ms=OBSERVED)


def test_an_empty_frame_gives_an_empty_batch_of_the_schema() -> None:
    frame = pl.DataFrame(schema={"Id": pl.String, "SystemModstamp": UTC_MS, OBSERVED: pl.Int64})
    got = snapshot_changes(SPEC, frame, observed_ms=OBSERVED)
    assert got.num_rows == 0
    assert got.schema == by_row(SPEC, frame).schema
