"""The fold's fast paths (one change per record: no window fold) keep the invariant.

Deliveries here are cut into many small batches, so most batches hold one change per
record (the fast paths: new records written as their change, existing in-order ones
folded without a window) and the rest mix in multi-change and late records (the windowed
fold), in any order and with duplicates. `FOLD_MAX_EXAMPLES` raises the example count.
"""

from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_engine.apply import apply_batch
from sync_engine.changes import build_batch
from sync_engine.reference_fold import fold
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import (
    SPEC,
    histories,
    normalize_expected,
    read_current,
    read_history,
)


@st.composite
def small_batches(draw: st.DrawFn, history: list[dict]) -> list[list[dict]]:
    """The history shuffled, some changes repeated, cut into batches of 1-3 changes."""
    rows = list(history)
    rows += draw(st.lists(st.sampled_from(history), max_size=len(history) // 2 + 1))
    rows = draw(st.permutations(rows))
    sizes = draw(st.lists(st.integers(1, 3), min_size=len(rows), max_size=len(rows)))
    bounds = [0, *itertools.accumulate(sizes)]
    return [rows[a:b] for a, b in itertools.pairwise(bounds) if a < len(rows)]


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=histories())
def test_fast_path_batches_equal_the_reference_fold(data, history):
    expected = fold(SPEC, history)
    expected_current = {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    wh = fresh_duckdb()
    fast = 0
    for batch in data.draw(small_batches(history)):
        result = apply_batch(wh, SPEC, build_batch(SPEC, batch))
        if result.records:  # this apply classified its records: count the unwindowed ones
            fast += wh.query("SELECT COUNT(*) FROM sfdc_tmp_class WHERE is_simple OR is_new")[0][0]
    assert read_current(wh) == expected_current
    assert read_history(wh) == normalize_expected(expected.history)
    wh.close()
    # A lone change into an empty table is always the new-record path (a gap event applies
    # nothing; a fill makes a current row only, through the windowed fold).
    if len(history) == 1 and history[0]["change_type"] not in ("GAP_UPDATE", "FILL"):
        assert fast >= 1
