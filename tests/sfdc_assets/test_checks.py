"""The Pandera batch schemas: row-level failures are quarantined with reasons."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from sfdc_assets.checks import ObjectRules, validate_batch
from sync_engine.changes import build_batch, snapshot_change
from sync_engine.spec import ObjectSpec

SPEC = ObjectSpec.of(
    "Opportunity", [("Name", "string"), ("AccountId", "reference"), ("SystemModstamp", "datetime")]
)
RULES = ObjectRules(
    "Opportunity",
    key_prefix="006",
    required=("name",),
    references=("accountid",),
    timestamps=("systemmodstamp",),
)
NOW = dt.datetime(2026, 1, 1)


def _batch(*rows: dict) -> pa.Table:
    out = []
    for i, values in enumerate(rows):
        stamp = values.get("SystemModstamp", dt.datetime(2025, 6, 1, 12, 0, i))
        out.append(
            snapshot_change(
                SPEC,
                record_id=values.get("Id", f"006{i:012d}AAA"),
                values={
                    "Name": "Deal",
                    "AccountId": "001000000000001AAA",
                    **values,
                    "SystemModstamp": stamp,
                },
                system_modstamp=stamp,
                read_started_at=dt.datetime(2025, 6, 2),
            )
        )
    return build_batch(SPEC, out)


def test_a_clean_batch_passes_whole() -> None:
    checked = validate_batch(RULES, _batch({}, {}, {}), NOW)
    assert checked.quarantined == 0 and checked.good.num_rows == 3


def test_bad_rows_are_quarantined_with_the_column_and_the_check_as_reason() -> None:
    checked = validate_batch(RULES, _batch({}, {"Name": None}, {"AccountId": "bogus"}), NOW)
    assert checked.good.num_rows == 1 and checked.quarantined == 2
    reasons = sorted(checked.quarantine["reason"].to_list())
    assert "name_required" in reasons[1] or "name_required" in reasons[0]
    assert any(r.startswith("accountid: str_matches") for r in reasons)
    assert "bogus" not in " ".join(reasons)  # reasons never carry values


def test_a_record_id_of_another_object_fails_the_key_prefix() -> None:
    checked = validate_batch(RULES, _batch({"Id": "001000000000009AAA"}), NOW)
    assert checked.quarantined == 1
    assert "record_id: str_startswith" in checked.quarantine["reason"][0]


def test_a_timestamp_in_the_future_is_not_sane() -> None:
    checked = validate_batch(RULES, _batch({"SystemModstamp": dt.datetime(2031, 1, 1)}), NOW)
    assert checked.quarantined == 1 and "sane" in checked.quarantine["reason"][0]


def test_a_missing_column_is_a_schema_level_failure_that_rejects_the_batch() -> None:
    batch = _batch({}, {}).drop_columns(["version"])
    checked = validate_batch(RULES, batch, NOW)
    assert checked.schema_errors and checked.good.num_rows == 0
    assert checked.quarantined == 2


def test_a_fill_row_is_valid_though_its_version_sorts_below_every_change() -> None:
    from sync_engine.changes import fill_change

    fill = fill_change(
        SPEC,
        record_id="006000000000001AAA",
        fields=["Name"],
        values={"Name": "Deal"},
        read_started_at=dt.datetime(2025, 6, 2),
        system_modstamp=dt.datetime(2025, 6, 1),
    )
    batch = build_batch(SPEC, [fill])
    assert batch.column("version_ts")[0].as_py().year == 1970
    checked = validate_batch(RULES, batch, NOW)
    assert checked.quarantined == 0 and checked.good.num_rows == 1
    # The exemption is for fills only: a snapshot dated 1970 is still corrupt.
    stale = validate_batch(RULES, _batch({"SystemModstamp": dt.datetime(1970, 1, 2)}), NOW)
    assert stale.quarantined == 1
