"""`apply.refold`: current and scd2 rebuilt from raw, whatever was done to them.

The repair for rows changed outside the platform: the engine applies each raw change
once, so re-landing the same changes cannot restore a deleted or edited row; a refold
of the damaged ids must give exactly the reference fold again.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_engine.apply import apply_batch, refold
from sync_engine.changes import build_batch
from sync_engine.reference_fold import fold
from sync_engine.warehouse import Warehouse, qualified
from tests.sync_engine.conftest import fresh_duckdb
from tests.sync_engine.histories import (
    SPEC,
    deliveries,
    histories,
    normalize_expected,
    read_current,
    read_history,
    sample_history,
)

STRANGER = "006" + "Z" * 15  # an id raw never saw
DAMAGE = ("delete_current", "edit_current", "delete_history", "edit_history")


def _expected(history: list[dict[str, Any]]) -> tuple[dict, list]:
    ref = fold(SPEC, history)
    return (
        {k: normalize_expected([v])[0] for k, v in ref.current.items()},
        normalize_expected(ref.history),
    )


def _damage(wh: Warehouse, record_id: str, how: str) -> None:
    """What an operator's manual statement might do to one record's rows."""
    s = wh.schema_names
    current, history = qualified(wh, s.current, SPEC.table), qualified(wh, s.history, SPEC.table)
    where = f"WHERE id = '{record_id}'"
    wh.execute(
        {
            "delete_current": f"DELETE FROM {current} {where}",
            "edit_current": f"UPDATE {current} SET name = 'tampered', _version = '0' {where}",
            "delete_history": f"DELETE FROM {history} {where}",
            "edit_history": f"UPDATE {history} SET name = 'tampered', is_current = NOT is_current "
            f"{where}",
        }[how]
    )


def _add_stranger(wh: Warehouse) -> None:
    """A current and an scd2 row for an id raw does not hold (copied from a real row)."""
    s = wh.schema_names
    for table in (qualified(wh, s.current, SPEC.table), qualified(wh, s.history, SPEC.table)):
        wh.execute(
            f"INSERT INTO {table} SELECT * REPLACE ('{STRANGER}' AS id) FROM {table} LIMIT 1"
        )


@settings(
    max_examples=int(os.environ.get("FOLD_MAX_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data(), history=histories())
def test_refold_of_damaged_records_gives_the_reference_fold(data, history):
    expected = _expected(history)
    wh = fresh_duckdb()
    for batch in data.draw(deliveries(history)):
        apply_batch(wh, SPEC, build_batch(SPEC, batch))
    ids = sorted({r["record_id"] for r in history})
    damaged = data.draw(st.lists(st.sampled_from(ids), unique=True, min_size=1))
    for record_id in damaged:
        for how in data.draw(st.lists(st.sampled_from(DAMAGE), unique=True, min_size=1)):
            _damage(wh, record_id, how)
    stranger = data.draw(st.booleans())
    if stranger:
        _add_stranger(wh)
    # Undamaged ids may ride along: a refold of a correct record changes nothing.
    extra = data.draw(st.lists(st.sampled_from(ids), unique=True))
    result = refold(wh, SPEC, [*damaged, *extra, *([STRANGER] if stranger else [])])
    assert (read_current(wh), read_history(wh)) == expected
    assert result.raw_inserted == 0
    wh.close()


def test_replaying_the_changes_does_not_repair_but_a_refold_does():
    # The control: why a refold exists. The same batch again is a no-op (its change ids
    # are applied), so the damage stays until the refold.
    history = sample_history()
    expected = _expected(history)
    wh = fresh_duckdb()
    apply_batch(wh, SPEC, build_batch(SPEC, history))
    assert (read_current(wh), read_history(wh)) == expected
    victim = history[0]["record_id"]
    _damage(wh, victim, "delete_current")
    _damage(wh, victim, "edit_history")
    again = apply_batch(wh, SPEC, build_batch(SPEC, history))
    assert again.applied == 0
    assert victim not in read_current(wh)
    result = refold(wh, SPEC, [victim])
    assert (read_current(wh), read_history(wh)) == expected
    assert result.records == 1 and result.inserted == 1
    # load_log says what ran, under the refold's own id (never a raw batch's).
    logged = wh.query(
        f"SELECT batch_id FROM {qualified(wh, wh.schema_names.meta, 'load_log')} "
        "WHERE batch_id LIKE 'refold-%'"
    )
    assert [r[0] for r in logged] == [f"{result.batch_id}.0"]


def test_refold_of_nothing_writes_nothing():
    wh = fresh_duckdb()
    apply_batch(wh, SPEC, build_batch(SPEC, sample_history()))
    before = (read_current(wh), read_history(wh))
    assert refold(wh, SPEC, []).records == 0
    assert refold(wh, SPEC, [STRANGER]).records == 0  # no row anywhere: nothing touched
    assert (read_current(wh), read_history(wh)) == before


def test_refold_rejects_a_malformed_id_without_naming_it():
    wh = fresh_duckdb()
    with pytest.raises(ValueError) as err:
        refold(wh, SPEC, ["006' OR '1'='1"])
    assert "'1'='1" not in str(err.value)
