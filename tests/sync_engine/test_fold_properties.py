"""The central invariant (DESIGN §4), property-tested on DuckDB.

Any delivery of a history (order, duplicates, batching) must leave current and scd2 equal
to the reference fold, hence identical to each other.
"""

from __future__ import annotations

import os
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_engine import apply as apply_mod
from sync_engine.apply import apply_batch
from sync_engine.changes import build_batch
from sync_engine.reference_fold import fold
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import (
    FORMULA_SPEC,
    SPEC,
    STAMPED_SPEC,
    deliveries,
    histories,
    normalize_expected,
    read_current,
    read_history,
)


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=histories())
def test_any_delivery_of_a_history_equals_the_reference_fold(data, history):
    expected = fold(SPEC, history)
    expected_current = {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    expected_history = normalize_expected(expected.history)
    tables = []
    for _ in range(2):
        wh = fresh_duckdb()
        for batch in data.draw(deliveries(history)):
            apply_batch(wh, SPEC, build_batch(SPEC, batch))
        current, hist = read_current(wh), read_history(wh)
        wh.close()
        assert current == expected_current
        assert hist == expected_history
        tables.append((current, hist))
    assert tables[0] == tables[1]


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=histories(spec=STAMPED_SPEC))
def test_event_less_systemmodstamp_moves_leave_scd2_to_the_other_fields(data, history):
    # Regression: a re-backfill after CDC traffic opened scd2 versions that differed only
    # in SystemModstamp (tests/sync_engine/test_unversioned_stamp.py).
    _delivery_equals_the_reference(data, history, STAMPED_SPEC)


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=histories(spec=FORMULA_SPEC))
def test_formula_refreshes_and_formula_less_events_keep_the_invariant(data, history):
    # Issue 10: CDC events never set a formula field, reads and formula refreshes do; any
    # delivery of such a history still equals the reference fold.
    _delivery_equals_the_reference(data, history, FORMULA_SPEC)


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=histories())
def test_the_large_chunk_paths_keep_the_invariant(data, history):
    # LITERAL_ID_LIMIT at 1 and LIST_MIN_ROWS_PER_ID at 0: every chunk of two or more
    # records is "large" and keeps its ids in lists, so it takes the probes
    # (`apply._none_in_current`) and, when current holds one of its ids, the lists; both
    # must still give the reference fold.
    with (
        mock.patch.object(apply_mod, "LITERAL_ID_LIMIT", 1),
        mock.patch.object(apply_mod, "LIST_MIN_ROWS_PER_ID", 0),
        mock.patch.object(apply_mod, "PROBE_SAMPLE", 1),
    ):
        _delivery_equals_the_reference(data, history, SPEC)


def _delivery_equals_the_reference(data, history, spec) -> None:
    """One drawn delivery of `history` into a fresh DuckDB: current and scd2 equal the
    reference fold."""
    expected = fold(spec, history)
    expected_current = {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    wh = fresh_duckdb(spec=spec)
    for batch in data.draw(deliveries(history)):
        apply_batch(wh, spec, build_batch(spec, batch))
    assert read_current(wh, spec) == expected_current
    assert read_history(wh, spec) == normalize_expected(expected.history)
    wh.close()
