"""`sfdc_reconcile`: requests each object's reconciliation runs on their cadence.

Per bootstrapped object (objects.yaml `settings.reconcile`, per-object `reconcile:`
overrides): a `recent` reconciliation every `recent_minutes`, a `full` one (the ID-set
diff over the whole history) every `full_hours`, and a `formulas` refresh every
`formula_minutes` for objects with formula fields. Each is a raw -> current -> scd2 run
of today's partition with raw config `reconcile: <kind>` and the check
`reconciled_with_salesforce` (sfdc_assets/reconcile.py). One reconciliation of an object
at a time; a kind's clock starts when the object is first seen bootstrapped, so a fresh
platform does not list every object right after its bootstrap read it whole. A `full`
run is owed at once when a reconciliation found getDeleted's log cut short by a purge.

`reconcile_tick` is the rule as a plain function; the sensor only asks the instance and
the landing store what the rule needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dagster as dg

from sensors.automation import IN_FLIGHT, is_bootstrapped
from sensors.cursor import dumps
from sensors.run_requests import raw_config
from sfdc_assets.describe import describe_cache
from sfdc_assets.keys import (
    REASON_TAG,
    SOURCE_TAG,
    object_keys,
    reconcile_run_checks,
    run_tags,
)
from sfdc_assets.objects import ReconcileSettings, SyncConfig, load_config
from sfdc_assets.partitions import daily_partitions
from sfdc_assets.reconcile import full_due
from sfdc_assets.resources import LandingResource

RECONCILE = "reconcile"
SENSOR = "sfdc_reconcile"
# When several kinds are due, the widest goes first (a full listing covers the recent days).
PRIORITY = ("full", "formulas", "recent")


@dataclass(frozen=True)
class Scheduled:
    """One object's reconciliation cadence, and whether it has formula fields."""

    name: str
    settings: ReconcileSettings
    has_formulas: bool
    # A reconciliation found getDeleted's log incomplete: the full comparison is owed now.
    full_owed: bool = False

    def intervals_ms(self) -> dict[str, int]:
        """Kind -> interval (ms) of the kinds turned on."""
        s = self.settings
        out = {"recent": s.recent_minutes * 60_000, "full": s.full_hours * 3_600_000}
        if self.has_formulas:
            out["formulas"] = s.formula_minutes * 60_000
        return {kind: ms for kind, ms in out.items() if ms > 0}


def reconcile_request(name: str, kind: str, partition_key: str, now_ms: int) -> dg.RunRequest:
    """One reconciliation run of `name` (raw config `reconcile: kind`) on today's partition."""
    return dg.RunRequest(
        run_key=f"{RECONCILE}:{name}:{kind}:{now_ms}",
        partition_key=partition_key,
        asset_selection=object_keys(name),
        asset_check_keys=reconcile_run_checks(name),
        run_config={"ops": raw_config(name, {"reconcile": kind})},
        tags={**run_tags(name), SOURCE_TAG: RECONCILE, REASON_TAG: kind},
    )


def reconcile_tick(
    objects: list[Scheduled],
    last_ms: Mapping[str, Mapping[str, int]],
    now_ms: int,
    ready: Callable[[str], bool],
    busy: Callable[[str], bool],
    partition_key: str,
) -> tuple[list[dg.RunRequest], dict[str, dict[str, int]]]:
    """The runs due now and the new cursor (object -> kind -> last request, ms).

    `ready(name)`: the object is bootstrapped; `busy(name)`: one of its reconciliations is
    in flight. At most one request per object and tick: the widest kind due (`PRIORITY`).
    """
    cursor = {name: dict(kinds) for name, kinds in last_ms.items()}
    requests = []
    for obj in objects:
        if not ready(obj.name):
            continue
        kinds = cursor.setdefault(obj.name, {})
        intervals = obj.intervals_ms()
        for kind in intervals:
            kinds.setdefault(kind, now_ms)  # the clock starts at the first sight
        due = [k for k in PRIORITY if k in intervals and now_ms - kinds[k] >= intervals[k]]
        if obj.full_owed and "full" not in due:
            due.insert(0, "full")
        if not due or busy(obj.name):
            continue
        kind = due[0]
        kinds[kind] = now_ms
        if kind == "full" and "recent" in kinds:
            kinds["recent"] = now_ms  # the whole history covers the recent days too
        requests.append(reconcile_request(obj.name, kind, partition_key, now_ms))
    return requests, cursor


def reconcile_sensor(sync: SyncConfig | None = None) -> dg.SensorDefinition:
    """Requests the reconciliation runs of every configured object on their cadence."""
    sync = sync or load_config()
    partitions = daily_partitions(sync.settings.partitions_start)
    configs = [(o.name, sync.reconcile_for(o)) for o in sync.objects]

    @dg.sensor(
        name=SENSOR,
        description=(
            "Requests each object's reconciliation (Bulk listing vs current, REST re-read "
            "of what differs, purges found by ID-set diff and getDeleted, formula refresh) "
            "on the cadence objects.yaml sets; results: check reconciled_with_salesforce."
        ),
        minimum_interval_seconds=60,
        target=[key for name, _ in configs for key in object_keys(name)],
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _reconcile(
        context: dg.SensorEvaluationContext, landing: LandingResource
    ) -> dg.SensorResult:
        store = landing.store()
        first = partitions.get_first_partition_key()
        last = partitions.get_last_partition_key()
        assert first and last
        scheduled = [
            Scheduled(
                name,
                settings,
                _has_formulas(describe_cache(store, name)),
                full_owed=full_due(store, name),
            )
            for name, settings in configs
        ]

        def busy(name: str) -> bool:
            tags = {**run_tags(name), SOURCE_TAG: RECONCILE}
            runs = context.instance.get_runs(dg.RunsFilter(tags=tags, statuses=IN_FLIGHT), limit=1)
            return bool(runs)

        requests, cursor = reconcile_tick(
            scheduled,
            json.loads(context.cursor) if context.cursor else {},
            int(time.time() * 1000),
            lambda name: is_bootstrapped(context.instance, name, first),
            busy,
            last,
        )
        return dg.SensorResult(run_requests=requests, cursor=dumps(cursor))

    return _reconcile


def _has_formulas(describe: Mapping | None) -> bool:
    from sync_engine.spec import ObjectSpec

    if not describe:
        return False
    return bool(ObjectSpec.from_describe(describe).calculated_fields)
