"""SystemModstamp moves without a change event; a re-read must not make that a version.

Regression for the end-to-end bug where a 30-day re-backfill run after live CDC traffic
added two scd2 versions to OpportunityLineItem: an automation update that set a field to
the value it already had moved SystemModstamp (no field changed, so no CDC event), the
engine's state after the user's CDC update held the commit second as SystemModstamp, and
the re-read snapshot differing only in SystemModstamp opened a new scd2 version. Whether a
Bulk read happened to see such a touch would then decide what history holds.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from resources.duckdb_warehouse import DuckDBWarehouse
from sync_engine import changes as ch
from sync_engine import registry
from sync_engine.apply import apply_batch
from sync_engine.changes import build_batch
from sync_engine.reference_fold import fold
from sync_engine.spec import ObjectSpec
from tests.sync_engine.histories import (
    BASE_SECOND,
    normalize_expected,
    read_current,
    read_history,
)

SPEC = ObjectSpec.of(
    "OpportunityLineItem",
    [
        ("Quantity", "double", 2),
        ("UnitPrice", "currency", 2),
        ("Line_Type__c", "picklist"),
        ("LastModifiedDate", "datetime"),
        ("SystemModstamp", "datetime"),
    ],
)
A = "00k000000000001AAA"
CREATED = {
    "Quantity": Decimal("2.00"),
    "UnitPrice": Decimal("1200.00"),
    "Line_Type__c": "New",
    "LastModifiedDate": ch.ts_of(BASE_SECOND * 1000),
}


def _stamp(second: int) -> dt.datetime:
    return ch.ts_of((BASE_SECOND + second) * 1000)


def _snapshot(second: int, read_second: int, values: dict[str, Any]) -> dict[str, Any]:
    """A Bulk row whose SystemModstamp is `second`, read at `read_second`."""
    return ch.snapshot_change(
        SPEC,
        record_id=A,
        values={**values, "SystemModstamp": _stamp(second)},
        system_modstamp=_stamp(second),
        read_started_at=_stamp(read_second),
    )


def _history() -> list[dict[str, Any]]:
    """Backfill, a user's price change (CDC), then an event-less automation touch."""
    initial = _snapshot(0, 100, CREATED)
    update = ch.cdc_change(
        SPEC,
        event_uuid="evt-1",
        record_id=A,
        change_type="UPDATE",
        commit_ms=(BASE_SECOND + 200) * 1000 + 859,
        transaction_key="tx-1",
        sequence_number=1,
        replay_id=1,
        values={"UnitPrice": Decimal("1500.00"), "LastModifiedDate": _stamp(200)},
        changed_fields=["UnitPrice", "LastModifiedDate"],
    )
    # Automation set Line_Type__c to "New" again one second later: SystemModstamp moved,
    # nothing else did, Salesforce published no event. Only the re-read sees it.
    after = {**CREATED, "UnitPrice": Decimal("1500.00"), "LastModifiedDate": _stamp(200)}
    reread = _snapshot(201, 300, after)
    return [initial, update, reread]


@pytest.fixture
def duck() -> Iterator[DuckDBWarehouse]:
    wh = DuckDBWarehouse(path=":memory:")
    registry.sync_schema(wh, SPEC)
    yield wh
    wh.close()


def _apply(wh: DuckDBWarehouse, *rows: dict[str, Any]) -> Any:
    return apply_batch(wh, SPEC, build_batch(SPEC, rows))


def test_rebackfill_after_an_event_less_stamp_move_adds_no_scd2_version(duck):
    initial, update, reread = _history()
    _apply(duck, initial)
    _apply(duck, update)
    before = read_history(duck, SPEC)
    assert len(before) == 2

    result = _apply(duck, reread)

    assert read_history(duck, SPEC) == before
    assert result.history_rows == 0 and result.noop == 1
    # current still takes the newer stamp: per-field latest version wins for it too.
    assert read_current(duck, SPEC)[A]["systemmodstamp"] == _stamp(201)


def test_a_stamp_only_difference_never_opens_a_version_in_any_delivery_order():
    history = _history()
    expected = fold(SPEC, history)
    assert [r["unitprice"] for r in expected.history] == [Decimal("1200.00"), Decimal("1500.00")]
    assert expected.current[A]["systemmodstamp"] == _stamp(201)
    want_current = {A: normalize_expected([expected.current[A]])[0]}
    want_history = normalize_expected(expected.history)
    # Every order, one change per batch (in order, late and fast paths) and all in one.
    deliveries = [[[c] for c in p] for p in itertools.permutations(history)]
    deliveries.append([history])
    for delivery in deliveries:
        wh = DuckDBWarehouse(path=":memory:")
        registry.sync_schema(wh, SPEC)
        for batch in delivery:
            _apply(wh, *batch)
        assert read_current(wh, SPEC) == want_current
        assert read_history(wh, SPEC) == want_history
        wh.close()


def test_a_version_keeps_the_stamp_it_was_opened_with():
    # The scd2 row stands for the state from valid_from on; a later stamp-only touch
    # does not rewrite it (current carries the newest stamp).
    result = fold(SPEC, _history())
    assert result.history[-1]["systemmodstamp"] == _stamp(200)
    assert result.history[-1]["valid_from"] == ch.ts_of((BASE_SECOND + 200) * 1000 + 859)


def test_a_change_of_any_other_field_still_opens_a_version():
    initial, update, _ = _history()
    moved = _snapshot(201, 300, {**CREATED, "UnitPrice": Decimal("1500.00"), "Quantity": 3})
    result = fold(SPEC, [initial, update, moved])
    assert len(result.history) == 3
