"""A whole local platform for the end-to-end tests: the emulator, DuckDB, a landing folder.

Real parts only: the emulator in-process on loopback (HTTPS + gRPC over TLS, tiny org), a
temporary DuckDB file, the real assets and sensors, a real Dagster instance. The event log
is in memory (a 740-day single-run backfill writes one materialization per partition and
asset: ~0.3 ms each in memory, ~5 ms each in SQLite on disk).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from resources.duckdb_warehouse import DuckDBWarehouse
from resources.salesforce.resource import SalesforceResource
from sfdc_assets.assets import build_assets
from sfdc_assets.keys import LAYERS, asset_key
from sfdc_assets.objects import SyncConfig, load_config
from sfdc_assets.resources import LandingResource

OBJECTS = (
    "Account",
    "Contact",
    "Lead",
    "Opportunity",
    "OpportunityLineItem",
    "User",
    "Task",
    "Event",
)
IN_MEMORY_EVENTS = {
    "event_log_storage": {
        "module": "dagster._core.storage.event_log",
        "class": "InMemoryEventLogStorage",
    }
}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def e2e_config() -> SyncConfig:
    """The shipped objects.yaml, with partitions starting before the emulator's 2-year
    history and no Bulk lag (no traffic runs while a test backfills)."""
    base = load_config()
    start = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=740)).isoformat()
    settings = base.settings.model_copy(update={"partitions_start": start, "bulk_lag_seconds": 0})
    return base.model_copy(update={"settings": settings})


@dataclass
class Platform:
    """Everything a test drives."""

    server: Any
    tmp: Path
    sync: SyncConfig
    assets: list[Any]
    resources: dict[str, Any]
    instance: dg.DagsterInstance

    @property
    def store(self) -> Any:
        return self.server.store

    def warehouse(self) -> DuckDBWarehouse:
        return DuckDBWarehouse(path=str(self.tmp / "warehouse.duckdb"))

    def materialize(
        self,
        names: Sequence[str],
        *,
        partition_key: str | None = None,
        tags: dict[str, str] | None = None,
        raw_config: dict[str, Any] | None = None,
    ) -> dg.ExecuteInProcessResult:
        keys = [asset_key(layer, n) for n in names for layer in LAYERS]
        ops = {f"salesforce__raw__{n.lower()}": {"config": raw_config or {}} for n in names}
        return dg.materialize(
            self.assets,
            selection=dg.AssetSelection.assets(*keys),
            partition_key=partition_key,
            tags=tags,
            run_config={**QUIET, "ops": ops},
            instance=self.instance,
            resources=self.resources,
            raise_on_error=False,
        )

    def backfill(self, names: Sequence[str], start: str, end: str) -> dg.ExecuteInProcessResult:
        """What a single-run partition-range backfill launches: one run over [start, end]."""
        return self.materialize(
            names,
            tags={
                "dagster/asset_partition_range_start": start,
                "dagster/asset_partition_range_end": end,
            },
        )

    def execute(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """Run a sensor's run request in-process, as the daemon would launch it."""
        config = dict(request.run_config or {})
        selection: dg.AssetSelection = dg.AssetSelection.assets(*request.asset_selection)
        if request.asset_check_keys is not None:
            # The daemon builds the job from exactly these checks: a run request naming a
            # subset of an op's checks must be one the asset definition can run.
            selection = selection.without_checks() | dg.AssetSelection.checks(
                *request.asset_check_keys
            )
        return dg.materialize(
            self.assets,
            selection=selection,
            partition_key=request.partition_key,
            tags=dict(request.tags),
            run_config={**QUIET, **config},
            instance=self.instance,
            resources=self.resources,
            raise_on_error=False,
        )

    def table(self, schema: str, name: str) -> pl.DataFrame:
        wh = self.warehouse()
        try:
            frame = pl.from_arrow(wh.query_arrow(f'SELECT * FROM "{schema}"."{name.lower()}"'))
        finally:
            wh.close()
        assert isinstance(frame, pl.DataFrame)
        return frame


def start_platform(tmp: Path) -> Iterator[Platform]:
    """Start the emulator and build the platform; stop it afterwards."""
    from sfdc_emulator.server import EmulatorServer

    os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "true"
    server = EmulatorServer(tmp / "org", scale="tiny", seed=3, pubsub_tls=True).start()
    info = server.write_info(tmp / "emulator.json")
    sync = e2e_config()
    resources = {
        "warehouse": DuckDBWarehouse(path=str(tmp / "warehouse.duckdb")),
        "salesforce": SalesforceResource(env="local", emulator_info=str(info)),
        "landing": LandingResource(url=str(tmp / "landing")),
    }
    try:
        with dg.instance_for_test(overrides=IN_MEMORY_EVENTS) as instance:
            yield Platform(server, tmp, sync, build_assets(sync), resources, instance)
    finally:
        server.stop()


def _norm(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        value = (
            value.replace(tzinfo=None)
            if value.tzinfo is None
            else (value.astimezone(dt.UTC).replace(tzinfo=None))
        )
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, Decimal | float):
        return round(float(value), 6)
    return value


# CDC events carry no SystemModstamp (DESIGN §4): after a CDC update the column keeps the
# last snapshot's value until a Bulk/REST read refreshes it.
NOT_IN_CDC = frozenset({"systemmodstamp"})


def differences(
    platform: Platform,
    name: str,
    ignore: frozenset[str] = frozenset(),
    *,
    purged_as_deleted: bool = False,
) -> list[str]:
    """Every field of the engine's current table against the emulator's truth.

    With `purged_as_deleted`, records truth no longer has (purged: hard-deleted) may stay
    in current as deleted rows (DESIGN §3: `is_deleted` instead of physical deletes), and
    must be marked deleted.
    """
    truth = pl.from_arrow(platform.store.truth(name))
    current = platform.table("sfdc", name)
    assert isinstance(truth, pl.DataFrame)
    columns = {c.lower(): c for c in truth.columns}
    compared = [
        c for c in current.columns if (c in columns or c == "is_deleted") and c not in ignore
    ]
    want = {r["Id"]: r for r in truth.iter_rows(named=True)}
    got = {r["id"]: r for r in current.iter_rows(named=True)}
    out: list[str] = []
    if purged_as_deleted:
        extra = set(got) - set(want)
        out += [
            f"{name}: purged {rid} is live in current"
            for rid in sorted(extra)
            if not got[rid]["is_deleted"]
        ]
        got = {rid: row for rid, row in got.items() if rid in want}
    if set(want) != set(got):
        out.append(
            f"{name}: ids differ: missing {len(set(want) - set(got))}, "
            f"extra {len(set(got) - set(want))}"
        )
    for rid in sorted(set(want) & set(got)):
        for col in compared:
            source = "IsDeleted" if col == "is_deleted" else columns[col]
            if _norm(want[rid][source]) != _norm(got[rid][col]):
                out.append(f"{name}.{source} of {rid}")
    return out


def drain_cdc(platform: Platform, rounds: int = 12) -> list[dg.RunRequest]:
    """Evaluate every CDC sensor and run what it requests, until nothing is left; then
    re-read the polled objects (Task, Event, User: no CDC) as the polling sensor's first
    tick does, so every object is as fresh as its sensor makes it."""
    from sensors.cdc import cdc_sensors

    sensors = cdc_sensors(platform.sync)
    cursors: dict[str, str | None] = getattr(platform, "cursors", {})
    done: list[dg.RunRequest] = []
    defs = dg.Definitions(assets=platform.assets, sensors=sensors, resources=platform.resources)
    quiet = 0
    for _ in range(rounds):
        requested = 0
        pending = False
        for sensor in sensors:
            ctx = dg.build_sensor_context(
                instance=platform.instance,
                cursor=cursors.get(sensor.name),
                definitions=defs,
                resources={k: platform.resources[k] for k in ("salesforce", "landing")},
            )
            data = sensor.evaluate_tick(ctx)
            cursors[sensor.name] = data.cursor
            pending = pending or '"pending":[{' in (data.cursor or "")
            for request in data.run_requests:
                result = platform.execute(request)
                assert result.success, request.run_key
                done.append(request)
                requested += 1
        quiet = quiet + 1 if not requested and not pending else 0
        if quiet >= 2:
            break
        if pending:
            time.sleep(2)
    platform.cursors = cursors  # type: ignore[attr-defined]
    return done + poll(platform)


def poll(platform: Platform) -> list[dg.RunRequest]:
    """One first tick of the polling sensor (a re-read of each polled object's last
    interval), its runs executed."""
    from sensors.cdc import polling_sensor

    sensor = polling_sensor(platform.sync)
    if sensor is None:
        return []
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=platform.instance))
    for request in data.run_requests:
        assert platform.execute(request).success, request.run_key
    return list(data.run_requests)


def reconcile(platform: Platform, name: str, kind: str) -> dg.AssetCheckEvaluation:
    """Run one reconciliation as the sensor requests it; its `reconciled_with_salesforce`."""
    from sensors.reconcile import reconcile_request
    from sfdc_assets.keys import RECONCILED

    today = dt.datetime.now(dt.UTC).date().isoformat()
    request = reconcile_request(name, kind, today, int(time.time() * 1000))
    result = platform.execute(request)
    assert result.success, (name, kind)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == RECONCILED]
    return evaluation
