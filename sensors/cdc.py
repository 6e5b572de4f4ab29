"""CDC sensors: one per channel group, draining Pub/Sub into landed micro-batches.

Each tick (DESIGN §5), `drain_tick`:
1. reads the org's `/limits` (the CDC share follows the org's delivery allocation), then
   drains the group's custom channel from the replay id in the cursor (EARLIEST the first
   time: LATEST with no events would leave no cursor), up to N events or T seconds, or
   until the API budget or the org's delivery allocation stops it: what was drained by
   then is landed and the cursor moves past it (issue 11: a refusal that failed the tick
   re-drained the same events every tick);
2. lands one immutable micro-batch per object and change day (`land_cdc`; named by the
   replay range, so re-landing after a crash commits nothing new);
3. gap events: re-reads those Ids by REST and lands them as `rest` snapshots; overflow
   events and an expired replay id: schedules a targeted re-backfill of the object (an
   expired id also resubscribes at LATEST first) - no human in the loop, the run and this
   sensor's log tell the on-call;
4. returns the run requests (deterministic `run_key`s: a re-evaluated tick requests nothing
   twice) and the new cursor, only after everything is landed.

A tick's micro-batches become one run per change day (nearly always today's) that
materializes raw -> current -> scd2 of every object with a batch (raw run config
`landing_batches`); a re-backfill is a run of one object over a range (`since`). While a
run of the group is still queued, new batches wait in the cursor (`unrequested`) and go
to the next run: under load the runs grow instead of the queue.

`drain_tick` and `poll_tick` are plain functions of their inputs (a client, the landing
store, the cursor, the time); the sensors only open the resources and log what they say.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from resources.landing import LandingStore, Manifest
from resources.salesforce.resource import SalesforceResource
from sensors.automation import is_bootstrapped
from sensors.cursor import CdcCursor, Landed, dumps
from sensors.run_requests import rebackfill_request, requests_for
from sfdc_assets.describe import cache_describe, describe_cache
from sfdc_assets.keys import GROUP_TAG, object_keys
from sfdc_assets.objects import ChannelGroup, SObjectConfig, SyncConfig, load_config
from sfdc_assets.partitions import daily_partitions
from sfdc_assets.resources import LandingResource

# Wait this long after the lag before re-reading with Bulk, so the changes being
# recovered are older than the reader's lag window.
REBACKFILL_SETTLE_S = 5
EXPIRED = "replay-id-expired"
OVERFLOW = "overflow"
# Dagster's sensor daemon looks at its sensors every 5 s (MIN_INTERVAL_LOOP_TIME) and
# starts a tick when at least `minimum_interval_seconds` have passed since the previous
# tick started. That tick started a few milliseconds into its loop, so an interval of
# exactly 5 s is a few milliseconds short at the next look and waits a whole extra loop:
# measured at production shape, `interval_seconds: 5` ticked every 10.0 s.
TICK_SLACK_S = 1


def tick_interval(interval_seconds: int) -> int:
    """The sensor's `minimum_interval_seconds` that ticks every `interval_seconds`."""
    return max(1, interval_seconds - TICK_SLACK_S)


def _specs(
    client: Any, landing: LandingStore, names: list[str], refresh: Collection[str] = frozenset()
) -> dict[str, tuple[Any, Any]]:
    """name -> (engine spec, describe) from the raw asset's describe cache (REST if absent)."""
    from resources.salesforce.rest import parse_describe
    from sync_engine.spec import ObjectSpec

    out = {}
    for name in names:
        body = None if name in refresh else describe_cache(landing, name)
        if body is None:
            body = cache_describe(landing, name, client.rest.describe_body(name))
        out[name] = (ObjectSpec.from_describe(body), parse_describe(body))
    return out


def _unknown_fields(rows: list[Any], specs: dict[str, tuple[Any, Any]]) -> set[str]:
    """Objects whose events set a field the cached describe lacks (a new field)."""
    stale = set()
    for r in rows:
        if r.entity in specs:
            known = {f.name for f in specs[r.entity][0].fields} | {"Id", "IsDeleted"}
            if any(f not in known for f in r.set_fields):
                stale.add(r.entity)
    return stale


def _group_run_queued(instance: dg.DagsterInstance, group: str) -> bool:
    queued = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
    return bool(instance.get_runs(dg.RunsFilter(tags={GROUP_TAG: group}, statuses=queued), limit=1))


@dataclass(frozen=True)
class CdcChannel:
    """What a tick of one channel group needs to know, fixed when the sensor is built."""

    group: str
    channel: str
    objects: tuple[str, ...]
    max_events: int
    max_seconds: float
    # A re-backfill starts this long before the commit it recovers from.
    margin_ms: int
    # ...and waits this long, so what it re-reads is older than the Bulk read lag.
    rebackfill_delay_s: float
    partitions: dg.DailyPartitionsDefinition
    # Objects whose changed records are re-read whole after their events (`_reread`).
    reread: frozenset[str] = frozenset()

    @classmethod
    def of(cls, group: ChannelGroup, sync: SyncConfig) -> CdcChannel:
        """The CDC objects of `group`, with the project's settings."""
        settings = sync.settings
        return cls(
            group=group.name,
            channel=group.channel,
            objects=tuple(o.name for o in sync.group_objects(group.name) if o.mode == "cdc"),
            max_events=group.max_events,
            max_seconds=group.max_seconds,
            margin_ms=settings.rebackfill_margin_minutes * 60_000,
            rebackfill_delay_s=settings.bulk_lag_seconds + REBACKFILL_SETTLE_S,
            partitions=daily_partitions(settings.partitions_start),
            reread=frozenset(
                o.name
                for o in sync.group_objects(group.name)
                if o.mode == "cdc" and o.reread_after_cdc
            ),
        )


@dataclass(frozen=True)
class TickLog:
    """One line for the sensor's log."""

    level: str  # "info" or "warning"
    message: str


@dataclass
class TickResult:
    """What a tick asks of the sensor: runs to request, the cursor to store, log lines."""

    requests: list[dg.RunRequest]
    cursor: CdcCursor
    logs: list[TickLog] = field(default_factory=list)


def drain_tick(
    client: Any,
    store: LandingStore,
    channel: CdcChannel,
    cursor: CdcCursor,
    now_s: float,
    run_queued: Callable[[], bool],
) -> TickResult:
    """One tick of a CDC sensor: drain, land, repair, and say which runs to request.

    `run_queued()` tells whether a run of the group still waits in the queue (asked only
    when there are batches to request). `cursor` is not modified; an exception leaves the
    stored cursor as it was, so the next tick drains the same events again.
    """
    from resources.salesforce.to_changes import land_cdc

    cur = cursor.copy()
    logs: list[TickLog] = []
    not_before = now_s + channel.rebackfill_delay_s
    _observe_limits(client, channel, logs)
    specs = _specs(client, store, list(channel.objects))
    result = _drain(client, channel, cur, now_s, logs)
    if result.cut_short:
        _report_cut_short(channel, result, logs)
    rows = [r for r in result.rows if r.entity in specs]
    stale = _unknown_fields(rows, specs)
    if stale:
        specs.update(_specs(client, store, sorted(stale), refresh=stale))
    manifests = land_cdc(store, channel.channel, rows, {n: s for n, (s, _) in specs.items()})
    rereads = _merge_ids(result.gaps, _changed_ids(rows, channel.reread))
    manifests += _reread(client, store, channel, rereads, rows, specs, now_s, logs)
    _owe_overflows(channel, cur, result.overflows, set(specs), not_before, logs)
    requests = _request_or_wait(channel, cur, manifests, run_queued, logs)
    cur.saw_commits([r.commit_ts for r in rows])
    if result.replay_id:
        _reposition(channel, cur, result.replay_id, now_s, logs)
    requests += [
        rebackfill_request(p.object, int(p.since_ms), p.reason, channel.partitions)
        for p in cur.take_due(now_s)
    ]
    logs.append(
        TickLog(
            "info",
            f"{channel.channel}: {result.events} event(s), {len(manifests)} micro-batch(es), "
            f"{len(requests)} run request(s), replay id {cur.replay}",
        )
    )
    return TickResult(requests, cur, logs)


def _observe_limits(client: Any, channel: CdcChannel, logs: list[TickLog]) -> None:
    """Read the org's ``/limits`` (one API call) so this tick's CDC share is a share of the
    org's real delivery allocation (25K Enterprise, 50K Unlimited, +100K per add-on) and
    its remaining count, not of the governor's 25,000 default."""
    from resources.salesforce.errors import SalesforceError

    try:
        client.rest.limits()
    except SalesforceError as exc:
        # Draining on the default allocation is safe (it is the smallest edition's); a
        # tick that failed here would stall the channel on a REST hiccup.
        logs.append(
            TickLog(
                "warning",
                f"{channel.channel}: could not read the org's /limits ({type(exc).__name__}); "
                "draining within the default CDC allocation",
            )
        )


def _report_cut_short(channel: CdcChannel, result: Any, logs: list[TickLog]) -> None:
    """Say why the drain stopped early; what it drained is landed and the cursor moves."""
    from resources.salesforce.errors import DeliveryAllocationExhaustedError

    stopped = result.stopped_by
    if isinstance(stopped, DeliveryAllocationExhaustedError):
        message = (
            f"{channel.channel}: Salesforce refused delivery, the org's CDC delivery allocation "
            "(DailyDeliveredPlatformEvents, rolling 24 h) is used up; landed the "
            f"{result.events} event(s) received before it. Events wait in the 72 h retention: "
            "free the allocation (fewer CDC entities or subscribers) or buy a CDC add-on "
            "(+100K events/day) - docs/operations.md#cdc-delivery-allocation-used-up"
        )
        logs.append(TickLog("warning", message))
    elif stopped.scope == "run":
        # A backlog over one tick's share: normal after an outage, drained tick by tick.
        message = (
            f"{channel.channel}: this tick's CDC share ran out after {result.events} event(s); "
            "landed them, the rest next tick"
        )
        logs.append(TickLog("info", message))
    else:
        logs.append(
            TickLog(
                "warning",
                f"{channel.channel}: landed {result.events} event(s), then {stopped} "
                "(docs/operations.md#cdc-delivery-allocation-used-up)",
            )
        )


def _drain(
    client: Any, channel: CdcChannel, cur: CdcCursor, now_s: float, logs: list[TickLog]
) -> Any:
    """Drain from the cursor; an expired replay id resubscribes at LATEST (and owes a
    re-backfill of every object from the last landed commit)."""
    from resources.salesforce.errors import ReplayIdExpiredError
    from resources.salesforce.pubsub import ReplayPolicy

    replay = cur.replay_id
    try:
        return client.pubsub.drain(
            channel.channel,
            replay,
            policy=None if replay else ReplayPolicy(cur.policy),
            max_events=channel.max_events,
            max_seconds=channel.max_seconds,
        )
    except ReplayIdExpiredError:
        # Outage past retention (72 h): take new events from now on, and re-read what was
        # missed with Bulk once it is older than the read lag.
        names = list(channel.objects)
        logs.append(
            TickLog(
                "warning",
                f"{channel.channel}: stored replay id expired; resubscribing at LATEST and "
                f"scheduling a re-backfill of {', '.join(names)}",
            )
        )
        last = cur.last_commit_ms or int(now_s * 1000)
        cur.owe(names, last - channel.margin_ms, EXPIRED, now_s + channel.rebackfill_delay_s)
        cur.resubscribe_latest(int(now_s * 1000))
        return client.pubsub.drain(
            channel.channel,
            None,
            policy=ReplayPolicy.LATEST,
            max_events=channel.max_events,
            max_seconds=channel.max_seconds,
        )


def _owe_overflows(
    channel: CdcChannel,
    cur: CdcCursor,
    overflows: dict[str, int],
    synced: set[str],
    not_before: float,
    logs: list[TickLog],
) -> None:
    """Overflow events: a targeted re-backfill of each object from the overflow's commit."""
    for entity, commit_ms in overflows.items():
        if entity in synced:
            message = f"{channel.channel}: overflow event for {entity}; re-backfill scheduled"
            logs.append(TickLog("warning", message))
            cur.owe([entity], commit_ms - channel.margin_ms, OVERFLOW, not_before)


def _reposition(
    channel: CdcChannel, cur: CdcCursor, replay_id: bytes, now_s: float, logs: list[TickLog]
) -> None:
    """Store the drain's replay id; after an unpositioned resubscribe, re-read the gap.

    A quiet LATEST drain gives no replay id, so every later tick subscribed at LATEST again
    and lost what was committed between two drains; the expiry re-backfill had read only up
    to its own start. Re-read from the resubscribe now that there is a position.
    """
    since = cur.position(replay_id, int(now_s * 1000))
    if since is None:
        return
    names = list(channel.objects)
    logs.append(
        TickLog(
            "warning",
            f"{channel.channel}: replay position regained; re-backfilling {', '.join(names)} "
            "from the resubscribe",
        )
    )
    cur.owe(names, since - channel.margin_ms, EXPIRED, now_s + channel.rebackfill_delay_s)


def _changed_ids(rows: list[Any], objects: frozenset[str]) -> dict[str, set[str]]:
    """Per object of `objects`, the records the drained events changed (gaps aside)."""
    out: dict[str, set[str]] = {}
    for r in rows:
        if r.entity not in objects or r.change_type.startswith("GAP"):
            continue
        if r.record_id and not r.record_id.endswith("*"):
            out.setdefault(r.entity, set()).add(r.record_id)
    return out


def _merge_ids(*parts: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for part in parts:
        for entity, ids in part.items():
            out.setdefault(entity, set()).update(ids)
    return out


def _reread(
    client: Any,
    store: LandingStore,
    channel: CdcChannel,
    ids: dict[str, set[str]],
    rows: list[Any],
    specs: dict[str, tuple[Any, Any]],
    now_s: float,
    logs: list[TickLog],
) -> list[Manifest]:
    """Re-read by REST the records of gap events and those the events changed, landed as
    `rest` snapshots (purged ones as delete scans) in the same run as the events.

    The events carry neither formula fields nor SystemModstamp (CDC developer guide), and
    a lost event leaves the fields it changed stale: the whole record read after the
    events brings all three to what Salesforce holds (docs/operations.md, API cost).
    """
    from resources.salesforce.to_changes import land_rest_snapshots

    if not ids:
        return []
    # Named by the drain's replay range, so the same re-read lands once.
    if rows:
        tag = "-".join(r.replay_id_bytes.hex() for r in (rows[0], rows[-1]))
    else:
        tag = f"{int(now_s)}"
    reason = "gap events and changed records"
    manifests = land_rest_snapshots(client, store, channel.channel, ids, specs, tag, reason)
    count = sum(len(v) for v in ids.values())
    logs.append(
        TickLog(
            "info",
            f"{channel.channel}: REST re-read of {count} record(s) of {', '.join(sorted(ids))}",
        )
    )
    return manifests


def _request_or_wait(
    channel: CdcChannel,
    cur: CdcCursor,
    manifests: list[Manifest],
    run_queued: Callable[[], bool],
    logs: list[TickLog],
) -> list[dg.RunRequest]:
    """Landed batches wait in the cursor while a run of this group is still queued: the
    next free run takes them all, so a slow queue means bigger runs, not more."""
    landed = [*cur.unrequested, *map(Landed.of, manifests)]
    if landed and run_queued():
        cur.unrequested = landed
        logs.append(
            TickLog(
                "info",
                f"{channel.channel}: a run is still queued; {len(landed)} batch(es) wait for "
                "the next tick",
            )
        )
        return []
    cur.unrequested = []
    return requests_for(landed, channel.group, channel.partitions)


def build_cdc_sensor(group: ChannelGroup, sync: SyncConfig | None = None) -> dg.SensorDefinition:
    """The sensor of one channel group."""
    sync = sync or load_config()
    channel = CdcChannel.of(group, sync)
    pii = {o.name: list(o.pii_fields) for o in sync.group_objects(group.name) if o.mode == "cdc"}

    @dg.sensor(
        name=f"cdc_{group.name}",
        description=(
            f"Drains {group.channel} ({', '.join(channel.objects)}) every "
            f"~{group.interval_seconds} s, lands micro-batches and requests raw -> current -> "
            "scd2 runs for them; repairs gaps by REST and overflows / expired replay ids by a "
            "targeted re-backfill."
        ),
        minimum_interval_seconds=tick_interval(group.interval_seconds),
        target=[key for n in channel.objects for key in object_keys(n)],
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _cdc(
        context: dg.SensorEvaluationContext,
        salesforce: SalesforceResource,
        landing: LandingResource,
    ) -> dg.SensorResult:
        client = salesforce.client(pii)
        try:
            tick = drain_tick(
                client,
                landing.store(),
                channel,
                CdcCursor.from_json(context.cursor),
                time.time(),
                lambda: _group_run_queued(context.instance, group.name),
            )
        finally:
            client.close()
        for line in tick.logs:
            (context.log.warning if line.level == "warning" else context.log.info)(line.message)
        return dg.SensorResult(run_requests=tick.requests, cursor=tick.cursor.to_json())

    return _cdc


def cdc_sensors(sync: SyncConfig | None = None) -> list[dg.SensorDefinition]:
    """One sensor per channel group with CDC objects."""
    sync = sync or load_config()
    return [
        build_cdc_sensor(group, sync)
        for name, group in sync.channel_groups.items()
        if any(o.mode == "cdc" for o in sync.group_objects(name))
    ]


def poll_tick(
    polled: list[SObjectConfig],
    last_polled_ms: dict[str, int],
    now_ms: int,
    lag_ms: int,
    partitions: dg.DailyPartitionsDefinition,
    ready: Callable[[str], bool] = lambda name: True,
) -> tuple[list[dg.RunRequest], dict[str, int]]:
    """One tick of the polling sensor: a re-backfill of each polled object whose interval
    has passed, and the new cursor (object -> last poll time, ms).

    `ready(name)`: the object is bootstrapped. One that is not is left out, its cursor
    untouched: its poll would queue beside its bootstrap and re-read a window of a table
    the backfill has not filled yet; once bootstrapped it is polled on the next tick (the
    bootstrap's tail re-read covers the time the bootstrap ran).
    """
    cursor = dict(last_polled_ms)
    requests = []
    for o in polled:
        last = cursor.get(o.name)
        interval_ms = o.poll_minutes * 60_000
        if last is not None and now_ms - last < interval_ms:
            continue
        if not ready(o.name):
            continue
        # Overlap one poll interval plus the lag: a re-read of the same rows is a no-op.
        since = (last or now_ms) - interval_ms - lag_ms
        request = rebackfill_request(o.name, since, "polling", partitions)
        # Keyed by poll time: the second poll starts where the first did (both from
        # the first poll's time), and the daemon drops a request whose key it has seen.
        requests.append(request.with_replaced_attrs(run_key=f"polling:{o.name}:{now_ms}"))
        cursor[o.name] = now_ms
    return requests, cursor


def polling_sensor(sync: SyncConfig | None = None) -> dg.SensorDefinition | None:
    """Objects without CDC (`mode: polling`): a re-read of the recent window every
    `poll_minutes`, as a targeted re-backfill run (§4 reconciles the overlap).

    With `settings.bootstrap` on, only bootstrapped objects are polled (as `sfdc_reconcile`
    does): issue 11, a poll of Task or Event before its backfill competed with the
    bootstrap runs in the run queue and read windows of a table not filled yet. With it
    off the operator backfills by hand, and every polled object is polled.
    """
    sync = sync or load_config()
    polled = [o for o in sync.objects if o.mode == "polling"]
    if not polled:
        return None
    partitions = daily_partitions(sync.settings.partitions_start)
    lag_ms = sync.settings.bulk_lag_seconds * 1000
    gated = sync.settings.bootstrap
    first = partitions.get_first_partition_key()
    assert first

    @dg.sensor(
        name="sfdc_polling",
        minimum_interval_seconds=60,
        target=[key for o in polled for key in object_keys(o)],
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _poll(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        last = json.loads(context.cursor) if context.cursor else {}
        now_ms = int(time.time() * 1000)
        waiting: list[str] = []

        def ready(name: str) -> bool:
            if not gated or is_bootstrapped(context.instance, name, first):
                return True
            waiting.append(name)
            return False

        requests, cursor = poll_tick(polled, last, now_ms, lag_ms, partitions, ready)
        if waiting:
            message = f"not polled until bootstrapped: {', '.join(waiting)}"
            if not requests:
                return dg.SensorResult(skip_reason=dg.SkipReason(message), cursor=dumps(cursor))
            context.log.info(message)
        return dg.SensorResult(run_requests=requests, cursor=dumps(cursor))

    return _poll
