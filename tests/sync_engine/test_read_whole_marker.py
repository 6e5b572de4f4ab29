"""current's `_read_whole` marker: TRUE iff a whole change (SNAPSHOT, CREATE, UNDELETE)
of the record was applied; FALSE while none was; NULL (unknown) on rows from before the
marker existed, until a whole change arrives.

The incomplete-records lookup (`sfdc_assets.incomplete.read_whole_before`) answers from it
by id instead of reading raw from the bootstrap day on (docs/engine.md). It is an OR over
the applied changes, so any order, duplicates and batching must give the same value;
stated independently of the reference fold here, on DuckDB, with the touched ids inlined
in one list and in several (`apply.LITERAL_ID_LIMIT` lowered: the by-list path large
chunks take on a large table).
"""

from __future__ import annotations

import os
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_engine import apply as apply_mod
from sync_engine import registry
from sync_engine.apply import apply_batch
from sync_engine.changes import build_batch
from sync_engine.reference_fold import fold
from sync_engine.statements import WHOLE_CHANGE_TYPES
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

A, B, C = (f"006{i:012d}AAA" for i in range(1, 4))


def _markers(wh) -> dict[str, bool | None]:
    return {
        r[0]: r[1] for r in wh.query("SELECT id, _read_whole FROM sfdc.opportunity ORDER BY id")
    }


def _expected(history) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for c in history:
        if c["change_type"].startswith("GAP"):
            continue
        out[c["record_id"]] = out.get(c["record_id"], False) or (
            c["change_type"] in WHOLE_CHANGE_TYPES
        )
    return out


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=histories(), lists=st.sampled_from([None, 1, 2]))
def test_the_marker_is_the_same_for_any_delivery(data, history, lists):
    # lists: None = the usual single inlined list; 1 or 2 = ids per list, several lists
    # (one fetch / close / delete per list), as a large chunk into a large table gets.
    limit = lists or apply_mod.LITERAL_ID_LIMIT
    min_rows = 0 if lists else apply_mod.LIST_MIN_ROWS_PER_ID
    expected = _expected(history)
    reference = fold(SPEC, history)
    ref_current = {k: normalize_expected([v])[0] for k, v in reference.current.items()}
    ref_history = normalize_expected(reference.history)
    results = []
    with (
        mock.patch.object(apply_mod, "LITERAL_ID_LIMIT", limit),
        mock.patch.object(apply_mod, "LIST_MIN_ROWS_PER_ID", min_rows),
    ):
        for _ in range(2):
            wh = fresh_duckdb()
            for batch in data.draw(deliveries(history)):
                apply_batch(wh, SPEC, build_batch(SPEC, batch))
            markers = _markers(wh)
            current, hist = read_current(wh), read_history(wh)
            wh.close()
            assert markers == expected
            # The whole tables too: the by-list path must not change any result.
            assert current == ref_current
            assert hist == ref_history
            results.append(current)
    assert results[0] == results[1]


def test_pre_marker_rows_stay_unknown_until_a_whole_change(tmp_path) -> None:
    wh = fresh_duckdb(str(tmp_path / "wh.duckdb"))
    apply_batch(wh, SPEC, build_batch(SPEC, [snapshot(A, 0, 500, FULL), cdc("CREATE", 1, B, 0)]))
    apply_batch(wh, SPEC, build_batch(SPEC, [snapshot(C, 0, 500, FULL)]))
    # A current table from before the marker: the column is added by sync_schema, NULL.
    wh.execute("ALTER TABLE sfdc.opportunity DROP COLUMN _read_whole")
    registry.sync_schema(wh, SPEC)
    assert _markers(wh) == {A: None, B: None, C: None}

    # A partial change keeps "unknown"; a whole one (in order or late) makes it TRUE.
    apply_batch(
        wh,
        SPEC,
        build_batch(
            SPEC,
            [
                cdc("UPDATE", 2, A, 10, changed_fields=["Name"], values={"Name": "x"}),
                cdc("UNDELETE", 3, B, 10, values=FULL),
                snapshot(C, -5, 500, FULL),  # late: older than C's current version
            ],
        ),
    )
    assert _markers(wh) == {A: None, B: True, C: True}
    wh.close()


def test_new_and_partial_only_records_are_marked_false(duck) -> None:
    apply_batch(
        duck,
        SPEC,
        build_batch(SPEC, [cdc("UPDATE", 1, A, 0, changed_fields=["Name"], values={"Name": "a"})]),
    )
    apply_batch(duck, SPEC, build_batch(SPEC, [cdc("DELETE", 2, A, 5), cdc("CREATE", 3, B, 5)]))
    assert _markers(duck) == {A: False, B: True}
    apply_batch(duck, SPEC, build_batch(SPEC, [snapshot(A, 9, 500, FULL)]))
    assert _markers(duck) == {A: True, B: True}
