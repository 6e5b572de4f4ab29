"""The CDC sensor's tick under the API budget and the org's delivery allocation.

Regression (issue 11, item 2): each tick builds a fresh governor whose CDC share is 10 % of
the org's delivered-events allocation, while a channel group may ask for more events than
that. The refusal raised inside the drain failed the tick before anything was landed, the
cursor stayed, and the next tick re-drained the same events: a standing stall whenever the
backlog exceeded one tick's share.

The real emulator (HTTPS + gRPC/TLS on loopback), the real grpcio client and landing store;
a tick is `drain_tick` with a fresh client, exactly as the sensor runs it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resources.landing import LandingStore
from resources.salesforce.errors import DeliveryAllocationExhaustedError
from resources.salesforce.pubsub import replay_bytes
from sensors.cdc import CdcChannel, TickResult, drain_tick
from sensors.cursor import CUSTOM, CdcCursor
from sfdc_assets.objects import load_config
from sfdc_emulator.admin import admin_call
from sfdc_emulator.store import Mutation
from sync_engine.changes import cdc_change_id
from tests.resources.salesforce.conftest import Emulator, start_emulator, stop_emulator

REVENUE = "/data/RevenueChannel__chn"
# Enterprise Edition's delivered-events allocation (reference §2.7): one tick's share
# (run_pct 10 %) is 2,500 events.
ENTERPRISE = 25_000
TICK_SHARE = ENTERPRISE // 10
IDLE_S = 3.0


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = start_emulator(tmp_path_factory.mktemp("emulator"), delivery_limit=ENTERPRISE)
    yield emu
    stop_emulator(emu)


@pytest.fixture(autouse=True)
def _clean_faults(emulator: Emulator) -> Iterator[None]:
    emulator.faults.reset()
    yield
    emulator.faults.reset()


def channel(max_events: int) -> CdcChannel:
    """The revenue channel asking for `max_events` per tick, without the REST re-read."""
    sync = load_config()
    revenue = CdcChannel.of(sync.channel_groups["revenue"], sync)
    return dataclasses.replace(revenue, max_events=max_events, max_seconds=30, reread=frozenset())


def queue_updates(emulator: Emulator, events: int) -> tuple[int, int]:
    """Commit at least `events` Opportunity updates (one event each); (first, last) replay."""
    cur = emulator.store.read_cursor()
    try:
        query = 'SELECT "Id" FROM "Opportunity" WHERE NOT "IsDeleted"'
        ids = [r[0] for r in cur.execute(query).fetchall()]
    finally:
        cur.close()
    start = emulator.store.latest_replay_id()
    n = 0
    while emulator.store.latest_replay_id() - start < events:
        # A distinct value per record: one event per record, not one merged event.
        mutations = [
            Mutation("update", "Opportunity", i, {"Description": f"backlog {n}-{j}"})
            for j, i in enumerate(ids)
        ]
        emulator.store.commit(mutations)
        n += 1
    return start, emulator.store.latest_replay_id()


def expected_changes(emulator: Emulator, after: int, upto: int) -> set[str]:
    """The change id of each (event, record) of every revenue event in (after, upto]."""
    cur = emulator.store.read_cursor()
    try:
        rows = cur.execute(
            "SELECT event_uuid, record_ids FROM _events WHERE replay_id > ? AND replay_id <= ? "
            "AND entity IN ('Account', 'Opportunity', 'OpportunityLineItem')",
            [after, upto],
        ).fetchall()
    finally:
        cur.close()
    return {cdc_change_id(uuid, rid) for uuid, ids in rows for rid in ids}


def landed_changes(store: LandingStore) -> Counter[str]:
    """How often each change id was landed, over every CDC micro-batch."""
    out: Counter[str] = Counter()
    for manifest in store.manifests("cdc"):
        out.update(store.read(manifest)["change_id"].to_list())
    return out


def tick(emulator: Emulator, store: LandingStore, chan: CdcChannel, cursor: CdcCursor) -> Any:
    """One sensor tick: a fresh client (own token, own budget), as `build_cdc_sensor` does."""
    client = emulator.client()
    # The backlog is queued before the first tick, so only the last tick really goes
    # idle. With 0.5 s the first tick once ended before its share ran out on a loaded CI
    # run (most likely a pause in the stream taken for "caught up").
    client.pubsub.idle_s = IDLE_S
    try:
        return drain_tick(client, store, chan, cursor, time.time(), lambda: False)
    finally:
        client.close()


def drain_until_quiet(
    emulator: Emulator, store: LandingStore, chan: CdcChannel, cursor: CdcCursor, upto: int
) -> list[TickResult]:
    ticks: list[TickResult] = []
    for _ in range(6):
        result = tick(emulator, store, chan, cursor)
        ticks.append(result)
        cursor = result.cursor
        if cursor.replay_id is not None and int.from_bytes(cursor.replay_id, "big") >= upto:
            break
    return ticks


def test_a_backlog_over_one_ticks_cdc_share_lands_over_successive_ticks_exactly_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    start, upto = queue_updates(emulator, TICK_SHARE + 500)
    store = LandingStore(str(tmp_path / "landing"))
    cursor = CdcCursor(replay=replay_bytes(start).hex(), policy=CUSTOM)

    ticks = drain_until_quiet(emulator, store, channel(5_000), cursor, upto)

    assert len(ticks) >= 2  # one tick's share could not hold the backlog
    assert ticks[-1].cursor.replay_id == replay_bytes(upto)
    expected = expected_changes(emulator, start, upto)
    assert len(expected) > TICK_SHARE
    landed = landed_changes(store)
    assert set(landed) == set(expected)  # nothing lost
    assert max(landed.values()) == 1  # nothing landed twice
    assert any("CDC share ran out" in line.message for line in ticks[0].logs)


def delivery_limits(emulator: Emulator) -> dict[str, int]:
    client = emulator.client()
    try:
        return dict(client.rest.limits()["DailyDeliveredPlatformEvents"])
    finally:
        client.close()


def test_the_emulator_enforces_its_delivery_allocation_over_grpc_and_reports_it_in_limits(
    emulator: Emulator,
) -> None:
    start, upto = queue_updates(emulator, 100)
    delivered = emulator.pubsub.delivered_last_24h()
    armed = admin_call(emulator.server.info, "fail", target="limit", kind="deliveries")
    assert armed == {"kind": "deliveries", "max": delivered, "delivered": delivered}
    assert delivery_limits(emulator) == {"Max": delivered, "Remaining": 0}
    admin_call(emulator.server.info, "fail", target="limit", kind="deliveries", max=delivered + 40)
    assert delivery_limits(emulator) == {"Max": delivered + 40, "Remaining": 40}

    client = emulator.client()
    try:
        result = client.pubsub.drain(REVENUE, replay_bytes(start), max_events=500, max_seconds=10)
    finally:
        client.close()

    # Salesforce's answer (reference §2.7): delivery stops at the allocation and the
    # subscription ends with subscription.limit.exceeded; the drain keeps what it received.
    assert isinstance(result.stopped_by, DeliveryAllocationExhaustedError)
    assert "DailyDeliveredPlatformEvents" in str(result.stopped_by)
    assert result.events == 40
    assert result.replay_id == replay_bytes(start + 40)
    assert delivery_limits(emulator) == {"Max": delivered + 40, "Remaining": 0}
    admin_call(emulator.server.info, "fail", target="limit", kind="deliveries", clear=True)
    assert delivery_limits(emulator)["Max"] == ENTERPRISE
    assert upto - start >= 100


def test_a_tick_that_meets_the_spent_allocation_lands_what_came_and_the_next_ticks_wait(
    emulator: Emulator, tmp_path: Path
) -> None:
    start, upto = queue_updates(emulator, 400)
    store = LandingStore(str(tmp_path / "landing"))
    cursor = CdcCursor(replay=replay_bytes(start).hex(), policy=CUSTOM)
    # Another consumer spends the allocation while the tick drains, after the tick read
    # /limits: slow responses, and the allocation is cut to what was delivered as soon as
    # the first events have gone out.
    emulator.faults.slow("pubsub", 0.2, count=50)
    baseline = emulator.pubsub.delivered_last_24h()

    def spend_allocation() -> None:
        deadline = time.monotonic() + 20
        while emulator.pubsub.delivered_last_24h() == baseline and time.monotonic() < deadline:
            time.sleep(0.005)
        emulator.faults.delivery_limit(emulator.pubsub.delivered_last_24h())

    other = threading.Thread(target=spend_allocation)
    other.start()
    first = tick(emulator, store, channel(2_000), cursor)
    other.join()

    landed = landed_changes(store)
    assert 0 < sum(landed.values()) < upto - start
    replay = first.cursor.replay_id
    assert replay is not None
    assert set(landed) == expected_changes(emulator, start, int.from_bytes(replay, "big"))
    (warning,) = [line for line in first.logs if line.level == "warning"]
    assert "Salesforce refused delivery" in warning.message  # the org's answer, not ours
    assert "DailyDeliveredPlatformEvents" in warning.message
    assert "docs/operations.md#cdc-delivery-allocation-used-up" in warning.message

    # While /limits says the allocation is spent, a tick opens no Subscribe (an armed
    # UNAVAILABLE stays armed), lands nothing, keeps the cursor and does not fail.
    emulator.faults.pubsub_error("UNAVAILABLE", count=1)
    waiting = tick(emulator, store, channel(2_000), first.cursor)
    assert emulator.faults.snapshot()["pubsub_errors"]
    assert waiting.cursor.replay == first.cursor.replay and waiting.requests == []
    assert any(
        "DailyDeliveredPlatformEvents" in line.message and "floor" in line.message
        for line in waiting.logs
    )
    emulator.faults.reset()

    # The rolling window frees the allocation (here: the override is lifted); the rest of
    # the backlog lands, each change once.
    ticks = drain_until_quiet(emulator, store, channel(2_000), waiting.cursor, upto)
    assert ticks[-1].cursor.replay_id == replay_bytes(upto)
    landed = landed_changes(store)
    assert set(landed) == expected_changes(emulator, start, upto)
    assert max(landed.values()) == 1
