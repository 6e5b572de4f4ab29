"""CDC sensors: one per channel group, draining Pub/Sub into landed micro-batches.

Each tick (DESIGN §5):
1. drain the group's custom channel from the replay id in the cursor (EARLIEST the first
   time: LATEST with no events would leave no cursor), up to N events or T seconds;
2. land one immutable micro-batch per object and change day (`land_cdc`; named by the
   replay range, so re-landing after a crash commits nothing new);
3. gap events: re-read those Ids by REST and land them as `rest` snapshots; overflow
   events and an expired replay id: schedule a targeted re-backfill of the object (an
   expired id also resubscribes at LATEST first) - no human in the loop, the run and this
   sensor's log tell the on-call;
4. return the run requests (deterministic `run_key`s: a re-evaluated tick requests nothing
   twice) and the new cursor, only after everything is landed.

A tick's micro-batches become one run per change day (nearly always today's) that
materializes raw -> current -> scd2 of every object with a batch (raw run config
`landing_batches`); a re-backfill is a run of one object over a range (`since`). While a
run of the group is still queued, new batches wait in the cursor (`unrequested`) and go
to the next run: under load the runs grow instead of the queue.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import dagster as dg

from resources.landing import LandingStore
from resources.salesforce.resource import SalesforceResource
from sfdc_assets.assets import LAYERS, asset_key, describe_cache, dumps, run_tags
from sfdc_assets.checks import CDC_LAG, CURRENT_ID_UNIQUE, RAW_VALID
from sfdc_assets.objects import ChannelGroup, SyncConfig, load_config
from sfdc_assets.partitions import daily_partitions, partition_key_for
from sfdc_assets.resources import LandingResource

RAW_OP = "salesforce__raw__{name}"
# CDC runs carry their channel group (one at a time per group: dagster.yaml) and objects.
GROUP_TAG = "sfdc/channel_group"
OBJECTS_TAG = "sfdc/objects"
# Wait this long after the lag before re-reading with Bulk, so the changes being
# recovered are older than the reader's lag window.
REBACKFILL_SETTLE_S = 5


def _load_cursor(text: str | None) -> dict[str, Any]:
    cur = json.loads(text) if text else {}
    cur.setdefault("replay", None)
    cur.setdefault("policy", "EARLIEST")
    cur.setdefault("last_commit_ms", None)
    cur.setdefault("pending", [])
    cur.setdefault("unrequested", [])
    # Set while resubscribed at LATEST without a replay id yet (after an expired one).
    cur.setdefault("unpositioned_since_ms", None)
    return cur


def _specs(
    client: Any, landing: LandingStore, names: list[str], refresh: set[str] = frozenset()
) -> dict[str, tuple[Any, Any]]:
    """name -> (engine spec, describe) from the raw asset's describe cache (REST if absent)."""
    from resources.salesforce.rest import parse_describe
    from sync_engine.spec import ObjectSpec

    out = {}
    for name in names:
        body = None if name in refresh else describe_cache(landing, name)
        if body is None:
            full = client.rest.describe_body(name)
            body = {
                "name": full["name"],
                "keyPrefix": full.get("keyPrefix"),
                "fields": full["fields"],
            }
            landing.write_checkpoint(f"describe/{name}", body)
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


@dataclass(frozen=True)
class Landed:
    """A landed micro-batch awaiting its run: what `requests_for` reads of a manifest."""

    kind: str
    object: str
    day: str
    batch_id: str
    meta: dict[str, Any]

    @classmethod
    def of(cls, manifest: Any) -> Landed:
        """From a landing manifest."""
        meta = {"source": manifest.meta.get("source", "cdc")}
        return cls(manifest.kind, manifest.object, manifest.day, manifest.batch_id, meta)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Landed:
        """From the sensor cursor."""
        return cls(data["kind"], data["object"], data["day"], data["batch_id"], data["meta"])

    def to_json(self) -> dict[str, Any]:
        """For the sensor cursor."""
        return asdict(self)


def _group_run_queued(instance: dg.DagsterInstance, group: str) -> bool:
    queued = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
    return bool(instance.get_runs(dg.RunsFilter(tags={GROUP_TAG: group}, statuses=queued), limit=1))


def requests_for(
    manifests: list[Any], group: str, partitions: dg.DailyPartitionsDefinition
) -> list[dg.RunRequest]:
    """One run per source and change day for a whole tick: every object of the channel
    group with a micro-batch that day, raw -> current -> scd2, in one run.

    One run per tick instead of one per object keeps the run queue short: each run is a
    new process importing the code location, which costs more than the applies it runs.
    The run key is a digest of the landed batch names (which are named by replay range),
    so a re-evaluated tick that lands the same batches requests nothing twice.
    """
    by_run: dict[tuple[str, str], dict[str, list[str]]] = {}
    for m in manifests:
        source = m.meta.get("source", "cdc")
        refs = by_run.setdefault((source, m.day), {}).setdefault(m.object, [])
        refs.append(f"{m.kind}/{m.object}/{m.day}/{m.batch_id}")
    out = []
    for (source, day), per_object in sorted(by_run.items()):
        names = sorted(per_object)
        digest = hashlib.sha1(
            "\n".join(r for n in names for r in sorted(per_object[n])).encode()
        ).hexdigest()[:16]
        out.append(
            dg.RunRequest(
                run_key=f"{source}:{group}:{day}:{digest}",
                partition_key=partition_key_for(dt.date.fromisoformat(day), partitions),
                asset_selection=[asset_key(layer, n) for n in names for layer in LAYERS],
                asset_check_keys=[k for n in names for k in run_checks(n)],
                run_config={
                    "ops": {
                        RAW_OP.format(name=n.lower()): {
                            "config": {"landing_batches": sorted(per_object[n])}
                        }
                        for n in names
                    }
                },
                tags={
                    GROUP_TAG: group,
                    OBJECTS_TAG: ",".join(names),
                    "sfdc/source": source,
                },
            )
        )
    return out


def run_checks(name: str) -> list[dg.AssetCheckKey]:
    """The checks every sync run of `name` evaluates (not the scheduled reconciliation)."""
    # The cheap in-op checks; reconciliation (an API call) runs on its own schedule.
    return [
        dg.AssetCheckKey(asset_key("raw", name), RAW_VALID),
        dg.AssetCheckKey(asset_key("current", name), CURRENT_ID_UNIQUE),
        dg.AssetCheckKey(asset_key("current", name), CDC_LAG),
    ]


def rebackfill_request(
    name: str, since_ms: int, reason: str, partitions: dg.DailyPartitionsDefinition
) -> dg.RunRequest:
    """A targeted re-backfill of one object from `since_ms` (raw config `since`)."""
    since = dt.datetime.fromtimestamp(since_ms / 1000, dt.UTC).replace(microsecond=0)
    start = partition_key_for(since.date(), partitions)
    end = partitions.get_last_partition_key() or start
    return dg.RunRequest(
        run_key=f"rebackfill:{name}:{since_ms}",
        asset_selection=[asset_key(layer, name) for layer in LAYERS],
        asset_check_keys=run_checks(name),
        run_config={
            "ops": {RAW_OP.format(name=name.lower()): {"config": {"since": since.isoformat()}}}
        },
        tags={
            **run_tags(name),
            "sfdc/source": "rebackfill",
            "sfdc/reason": reason,
            "dagster/asset_partition_range_start": start,
            "dagster/asset_partition_range_end": max(start, end),
        },
    )


def build_cdc_sensor(group: ChannelGroup, sync: SyncConfig | None = None) -> dg.SensorDefinition:
    """The sensor of one channel group."""
    sync = sync or load_config()
    settings = sync.settings
    objects = [o for o in sync.group_objects(group.name) if o.mode == "cdc"]
    names = [o.name for o in objects]
    partitions = daily_partitions(settings.partitions_start)
    margin_ms = settings.rebackfill_margin_minutes * 60_000
    targets = [asset_key(layer, n) for n in names for layer in LAYERS]

    @dg.sensor(
        name=f"cdc_{group.name}",
        description=(
            f"Drains {group.channel} ({', '.join(names)}) every ~{group.interval_seconds} s, "
            "lands micro-batches and requests raw -> current -> scd2 runs for them; repairs "
            "gaps by REST and overflows / expired replay ids by a targeted re-backfill."
        ),
        minimum_interval_seconds=group.interval_seconds,
        target=targets,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _cdc(
        context: dg.SensorEvaluationContext,
        salesforce: SalesforceResource,
        landing: LandingResource,
    ) -> dg.SensorResult:
        from resources.salesforce.errors import ReplayIdExpiredError
        from resources.salesforce.pubsub import ReplayPolicy
        from resources.salesforce.to_changes import land_cdc, land_rest_snapshots

        cur = _load_cursor(context.cursor)
        store = landing.store()
        client = salesforce.client({o.name: list(o.pii_fields) for o in objects})
        requests: list[dg.RunRequest] = []
        now_s = time.time()
        try:
            specs = _specs(client, store, names)
            replay = bytes.fromhex(cur["replay"]) if cur["replay"] else None
            policy = None if replay else ReplayPolicy(cur["policy"])
            try:
                result = client.pubsub.drain(
                    group.channel,
                    replay,
                    policy=policy,
                    max_events=group.max_events,
                    max_seconds=group.max_seconds,
                )
            except ReplayIdExpiredError:
                # Outage past retention (72 h): take new events from now on, and re-read
                # what was missed with Bulk once it is older than the read lag.
                context.log.warning(
                    "%s: stored replay id expired; resubscribing at LATEST and scheduling a "
                    "re-backfill of %s",
                    group.channel,
                    ", ".join(names),
                )
                last = cur["last_commit_ms"] or int(now_s * 1000)
                for name in names:
                    cur["pending"].append(
                        {
                            "object": name,
                            "since_ms": last - margin_ms,
                            "reason": "replay-id-expired",
                            "not_before": now_s + settings.bulk_lag_seconds + REBACKFILL_SETTLE_S,
                        }
                    )
                cur["replay"], cur["policy"] = None, "LATEST"
                cur["unpositioned_since_ms"] = int(now_s * 1000)
                result = client.pubsub.drain(
                    group.channel,
                    None,
                    policy=ReplayPolicy.LATEST,
                    max_events=group.max_events,
                    max_seconds=group.max_seconds,
                )
            rows = [r for r in result.rows if r.entity in specs]
            stale = _unknown_fields(rows, specs)
            if stale:
                specs.update(_specs(client, store, sorted(stale), refresh=stale))
            manifests = land_cdc(store, group.channel, rows, {n: s for n, (s, _) in specs.items()})
            if result.gaps:
                tag = (
                    "-".join(r.replay_id_bytes.hex() for r in (rows[0], rows[-1]))
                    if rows
                    else f"{int(now_s)}"
                )
                manifests += land_rest_snapshots(
                    client, store, group.channel, result.gaps, specs, tag, "gap events"
                )
                context.log.info(
                    "%s: REST repair of gap events for %s",
                    group.channel,
                    ", ".join(sorted(result.gaps)),
                )
            for entity, commit_ms in result.overflows.items():
                if entity in specs:
                    context.log.warning(
                        "%s: overflow event for %s; re-backfill scheduled", group.channel, entity
                    )
                    cur["pending"].append(
                        {
                            "object": entity,
                            "since_ms": commit_ms - margin_ms,
                            "reason": "overflow",
                            "not_before": now_s + settings.bulk_lag_seconds + REBACKFILL_SETTLE_S,
                        }
                    )
            # Landed batches wait in the cursor while a run of this group is still queued:
            # the next free run takes them all, so a slow queue means bigger runs, not more.
            landed = [*map(Landed.from_json, cur["unrequested"]), *map(Landed.of, manifests)]
            if landed and _group_run_queued(context.instance, group.name):
                cur["unrequested"] = [b.to_json() for b in landed]
                context.log.info(
                    "%s: a run is still queued; %d batch(es) wait for the next tick",
                    group.channel,
                    len(landed),
                )
            else:
                requests += requests_for(landed, group.name, partitions)
                cur["unrequested"] = []
            commits = [r.commit_ts for r in rows]
            if commits:
                cur["last_commit_ms"] = max([*commits, cur["last_commit_ms"] or 0])
            if result.replay_id:
                since = cur["unpositioned_since_ms"]
                if since is not None and since < int(now_s * 1000):
                    # A quiet LATEST drain gives no replay id, so every later tick
                    # subscribed at LATEST again and lost what was committed between two
                    # drains; the expiry re-backfill had read only up to its own start.
                    # Re-read from the resubscribe now that there is a position.
                    context.log.warning(
                        "%s: replay position regained; re-backfilling %s from the resubscribe",
                        group.channel,
                        ", ".join(names),
                    )
                    cur["pending"] += [
                        {
                            "object": name,
                            "since_ms": since - margin_ms,
                            "reason": "replay-id-expired",
                            "not_before": now_s + settings.bulk_lag_seconds + REBACKFILL_SETTLE_S,
                        }
                        for name in names
                    ]
                cur["unpositioned_since_ms"] = None
                cur["replay"], cur["policy"] = result.replay_id.hex(), "CUSTOM"
        finally:
            client.close()
        due = [p for p in cur["pending"] if p["not_before"] <= now_s]
        cur["pending"] = [p for p in cur["pending"] if p["not_before"] > now_s]
        requests += [
            rebackfill_request(p["object"], int(p["since_ms"]), p["reason"], partitions)
            for p in due
        ]
        context.log.info(
            "%s: %d event(s), %d micro-batch(es), %d run request(s), replay id %s",
            group.channel,
            result.events,
            len(manifests),
            len(requests),
            cur["replay"],
        )
        return dg.SensorResult(run_requests=requests, cursor=dumps(cur))

    return _cdc


def cdc_sensors(sync: SyncConfig | None = None) -> list[dg.SensorDefinition]:
    """One sensor per channel group with CDC objects."""
    sync = sync or load_config()
    return [
        build_cdc_sensor(group, sync)
        for name, group in sync.channel_groups.items()
        if any(o.mode == "cdc" for o in sync.group_objects(name))
    ]


def polling_sensor(sync: SyncConfig | None = None) -> dg.SensorDefinition | None:
    """Objects without CDC (`mode: polling`): a re-read of the recent window every
    `poll_minutes`, as a targeted re-backfill run (§4 reconciles the overlap)."""
    sync = sync or load_config()
    polled = [o for o in sync.objects if o.mode == "polling"]
    if not polled:
        return None
    partitions = daily_partitions(sync.settings.partitions_start)
    lag_ms = sync.settings.bulk_lag_seconds * 1000

    @dg.sensor(
        name="sfdc_polling",
        minimum_interval_seconds=60,
        target=[asset_key(layer, o.name) for o in polled for layer in LAYERS],
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _poll(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cur = json.loads(context.cursor) if context.cursor else {}
        now_ms = int(time.time() * 1000)
        requests = []
        for o in polled:
            last = cur.get(o.name)
            if last is not None and now_ms - last < o.poll_minutes * 60_000:
                continue
            # Overlap one poll interval plus the lag: a re-read of the same rows is a no-op.
            since = (last or now_ms) - o.poll_minutes * 60_000 - lag_ms
            request = rebackfill_request(o.name, since, "polling", partitions)
            # Keyed by poll time: the second poll starts where the first did (both from
            # the first poll's time), and the daemon drops a request whose key it has seen.
            requests.append(request.with_replaced_attrs(run_key=f"polling:{o.name}:{now_ms}"))
            cur[o.name] = now_ms
        return dg.SensorResult(run_requests=requests, cursor=dumps(cur))

    return _poll
