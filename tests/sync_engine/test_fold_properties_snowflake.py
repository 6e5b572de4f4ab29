"""The central invariant through fakesnow: the Snowflake SQL gives the reference fold too.

Fewer examples than on DuckDB: every statement goes through sqlglot and fakesnow (~0.2 s a
batch). Each delivery gets its own fake database so examples never share state.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator

import fakesnow
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources.snowflake_warehouse import SnowflakeWarehouse
from sync_engine import registry
from sync_engine.apply import apply_batch, refold
from sync_engine.changes import build_batch
from sync_engine.reference_fold import fold
from sync_engine.spec import ObjectSpec
from tests.sync_engine.histories import (
    FORMULA_SPEC,
    SPEC,
    STAMPED_SPEC,
    deliveries,
    histories,
    normalize_expected,
    read_current,
    read_history,
    sample_history,
)

_db_numbers = itertools.count()
# fakesnow notes an extra Arrow copy on every DB-API fetch; it says nothing about us.
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")


@pytest.fixture(scope="module")
def fake_snowflake() -> Iterator[None]:
    """fakesnow patch mode for the whole module (the real connector, a DuckDB backend)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fakesnow's Arrow-copy notice
        with fakesnow.patch():
            yield


def fresh_snowflake(spec: ObjectSpec = SPEC) -> SnowflakeWarehouse:
    """A fake Snowflake database of its own, with the test object's tables."""
    # Not "SFDC": fakesnow (DuckDB) cannot tell database SFDC from schema SFDC apart.
    wh = SnowflakeWarehouse(
        account="fake", user="fake", password="snow", database=f"SFDCTEST{next(_db_numbers)}"
    )
    registry.sync_schema(wh, spec)
    return wh


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=histories(max_size=10))
def test_snowflake_sql_gives_the_reference_fold_for_any_delivery(fake_snowflake, data, history):
    expected = fold(SPEC, history)
    expected_current = {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    for _ in range(2):
        wh = fresh_snowflake()
        for batch in data.draw(deliveries(history)):
            apply_batch(wh, SPEC, build_batch(SPEC, batch))
        assert read_current(wh) == expected_current
        assert read_history(wh) == normalize_expected(expected.history)
        wh.close()


def test_snowflake_replayed_batch_changes_nothing(fake_snowflake):
    history = sample_history()
    wh = fresh_snowflake()
    first = apply_batch(wh, SPEC, build_batch(SPEC, history))
    before = (read_current(wh), read_history(wh))
    again = apply_batch(wh, SPEC, build_batch(SPEC, history))
    assert first.raw_inserted == len({r["change_id"] for r in history})
    assert again.raw_inserted == 0 and again.applied == 0
    assert (read_current(wh), read_history(wh)) == before


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=histories(max_size=8, spec=STAMPED_SPEC))
def test_snowflake_sql_leaves_event_less_systemmodstamp_moves_out_of_scd2(
    fake_snowflake, data, history
):
    spec = STAMPED_SPEC
    expected = fold(spec, history)
    wh = fresh_snowflake(spec)
    for batch in data.draw(deliveries(history)):
        apply_batch(wh, spec, build_batch(spec, batch))
    assert read_current(wh, spec) == {
        k: normalize_expected([v])[0] for k, v in expected.current.items()
    }
    assert read_history(wh, spec) == normalize_expected(expected.history)
    wh.close()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), history=histories(max_size=8, spec=FORMULA_SPEC))
def test_snowflake_sql_folds_formula_refreshes_like_the_reference(fake_snowflake, data, history):
    spec = FORMULA_SPEC
    expected = fold(spec, history)
    wh = fresh_snowflake(spec)
    for batch in data.draw(deliveries(history)):
        apply_batch(wh, spec, build_batch(spec, batch))
    assert read_current(wh, spec) == {
        k: normalize_expected([v])[0] for k, v in expected.current.items()
    }
    assert read_history(wh, spec) == normalize_expected(expected.history)
    wh.close()


def test_snowflake_refold_restores_damaged_records(fake_snowflake):
    from tests.sync_engine.test_refold import _damage, _expected

    history = sample_history()
    expected = _expected(history)
    wh = fresh_snowflake()
    apply_batch(wh, SPEC, build_batch(SPEC, history))
    ids = sorted({r["record_id"] for r in history})
    _damage(wh, ids[0], "delete_current")
    _damage(wh, ids[0], "delete_history")
    _damage(wh, ids[-1], "edit_current")
    _damage(wh, ids[-1], "edit_history")
    assert (read_current(wh), read_history(wh)) != expected
    refold(wh, SPEC, ids)
    assert (read_current(wh), read_history(wh)) == expected
    wh.close()


def test_snowflake_large_chunk_paths_give_the_reference_fold(fake_snowflake, monkeypatch):
    # LITERAL_ID_LIMIT at 1: chunks of two or more records are "large" (Snowflake keeps
    # the touched-id join for them: no lists, no probes).
    from sync_engine import apply as apply_mod

    monkeypatch.setattr(apply_mod, "LITERAL_ID_LIMIT", 1)
    history = sample_history()
    expected = fold(SPEC, history)
    wh = fresh_snowflake()
    half = len(history) // 2
    for batch in (history[:half], history[half:]):
        apply_batch(wh, SPEC, build_batch(SPEC, batch))
    assert read_current(wh) == {k: normalize_expected([v])[0] for k, v in expected.current.items()}
    assert read_history(wh) == normalize_expected(expected.history)
    wh.close()
