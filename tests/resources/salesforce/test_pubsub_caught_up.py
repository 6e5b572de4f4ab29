"""A drain ends once it has caught up with the stream, not when its deadline passes.

Under a steady trickle of events (revenue at production rates: about one a second) the
stream is never quiet for ``idle_s``, so a drain that waited for quiet ran its whole
``max_seconds`` on every sensor tick (issue 11).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from resources.salesforce.pubsub import replay_bytes
from resources.salesforce.resource import SalesforceClient
from tests.resources.salesforce.conftest import CHANNELS, Emulator
from tests.resources.salesforce.test_pubsub_integration import drain_all, expected_changes

REVENUE = "/data/RevenueChannel__chn"


@pytest.fixture
def trickle(emulator: Emulator) -> Iterator[int]:
    """Transactions keep committing, a few a second, for the whole test; yields the replay
    id before the first of them."""
    from sfdc_emulator.traffic import TrafficGenerator

    start = emulator.store.latest_replay_id()
    traffic = TrafficGenerator(emulator.store, rate=40, seed=11)
    traffic.start()
    try:
        time.sleep(1.0)  # a backlog committed before the first drain
        yield start
    finally:
        traffic.stop()


def _events_before(emulator: Emulator, after: int, before_ms: int) -> set[str]:
    cur = emulator.store.read_cursor()
    try:
        rows = cur.execute(
            "SELECT event_uuid FROM _events WHERE replay_id > ? AND commit_ts < ? "
            "AND list_contains(?, entity) AND change_type <> 'GAP_OVERFLOW'",
            [after, before_ms, CHANNELS[REVENUE]],
        ).fetchall()
    finally:
        cur.close()
    return {uuid for (uuid,) in rows}


def test_a_drain_under_a_steady_trickle_stops_once_caught_up(
    emulator: Emulator, client: SalesforceClient, trickle: int
) -> None:
    start = trickle
    began_ms = int(time.time() * 1000)
    client.pubsub.idle_s = 1.5  # never reached: an event arrives every fraction of a second
    res = client.pubsub.drain(REVENUE, replay_bytes(start), max_events=2000, max_seconds=20)
    assert res.caught_up
    assert res.newest_commit_ms >= began_ms
    assert res.seconds < 15  # well before the deadline
    # The backlog is in: every event committed before the drain began was delivered.
    backlog = _events_before(emulator, start, began_ms)
    assert backlog and backlog <= {r.event_id for r in res.rows}


def test_a_salesforce_clock_ahead_of_ours_stops_drains_early_and_loses_nothing(
    emulator: Emulator, client: SalesforceClient, trickle: int
) -> None:
    start = trickle
    emulator.store.clock.advance(3600)  # every commit from now on looks an hour old to us
    rows, cursor, _ = drain_all(client, REVENUE, replay_bytes(start), max_events=2000, for_s=3)
    got = {(r.event_id, r.record_id) for r in rows if r.record_id is not None}
    # The trickle goes on after the last drain: compare up to the cursor it stored.
    assert cursor is not None
    last = int.from_bytes(cursor, "big")
    upto = expected_changes(emulator, start, CHANNELS[REVENUE]) - expected_changes(
        emulator, last, CHANNELS[REVENUE]
    )
    assert upto and set(upto) == got
