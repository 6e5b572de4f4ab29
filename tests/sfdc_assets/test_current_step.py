"""The current+scd2 step's plain parts (sfdc_assets/current.py, describe.py)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from sfdc_assets.current import ApplyOutcome, newest_cdc_commit
from sfdc_assets.describe import decimal_scale

T1 = dt.datetime(2025, 1, 15, 9, 0)
T2 = dt.datetime(2025, 1, 15, 10, 0)


def changes(sources: list[str], commits: list[dt.datetime | None]) -> pa.Table:
    return pa.table({"source": sources, "commit_ts": pa.array(commits, pa.timestamp("us"))})


def test_the_newest_commit_counts_cdc_rows_only_and_never_goes_back() -> None:
    table = changes(["cdc", "bulk"], [T1, T2])

    assert newest_cdc_commit(table, None) == T1
    assert newest_cdc_commit(table, T2) == T2
    assert newest_cdc_commit(changes(["bulk"], [T2]), None) is None
    assert newest_cdc_commit(changes([], []), T1) == T1


def test_the_outcome_sums_the_engine_counts_over_batches() -> None:
    outcome = ApplyOutcome()
    outcome.add({"batch_id": "x", "changes": 3, "inserted": 2, "history_rows": 3}, changes([], []))
    outcome.add({"batch_id": "y", "changes": 1, "updated": 1, "late": 1}, changes(["cdc"], [T1]))

    assert (outcome.batches, outcome.changes, outcome.inserted, outcome.updated) == (2, 4, 2, 1)
    assert outcome.last_commit == T1
    current = outcome.current_metadata(12.5)
    assert current["batches_applied"] == 2 and current["late_changes"] == 1
    assert current["inserts"] == 2 and current["cdc_lag_seconds"] == 12.5
    scd2 = outcome.scd2_metadata(None)
    assert scd2["history_rows"] == 3 and "cdc_lag_seconds" not in scd2


def test_a_registry_decimal_label_gives_its_scale_and_other_types_none() -> None:
    assert decimal_scale("decimal(18,2)") == 2
    assert decimal_scale("decimal(38,0)") == 0
    assert decimal_scale("varchar") is None
