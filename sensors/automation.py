"""Sensors that keep the platform going without a click: bootstrap and dbt refresh.

- `sfdc_bootstrap`: an object whose first daily partition has never been materialized was
  never backfilled over its whole range (CDC runs only touch recent days). The sensor asks
  for one single-run backfill of raw -> current -> scd2 over every partition, so a fresh
  `make demo` fills the warehouse, and a new entry in objects.yaml is synced on deploy.
  One bootstrap at a time (CDC runs keep their slots); a failed one is retried after
  `bootstrap_retry_minutes` (the failed run alerts the on-call meanwhile). Once applied,
  a "tail" re-backfill re-reads the bootstrap's read-lag window (`_tail`).
- `dbt_refresh`: `dbt build` of the staging views, marts and legacy views, at most every
  `dbt_refresh_minutes`, once every object is bootstrapped (a build over half-loaded
  tables would fail its relationship tests) and only when current or scd2 changed since
  the last request. The views (commission_preview, legacy) read current directly, so they
  are as fresh as the last CDC apply; the refresh keeps the mart tables within minutes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dagster as dg

from sensors.cursor import dumps
from sensors.run_requests import rebackfill_request
from sfdc_assets.keys import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SOURCE_TAG,
    asset_key,
    object_keys,
    run_checks,
    run_tags,
)
from sfdc_assets.objects import SyncConfig, load_config
from sfdc_assets.partitions import daily_partitions

BOOTSTRAP = "bootstrap"
DBT_REFRESH = "dbt-refresh"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Slack around the bootstrap's read window for its tail re-read (clock skew, run start).
TAIL_MARGIN_S = 60
# The dbt project's asset key prefixes (SfdcDbtTranslator: [<schema folder>, <model>]).
DBT_PREFIXES = (["staging"], ["marts"], ["legacy"])


def is_bootstrapped(instance: dg.DagsterInstance, name: str, first_partition: str) -> bool:
    """Whether `current` of the object holds its first partition (a whole-range backfill
    ran to the apply). One indexed event-log lookup."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=asset_key("current", name), asset_partitions=[first_partition]
        ),
        limit=1,
    )
    return bool(records.records)


def _runs(instance: dg.DagsterInstance, tags: dict[str, str], statuses: Any = None) -> list[Any]:
    return list(instance.get_runs(dg.RunsFilter(tags=tags, statuses=statuses), limit=1))


def bootstrap_request(name: str, start: str, end: str, now_s: float) -> dg.RunRequest:
    """One run backfilling raw -> current -> scd2 of `name` over `[start, end]`."""
    return dg.RunRequest(
        run_key=f"{BOOTSTRAP}:{name}:{int(now_s)}",
        asset_selection=object_keys(name),
        asset_check_keys=run_checks(name),
        tags={
            **run_tags(name),
            SOURCE_TAG: BOOTSTRAP,
            RANGE_START_TAG: start,
            RANGE_END_TAG: end,
        },
    )


def bootstrap_sensor(sync: SyncConfig | None = None) -> dg.SensorDefinition:
    """Backfills every object that was never backfilled over its whole range."""
    sync = sync or load_config()
    settings = sync.settings
    names = [o.name for o in sync.objects]
    partitions = daily_partitions(settings.partitions_start)
    retry_s = settings.bootstrap_retry_minutes * 60
    lag_s = settings.bulk_lag_seconds

    @dg.sensor(
        name="sfdc_bootstrap",
        description=(
            "Backfills (one single-run Bulk backfill of every partition) each configured "
            "object whose first partition was never applied: a fresh platform or a new "
            "entry in objects.yaml syncs without a click."
        ),
        minimum_interval_seconds=30,
        target=[key for n in names for key in object_keys(n)],
        default_status=(
            dg.DefaultSensorStatus.RUNNING if settings.bootstrap else dg.DefaultSensorStatus.STOPPED
        ),
    )
    def _bootstrap(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cur = json.loads(context.cursor) if context.cursor else {}
        done = set(cur.get("done", []))
        tails = list(cur.get("tails", []))
        first = partitions.get_first_partition_key()
        last = partitions.get_last_partition_key()
        assert first and last
        now_s = time.time()
        requests: list[dg.RunRequest] = []
        # One bootstrap at a time: it leaves run slots, the API pool and the writer to the
        # CDC runs, whose latency is the product.
        busy = bool(_runs(context.instance, {SOURCE_TAG: BOOTSTRAP}, IN_FLIGHT))
        for name in names:
            if name in done:
                continue
            if is_bootstrapped(context.instance, name, first):
                done.add(name)
                tails.append(_tail(context.instance, name, now_s, lag_s))
                continue
            if busy or requests:
                continue
            tags = {**run_tags(name), SOURCE_TAG: BOOTSTRAP}
            previous = _runs(context.instance, tags)
            if previous and now_s - _run_created(context.instance, previous[0]) < retry_s:
                continue  # failed recently: its failure alert is out; try again later
            context.log.info("%s: never backfilled; requesting %s..%s", name, first, last)
            requests.append(bootstrap_request(name, first, last, now_s))
        due = [t for t in tails if t["not_before"] <= now_s]
        tails = [t for t in tails if t["not_before"] > now_s]
        requests += [
            rebackfill_request(t["object"], int(t["since_ms"]), "bootstrap-tail", partitions)
            for t in due
        ]
        cursor = dumps({"done": sorted(done), "tails": tails})
        if not requests:
            skip = dg.SkipReason(f"{len(done)} of {len(names)} objects bootstrapped")
            return dg.SensorResult(skip_reason=skip, cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _bootstrap


def _tail(instance: dg.DagsterInstance, name: str, now_s: float, lag_s: int) -> dict[str, Any]:
    """The re-read that closes a bootstrap's read lag.

    The bootstrap's Bulk read stopped `bulk_lag_seconds` before it started. A record whose
    only change in that window published no event (an automation touch moves
    SystemModstamp without one) was read by neither Bulk nor CDC. One `since` re-backfill
    from the bootstrap's request time minus the lag, once that window is older than the
    lag, reads it. (Records CDC did change there are re-read whole by Id in their CDC run:
    `land_incomplete` in sfdc_assets/incomplete.py.)
    """
    runs = _runs(instance, {**run_tags(name), SOURCE_TAG: BOOTSTRAP})
    requested = _run_created(instance, runs[0]) if runs else now_s
    return {
        "object": name,
        "since_ms": int((requested - lag_s - TAIL_MARGIN_S) * 1000),
        "not_before": now_s + lag_s + TAIL_MARGIN_S,
    }


def _run_created(instance: dg.DagsterInstance, run: Any) -> float:
    record = instance.get_run_record_by_id(run.run_id)
    return record.create_timestamp.timestamp() if record else 0.0


def dbt_refresh_sensor(sync: SyncConfig | None = None) -> dg.SensorDefinition | None:
    """`dbt build` every `dbt_refresh_minutes` once bootstrapped and when data changed."""
    sync = sync or load_config()
    settings = sync.settings
    if settings.dbt_refresh_minutes <= 0:
        return None
    names = [o.name for o in sync.objects]
    first = daily_partitions(settings.partitions_start).get_first_partition_key()
    assert first
    interval_s = settings.dbt_refresh_minutes * 60
    sources = [asset_key(layer, n) for n in names for layer in ("current", "scd2")]

    @dg.sensor(
        name="dbt_refresh",
        description=(
            f"dbt build (staging, marts, legacy) at most every {settings.dbt_refresh_minutes} "
            "min, once every object is bootstrapped and when current or scd2 changed."
        ),
        minimum_interval_seconds=60,
        target=dg.AssetSelection.key_prefixes(*DBT_PREFIXES),
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _refresh(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        cur = json.loads(context.cursor) if context.cursor else {}
        now_s = time.time()
        if now_s - cur.get("requested_at", 0.0) < interval_s:
            return dg.SkipReason("refreshed less than the interval ago")
        pending = [n for n in names if not is_bootstrapped(context.instance, n, first)]
        if pending:
            return dg.SkipReason(f"waiting for the bootstrap of {', '.join(pending)}")
        if _runs(context.instance, {SOURCE_TAG: DBT_REFRESH}, IN_FLIGHT):
            return dg.SkipReason("a dbt build is still running")
        newest = max(
            (
                event.timestamp
                for key in sources
                if (event := context.instance.get_latest_materialization_event(key))
            ),
            default=0.0,
        )
        if newest <= cur.get("sources_at", 0.0):
            return dg.SkipReason("nothing new applied since the last dbt build")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"{DBT_REFRESH}:{int(now_s)}", tags={SOURCE_TAG: DBT_REFRESH})
            ],
            cursor=dumps({"requested_at": now_s, "sources_at": newest}),
        )

    return _refresh
