"""`sensors.cdc.drain_tick` and `poll_tick`: one sensor tick as a plain function.

A scripted Pub/Sub drain, a real landing store and the emulator's describes; no Dagster
instance, no emulator server. The recovery paths against the real org are in
test_cdc_recovery.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from resources.landing import BatchRef, LandingStore
from resources.salesforce.cdc_decode import ChangeRow
from resources.salesforce.errors import ReplayIdExpiredError
from resources.salesforce.pubsub import DrainResult, ReplayPolicy, replay_bytes
from resources.salesforce.rest import SnapshotRows
from sensors.cdc import CdcChannel, drain_tick, poll_tick
from sensors.cursor import CUSTOM, LATEST, CdcCursor
from sfdc_assets.describe import cache_describe
from sfdc_assets.keys import OBJECT_TAG, REASON_TAG, raw_op_name
from sfdc_assets.objects import load_config
from sfdc_emulator.describe import default_catalog

TOPIC = "/data/RevenueChannel__chn"
NOW_S = dt.datetime.now(dt.UTC).replace(microsecond=0).timestamp()
OPP = "006000000000001AAA"


class ScriptedPubSub:
    """`drain` returns (or raises) the scripted results in order and records its calls."""

    def __init__(self, *results: DrainResult | Exception) -> None:
        self.results = list(results)
        self.calls: list[tuple[bytes | None, Any]] = []

    def drain(self, topic: str, replay: bytes | None, **kwargs: Any) -> DrainResult:
        assert topic == TOPIC
        self.calls.append((replay, kwargs["policy"]))
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


class LimitsOnly:
    """An org whose `/limits` (read once per tick) names no limit: the governor's defaults
    hold. Describes come from the cache: no other REST call."""

    def limits(self) -> dict[str, Any]:
        return {}


class Client:
    def __init__(self, pubsub: ScriptedPubSub) -> None:
        self.pubsub = pubsub
        self.rest: Any = LimitsOnly()


@pytest.fixture
def store(tmp_path: Any) -> Iterator[LandingStore]:
    landing = LandingStore(str(tmp_path / "landing"))
    for name in ("Account", "Opportunity", "OpportunityLineItem"):
        cache_describe(landing, name, default_catalog()[name].describe_json("66.0"))
    yield landing


@pytest.fixture
def channel() -> CdcChannel:
    """The revenue channel without the re-read after CDC (tested on its own below)."""
    sync = load_config()
    return dataclasses.replace(
        CdcChannel.of(sync.channel_groups["revenue"], sync), reread=frozenset()
    )


def update(replay: int, commit_s: float) -> ChangeRow:
    return ChangeRow(
        record_id=OPP,
        entity="Opportunity",
        change_type="UPDATE",
        commit_ts=int(commit_s * 1000),
        transaction_key=f"tx{replay}",
        sequence_number=1,
        replay_id=replay,
        replay_id_bytes=replay_bytes(replay),
        event_id=f"event-{replay}",
        schema_id="schema-1",
        set_fields=("Name",),
        payload={"Name": f"Renewal {replay}"},
    )


def drained(*rows: ChangeRow, replay: int | None = None, **extra: Any) -> DrainResult:
    last = replay if replay is not None else (rows[-1].replay_id if rows else None)
    return DrainResult(
        TOPIC,
        rows=list(rows),
        events=len(rows),
        replay_id=replay_bytes(last) if last is not None else None,
        **extra,
    )


def never_queued() -> bool:
    return False


def test_a_first_tick_subscribes_at_earliest_and_keeps_the_replay_id_without_runs(
    store: LandingStore, channel: CdcChannel
) -> None:
    pubsub = ScriptedPubSub(drained(replay=7))
    start = CdcCursor()

    tick = drain_tick(Client(pubsub), store, channel, start, NOW_S, never_queued)

    assert pubsub.calls == [(None, ReplayPolicy.EARLIEST)]
    assert tick.requests == []
    assert (tick.cursor.replay, tick.cursor.policy) == (replay_bytes(7).hex(), CUSTOM)
    assert start == CdcCursor()  # the stored cursor is the sensor's to replace
    assert "0 event(s)" in tick.logs[-1].message


def test_landed_events_become_one_run_of_their_day_and_resume_after_their_replay_id(
    store: LandingStore, channel: CdcChannel
) -> None:
    pubsub = ScriptedPubSub(drained(update(8, NOW_S - 5), update(9, NOW_S - 4)))
    start = CdcCursor(replay=replay_bytes(7).hex(), policy=CUSTOM)

    tick = drain_tick(Client(pubsub), store, channel, start, NOW_S, never_queued)

    assert pubsub.calls == [(replay_bytes(7), None)]
    (request,) = tick.requests
    (batch,) = request.run_config["ops"][raw_op_name("Opportunity")]["config"]["landing_batches"]
    assert batch.startswith("cdc/Opportunity/")
    assert tick.cursor.replay == replay_bytes(9).hex()
    assert tick.cursor.last_commit_ms == int((NOW_S - 4) * 1000)


def test_while_a_run_of_the_group_is_queued_batches_wait_in_the_cursor_for_the_next_tick(
    store: LandingStore, channel: CdcChannel
) -> None:
    pubsub = ScriptedPubSub(drained(update(8, NOW_S - 5)), drained(replay=8))
    client = Client(pubsub)

    waiting = drain_tick(client, store, channel, CdcCursor(), NOW_S, lambda: True)
    assert waiting.requests == []
    assert [b.object for b in waiting.cursor.unrequested] == ["Opportunity"]
    assert any("still queued" in line.message for line in waiting.logs)

    freed = drain_tick(client, store, channel, waiting.cursor, NOW_S + 15, never_queued)
    assert len(freed.requests) == 1 and freed.cursor.unrequested == []


def test_an_expired_replay_id_resubscribes_at_latest_and_owes_every_object_a_re_backfill(
    store: LandingStore, channel: CdcChannel
) -> None:
    pubsub = ScriptedPubSub(ReplayIdExpiredError("expired"), drained(), drained(replay=20))
    client = Client(pubsub)
    last_ms = int((NOW_S - 80 * 3600) * 1000)
    start = CdcCursor(replay="0a", policy=CUSTOM, last_commit_ms=last_ms)

    expired = drain_tick(client, store, channel, start, NOW_S, never_queued)

    assert pubsub.calls == [(bytes.fromhex("0a"), None), (None, ReplayPolicy.LATEST)]
    assert (expired.cursor.replay, expired.cursor.policy) == (None, LATEST)
    assert expired.requests == []
    assert [p.object for p in expired.cursor.pending] == list(channel.objects)
    assert {p.since_ms for p in expired.cursor.pending} == {last_ms - channel.margin_ms}
    assert expired.logs[0].level == "warning"

    later = NOW_S + channel.rebackfill_delay_s
    due = drain_tick(client, store, channel, expired.cursor, later, never_queued)

    # The position is back: what was committed while unpositioned is owed too (not yet due).
    assert sorted(r.tags[OBJECT_TAG] for r in due.requests) == sorted(channel.objects)
    assert {r.tags[REASON_TAG] for r in due.requests} == {"replay-id-expired"}
    assert [p.since_ms for p in due.cursor.pending] == [
        int(NOW_S * 1000) - channel.margin_ms
    ] * len(channel.objects)
    assert due.cursor.unpositioned_since_ms is None and due.cursor.policy == CUSTOM


def test_an_overflow_event_owes_that_object_a_re_backfill_from_its_commit(
    store: LandingStore, channel: CdcChannel
) -> None:
    commit_ms = int((NOW_S - 60) * 1000)
    pubsub = ScriptedPubSub(
        drained(replay=9, overflows={"Opportunity": commit_ms, "Case": commit_ms})
    )

    tick = drain_tick(Client(pubsub), store, channel, CdcCursor(), NOW_S, never_queued)

    (owed,) = tick.cursor.pending
    assert (owed.object, owed.reason) == ("Opportunity", "overflow")
    assert owed.since_ms == commit_ms - channel.margin_ms
    assert owed.not_before == NOW_S + channel.rebackfill_delay_s


def test_a_polled_object_is_re_read_once_per_interval_from_its_last_poll() -> None:
    sync = load_config()
    task = sync.objects_by_name()["Task"].model_copy(update={"mode": "polling", "poll_minutes": 5})
    partitions = CdcChannel.of(sync.channel_groups["revenue"], sync).partitions
    now_ms = int(NOW_S * 1000)
    lag_ms = interval_ms = 300_000

    first, cursor = poll_tick([task], {}, now_ms, lag_ms, partitions)
    again, same = poll_tick([task], cursor, now_ms + 60_000, lag_ms, partitions)
    later, moved = poll_tick([task], cursor, now_ms + interval_ms, lag_ms, partitions)

    (request,) = first
    assert cursor == {"Task": now_ms} and request.run_key == f"polling:Task:{now_ms}"
    assert again == [] and same == cursor
    (second,) = later
    assert moved == {"Task": now_ms + interval_ms}
    # Overlaps the previous poll by one interval plus the lag.
    since = second.run_config["ops"][raw_op_name("Task")]["config"]["since"]
    expected_ms = now_ms - interval_ms - lag_ms
    assert dt.datetime.fromisoformat(since).timestamp() == expected_ms // 1000


class ScriptedRest(LimitsOnly):
    """`retrieve` answers from `records` (an id absent there was purged) and records calls."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        self.records = records
        self.calls: list[tuple[str, list[str]]] = []

    def retrieve(self, obj: str, ids: list[str], fields: list[str]) -> SnapshotRows:
        self.calls.append((obj, list(ids)))
        found = [dict(self.records[i], Id=i) for i in ids if i in self.records]
        return SnapshotRows(obj, found, int(NOW_S * 1000))


def test_records_the_events_changed_are_re_read_whole_in_the_same_run() -> None:
    # Issue 10: events carry no formula field and no SystemModstamp, and a lost event
    # leaves its fields stale; the record read after its events brings all three.
    sync = load_config()
    channel = CdcChannel.of(sync.channel_groups["revenue"], sync)
    assert "Opportunity" in channel.reread
    stamp = dt.datetime.fromtimestamp(NOW_S - 3, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    client = Client(ScriptedPubSub(drained(update(8, NOW_S - 5), update(9, NOW_S - 4))))
    client.rest = ScriptedRest({OPP: {"Name": "Renewal 9", "SystemModstamp": stamp}})
    landing = store_with_describes()

    tick = drain_tick(client, landing, channel, CdcCursor(), NOW_S, never_queued)

    assert client.rest.calls == [("Opportunity", [OPP])]
    (request,) = tick.requests
    batches = request.run_config["ops"][raw_op_name("Opportunity")]["config"]["landing_batches"]
    sources = sorted(landing.manifest(ref_of(b)).meta["source"] for b in batches)
    assert sources == ["cdc", "rest"]


def test_a_changed_record_the_re_read_no_longer_finds_lands_as_a_delete_scan() -> None:
    sync = load_config()
    channel = CdcChannel.of(sync.channel_groups["revenue"], sync)
    client = Client(ScriptedPubSub(drained(update(8, NOW_S - 5))))
    client.rest = ScriptedRest({})  # purged since the event: no event says so
    landing = store_with_describes()

    tick = drain_tick(client, landing, channel, CdcCursor(), NOW_S, never_queued)

    (request,) = tick.requests
    batches = request.run_config["ops"][raw_op_name("Opportunity")]["config"]["landing_batches"]
    rest = [m for m in (landing.manifest(ref_of(b)) for b in batches) if m.meta["source"] == "rest"]
    (frame,) = [landing.read(m) for m in rest]
    assert frame["source"].to_list() == ["delete_scan"]
    assert frame["record_id"].to_list() == [OPP]
    assert frame["is_deleted"].to_list() == [True]


def ref_of(text: str) -> BatchRef:
    kind, obj, day, batch_id = text.split("/")
    return BatchRef(kind, obj, dt.date.fromisoformat(day), batch_id)


def store_with_describes() -> LandingStore:
    import tempfile

    landing = LandingStore(tempfile.mkdtemp(prefix="drain-tick-"))
    for name in ("Account", "Opportunity", "OpportunityLineItem"):
        cache_describe(landing, name, default_catalog()[name].describe_json("66.0"))
    return landing
