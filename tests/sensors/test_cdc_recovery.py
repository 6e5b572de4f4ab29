"""Recovery paths of the CDC sensors (sensors/cdc.py) on the real platform.

The emulator (tiny org), DuckDB, the real assets and a Dagster instance (tests/sfdc_assets/
harness.py); sensor ticks are evaluated and their run requests executed in-process. Each
test has its own org: moving the org's clock cannot be undone.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest

from sensors import cdc
from sfdc_assets.keys import OBJECT_TAG
from sfdc_assets.objects import SyncConfig
from sfdc_emulator.transaction import Mutation
from tests.sfdc_assets.harness import NOT_IN_CDC, Platform, differences, start_platform

pytestmark = pytest.mark.slow

REVENUE = ("Account", "Opportunity", "OpportunityLineItem")
RETENTION_S = 72 * 3600


@pytest.fixture
def platform(tmp_path: Any) -> Iterator[Platform]:
    yield from start_platform(tmp_path)


class SensorClock:
    """`time.time()` as the sensors see it: the wall clock plus an offset the test moves, so
    a re-backfill's `not_before` passes without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SensorClock:
    fake = SensorClock()
    monkeypatch.setattr(cdc, "time", types.SimpleNamespace(time=fake.time))
    return fake


@dataclass
class Tick:
    requests: list[dg.RunRequest]
    cursor: str | None

    @property
    def state(self) -> dict[str, Any]:
        return json.loads(self.cursor or "{}")


def evaluate(platform: Platform, sensor: dg.SensorDefinition, cursor: str | None) -> Tick:
    defs = dg.Definitions(assets=platform.assets, sensors=[sensor], resources=platform.resources)
    context = dg.build_sensor_context(
        instance=platform.instance,
        cursor=cursor,
        definitions=defs,
        resources={k: platform.resources[k] for k in ("salesforce", "landing")},
    )
    data = sensor.evaluate_tick(context)
    return Tick(list(data.run_requests), data.cursor or cursor)


def execute(platform: Platform, requests: list[dg.RunRequest]) -> None:
    for request in requests:
        assert platform.execute(request).success, request.run_key


def bootstrap(platform: Platform, names: tuple[str, ...]) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert platform.backfill(names, platform.sync.settings.partitions_start, today).success


def stale_ids(platform: Platform, name: str) -> set[str]:
    """Ids whose row in current differs from the org (but for what CDC cannot carry)."""
    return {d.rsplit(" ", 1)[-1] for d in differences(platform, name, ignore=NOT_IN_CDC)}


def revenue_sensor(platform: Platform) -> dg.SensorDefinition:
    # Drains of 1.5 s instead of 5: a quiet drain lasts its whole window, and these tests
    # make a dozen of them.
    group = platform.sync.channel_groups["revenue"].model_copy(update={"max_seconds": 1.5})
    return cdc.build_cdc_sensor(group, platform.sync)


def test_an_expired_replay_id_resubscribes_at_latest_and_re_backfills_the_missed_changes(
    platform: Platform, clock: SensorClock
) -> None:
    bootstrap(platform, ("Opportunity",))  # the one compared with truth (~20 s for 740 days)
    traffic = platform.server.traffic
    sensor = revenue_sensor(platform)
    traffic.update("Opportunity", 2)
    first = evaluate(platform, sensor, None)
    assert first.state["policy"] == "CUSTOM" and first.state["replay"]
    execute(platform, first.requests)
    # The platform is down; these changes' events outlive their 72 h retention. (They are
    # made before the jump: after it the org's clock is 73 h ahead of the platform's, whose
    # validation quarantines changes over a day in its future and whose partitions and
    # Bulk windows end at its own today.)
    missed = traffic.update("Opportunity", 3).ids
    platform.store.advance_clock(RETENTION_S + 3600)

    expired = evaluate(platform, sensor, first.cursor)

    assert stale_ids(platform, "Opportunity") == set(missed)
    assert expired.requests == []
    assert expired.state["replay"] is None and expired.state["policy"] == "LATEST"
    margin_ms = platform.sync.settings.rebackfill_margin_minutes * 60_000
    pending = expired.state["pending"]
    assert [p["object"] for p in pending] == list(REVENUE)
    assert {p["reason"] for p in pending} == {"replay-id-expired"}
    assert {p["since_ms"] for p in pending} == {first.state["last_commit_ms"] - margin_ms}

    clock.offset = cdc.REBACKFILL_SETTLE_S + platform.sync.settings.bulk_lag_seconds + 1
    due = evaluate(platform, sensor, expired.cursor)

    assert due.state["pending"] == []
    assert sorted(r.tags[OBJECT_TAG] for r in due.requests) == sorted(REVENUE)
    assert {r.tags["sfdc/source"] for r in due.requests} == {"rebackfill"}
    assert {r.tags["sfdc/reason"] for r in due.requests} == {"replay-id-expired"}
    execute(platform, due.requests)
    assert differences(platform, "Opportunity") == []
    # Nothing is requested twice.
    assert evaluate(platform, sensor, due.cursor).requests == []


def test_changes_made_while_resubscribed_at_latest_without_a_position_are_re_backfilled(
    platform: Platform, clock: SensorClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: after an expired replay id the sensor resubscribes at LATEST; a quiet
    drain gives no replay id, so the next tick subscribed at LATEST again and every change
    committed between two drains was lost for good (the expiry re-backfill had already
    read up to its own start). The sensor now re-backfills from the resubscribe once a
    drain gives it a position. Retention is shortened instead of moving the org's clock,
    so the org and the platform agree on today."""
    import sfdc_emulator.store as store_module

    bootstrap(platform, ("Opportunity",))
    traffic = platform.server.traffic
    sensor = revenue_sensor(platform)
    traffic.update("Opportunity", 1)
    first = evaluate(platform, sensor, None)
    execute(platform, first.requests)
    traffic.update("Opportunity", 2)  # during the outage; its events expire
    monkeypatch.setattr(store_module, "RETENTION_MS", 500)
    time.sleep(0.6)
    platform.store.advance_clock(0)  # expire on the next read, not within 5 s
    expired = evaluate(platform, sensor, first.cursor)
    monkeypatch.setattr(store_module, "RETENTION_MS", RETENTION_S * 1000)
    assert expired.state["replay"] is None and expired.state["policy"] == "LATEST"
    clock.offset += cdc.REBACKFILL_SETTLE_S + 1
    due = evaluate(platform, sensor, expired.cursor)
    assert {r.tags.get("sfdc/reason") for r in due.requests} == {"replay-id-expired"}
    execute(platform, due.requests)

    between = traffic.update("Opportunity", 2).ids  # no drain is subscribed: no CDC for these
    with _committing(traffic, "Opportunity", between):  # a drain now gets a position
        positioned = evaluate(platform, sensor, due.cursor)
    assert positioned.state["policy"] == "CUSTOM" and positioned.state["replay"]
    execute(platform, positioned.requests)
    assert set(between) <= stale_ids(platform, "Opportunity")
    clock.offset += cdc.REBACKFILL_SETTLE_S + 1
    after = evaluate(platform, sensor, positioned.cursor)
    execute(platform, after.requests)

    assert differences(platform, "Opportunity") == []
    # (Besides a CDC run for updates the background thread made after the drain ended.)
    rebackfills = [r for r in after.requests if r.tags.get("sfdc/source") == "rebackfill"]
    assert sorted(r.tags[OBJECT_TAG] for r in rebackfills) == sorted(REVENUE)
    assert {r.tags["sfdc/reason"] for r in rebackfills} == {"replay-id-expired"}
    assert after.state["unpositioned_since_ms"] is None


class _committing:
    """Update a record every 0.3 s in the background (traffic while a drain is open),
    never one of `avoid`: a record the test expects stale must get no event from here."""

    def __init__(self, traffic: Any, name: str, avoid: Sequence[str] = ()) -> None:
        self.traffic, self.name, self.avoid = traffic, name, set(avoid)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(0.3):
            n += 1
            picked = [i for i in self.traffic.random_ids(self.name, 4) if i not in self.avoid]
            if picked:
                update = Mutation("update", self.name, picked[0], {"NextStep": f"background {n}"})
                self.traffic.store.commit([update])

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def polling_config(base: SyncConfig) -> SyncConfig:
    """Task (polled, as shipped) re-read every minute instead of every 15."""
    objects = tuple(
        o.model_copy(update={"poll_minutes": 1}) if o.name == "Task" else o for o in base.objects
    )
    return base.model_copy(update={"objects": objects})


def test_the_polling_sensor_re_reads_a_polled_object_every_poll_interval(
    platform: Platform, clock: SensorClock
) -> None:
    sync = polling_config(platform.sync)
    sensor = cdc.polling_sensor(sync)
    assert sensor is not None
    # Task and Event poll (issue 11: 5M changes a day do not fit the CDC allocation), so
    # their channel group has no CDC sensor at all.
    assert "cdc_activities" not in {s.name for s in cdc.cdc_sensors(sync)}
    bootstrap(platform, ("Task",))
    updated = platform.server.traffic.update("Task", 3).ids
    # Bulk reads end at a lower bound of the org's clock (HTTP Date: up to ~1 s behind),
    # floored to the second, minus the lag (0 here): a change of the last ~2 s is the next
    # poll's (the polls overlap by an interval).
    time.sleep(2.5)

    first = evaluate(platform, sensor, None)
    # Only the bootstrapped one: Event and User wait for their bootstrap (issue 11).
    assert [r.tags[OBJECT_TAG] for r in first.requests] == ["Task"]
    (request,) = [r for r in first.requests if r.tags[OBJECT_TAG] == "Task"]
    assert request.tags["sfdc/source"] == "rebackfill"
    assert request.tags["sfdc/reason"] == "polling"
    assert evaluate(platform, sensor, first.cursor).requests == []
    assert stale_ids(platform, "Task") == set(updated)
    execute(platform, [request])
    assert differences(platform, "Task") == []

    clock.offset += 61
    again = evaluate(platform, sensor, first.cursor)
    assert [r.tags[OBJECT_TAG] for r in again.requests] == ["Task"]
    # Regression: the second poll reads from the same time as the first (the first poll's
    # time minus an interval) and had its run key, so the daemon dropped it as seen.
    assert again.requests[0].run_key != request.run_key
