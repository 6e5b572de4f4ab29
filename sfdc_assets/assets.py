"""The per-object asset factory: raw, current and scd2 of every configured object.

`build_object_assets(obj)` returns, for one `objects.yaml` entry:

- `salesforce/raw/<object>`: lands changes (a Bulk backfill of the partition window, given
  CDC/REST micro-batches, or a targeted re-backfill from a time), validates them, appends
  the valid rows to `sfdc_raw.<object>`; blocking check `raw_batch_valid`.
- `salesforce/current/<object>` + `salesforce/scd2/<object>`: one op (the engine writes
  both in one transaction) applying every validated batch of the window not applied yet;
  checks `current_id_unique` (blocking, over the ids the run touched) and `cdc_lag` (warn).
- `current_id_unique_full`: the whole-table Id check on current (nightly schedule).
- `live_count_matches_salesforce`: the reconciliation check on current (warn, scheduled).

Partitions are UTC days of the change date; `BackfillPolicy.single_run()` turns a
partition-range backfill into one run, hence one Bulk job (split by time only when
large), not one per day. The steps are plain functions (`raw.py`, `current.py`); the ops
here open the resources, call them, and turn their results into Dagster events.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg

from sfdc_assets.checks import (
    SCOPE_TOUCHED,
    id_unique_full_check,
    id_unique_result,
    lag_result,
    live_count_check,
    reconciled_result,
)
from sfdc_assets.current import ApplyOutcome, apply_pending
from sfdc_assets.describe import registry_spec
from sfdc_assets.fills import fills_done
from sfdc_assets.freshness import target_minutes
from sfdc_assets.keys import (
    CDC_LAG,
    CURRENT_ID_UNIQUE,
    RAW_VALID,
    RECONCILED,
    apply_pool,
    asset_key,
    current_scd2_op_name,
    raw_pool,
    reconciled_check,
)
from sfdc_assets.objects import (
    SObjectConfig,
    SyncConfig,
    SyncSettings,
    load_config,
    reconcile_settings,
)
from sfdc_assets.partitions import daily_partitions, window_of
from sfdc_assets.raw import (
    LandedWork,
    RawOutcome,
    RawRunConfig,
    RawSchema,
    RawWriter,
    ensure_lookup_fields,
    land_raw,
    plan_raw,
    prepare_raw,
    replay_range,
)
from sfdc_assets.resources import LANDING, SALESFORCE, WAREHOUSE, warehouse_kind
from sync_engine.warehouse import let_go

# Transient failures (HTTP 503, gRPC UNAVAILABLE, a DuckDB file lock held too long) are
# retried inside the clients first; this covers what escapes them: ~10 s, 20 s, 40 s.
RETRY = dg.RetryPolicy(
    max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

RAW_DOC = """Raw change log of Salesforce {name}: `sfdc_raw.{table}`, append-only and immutable.

One row per observed change of one record: a Bulk `queryAll` snapshot row (deletes
included), a CDC event exploded by record id, or a REST re-read after a gap event. Keyed by a
deterministic `change_id`, so re-landing or re-backfilling never duplicates. Partition =
UTC day of the change's version (Bulk: SystemModstamp; CDC: commit time).

A materialization lands, validates and appends: with no run config, a Bulk 2.0 backfill of
exactly the partition window `[start, end)` (the first partition's window reaches back
to 1999, so records last modified before the partitions begin are read too; never the
last {lag} s: Salesforce reads are eventually consistent, CDC covers them); with
`landing_batches`, the CDC/REST micro-batches the `cdc_{group}` sensor landed; with
`since`, a targeted re-backfill from that time (overflow or expired replay id, bootstrap
tail). Every batch is validated by a Pandera schema
from describe; failing rows go to `sfdc_quarantine.{table}` with the reason, and the
blocking check `raw_batch_valid` stops current, scd2 and dbt when a batch is rejected.
Describe runs every time: new fields become columns (schema registry in `sfdc_meta`)."""

CURRENT_DOC = """Current state of Salesforce {name}: `sfdc.{table}`, one row per Id.

Per-field latest-version-wins fold of the raw changes (a late or out-of-order change still
lands right), `is_deleted` instead of physical deletes, typed columns from describe, plus
`_version`, `_source`, `_synced_at`. Written together with scd2 by one transaction per
batch; applies every validated raw batch of the partition window not applied yet (the
ledger `sfdc_meta.raw_batches`), so a retried or re-run materialization changes nothing."""

SCD2_DOC = """History of Salesforce {name}: `sfdc_history.{table}`, one row per version.

`valid_from`/`valid_to` in source time (the change's version, never load time), `is_current`,
`is_deleted`; a no-op change opens no version, a delete closes the open version and opens
a deleted one, an undelete reopens. Use it for "as of" questions (opportunity amount on any
date); written with current by the same op."""


def _doc_values(obj: SObjectConfig, settings: SyncSettings) -> dict[str, Any]:
    return {
        "name": obj.name,
        "table": obj.key_name,
        "group": obj.group,
        "lag": settings.bulk_lag_seconds,
    }


def _catalog_metadata(obj: SObjectConfig) -> dict[str, str]:
    meta = {"salesforce/object": obj.name, "salesforce/mode": obj.mode}
    if obj.pii_fields:
        meta["salesforce/pii_fields"] = ", ".join(obj.pii_fields)
    return meta


def raw_asset(obj: SObjectConfig, settings: SyncSettings) -> dg.AssetsDefinition:
    """`salesforce/raw/<object>` with its blocking `raw_batch_valid` check."""
    raw_key = asset_key("raw", obj)
    threshold = settings.quarantine_threshold_pct

    @dg.asset(
        key=raw_key,
        description=RAW_DOC.format(**_doc_values(obj, settings)),
        group_name=obj.group,
        kinds={"salesforce", warehouse_kind(), "parquet"},
        partitions_def=daily_partitions(settings.partitions_start),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=raw_pool(obj),
        retry_policy=RETRY,
        metadata=_catalog_metadata(obj),
        tags={"domain": obj.group},
        required_resource_keys={WAREHOUSE, SALESFORCE, LANDING},
        check_specs=[
            dg.AssetCheckSpec(
                RAW_VALID,
                asset=raw_key,
                blocking=True,
                description=(
                    "Every landed batch passes the Pandera schema of "
                    f"{obj.name}: a batch with more than {threshold}% quarantined rows, or a "
                    "schema-level failure, is rejected and blocks current, scd2 and dbt."
                ),
            )
        ],
    )
    def _raw(context: dg.AssetExecutionContext, config: RawRunConfig) -> Iterator[Any]:
        warehouse = context.resources.warehouse
        landing = context.resources.landing.store()
        client = context.resources.salesforce.client({obj.name: list(obj.pii_fields)})
        now = dt.datetime.now(dt.UTC)
        try:
            schema = prepare_raw(client, landing, warehouse, obj.name, obj.pii_fields)
            plan = plan_raw(
                obj.name,
                config,
                window_of(context),
                settings.bulk_lag_seconds,
                now,
                schema.fill_fields,
                reconcile_settings(settings, obj),
                schema.spec.calculated_fields,
            )
            ensure_lookup_fields(warehouse, schema.spec, obj.lookup_fields, plan)
            if plan.read or plan.reconcile:
                # A Bulk read or a reconciliation's listing waits on Salesforce for tens of
                # seconds (minutes: a full listing of 10M Tasks): let go of the DuckDB
                # file meanwhile, or every CDC run's steps wait for it (issue 11,
                # docs/performance.md).
                let_go(warehouse)
            work = land_raw(plan, client, landing, warehouse, schema, context.run.run_id)
            writer = RawWriter(
                obj.name,
                warehouse,
                landing,
                schema,
                now.replace(tzinfo=None),
                threshold,
                context.run.run_id,
                plan.fill_day,
            )
            outcome = writer.process(work.manifests)
            if schema.fill_fields:  # in raw and in the ledger: the next run need not fill
                fills_done(landing, obj.name)
            usage = client.governor.snapshot()
        finally:
            client.close()
            # Let go of DuckDB's single-writer lock before Dagster records the results: a
            # range materialization writes one event per partition, which can take minutes.
            warehouse.close()
        context.log.info(
            "%s raw: %d rows landed, %d appended, %d quarantined, %d part(s) rejected",
            obj.name,
            outcome.rows_landed,
            outcome.rows_appended,
            outcome.rows_quarantined,
            len(outcome.rejected),
        )
        yield dg.MaterializeResult(
            asset_key=raw_key, metadata=_raw_metadata(work, outcome, schema, usage)
        )
        yield _raw_check(obj, raw_key, outcome, threshold)

    return _raw


def _raw_metadata(
    work: LandedWork, outcome: RawOutcome, schema: RawSchema, usage: dict[str, Any]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        **work.read_meta,
        **outcome.totals(),
        "batches": len(work.manifests),
        "rejected_parts": len(outcome.rejected),
        "quarantine_reasons": dg.MetadataValue.json(outcome.reasons),
        "api_requests": usage["api_requests"],
        "bulk_jobs_created": usage["bulk_jobs"],
        "schema_added_fields": ", ".join(schema.synced.change.added),
        "schema_removed_fields": ", ".join(schema.synced.change.removed),
        "schema_filled_fields": ", ".join(schema.fill_fields),
        "records_reread_whole": work.reread_records,
    }
    replays = replay_range(work.manifests)
    if replays:
        metadata["replay_id_first"], metadata["replay_id_last"] = replays
    return metadata


def _raw_check(
    obj: SObjectConfig, raw_key: dg.AssetKey, outcome: RawOutcome, threshold: float
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=RAW_VALID,
        asset_key=raw_key,
        passed=outcome.passed,
        metadata={
            "rejected_parts": dg.MetadataValue.json(outcome.rejected),
            "worst_quarantine_pct": round(outcome.worst_pct, 3),
            "threshold_pct": threshold,
            "quarantined": outcome.rows_quarantined,
            "schema_errors": dg.MetadataValue.json(sorted(set(outcome.schema_errors))),
            "reasons": dg.MetadataValue.json(outcome.reasons),
        },
        description=(
            "every batch valid"
            if outcome.passed
            else f"{len(outcome.rejected)} batch part(s) rejected: "
            f"see sfdc_quarantine.{obj.key_name}"
        ),
    )


def current_scd2_asset(obj: SObjectConfig, settings: SyncSettings) -> dg.AssetsDefinition:
    """`salesforce/current/<object>` + `salesforce/scd2/<object>`, one op, with their checks."""
    raw_key, current_key, scd2_key = (asset_key(layer, obj) for layer in ("raw", "current", "scd2"))
    doc = _doc_values(obj, settings)
    target = target_minutes(obj)

    def spec(key: dg.AssetKey, description: str) -> dg.AssetSpec:
        return dg.AssetSpec(
            key,
            deps=[raw_key],
            description=description,
            group_name=obj.group,
            kinds={"salesforce", warehouse_kind()},
            metadata=_catalog_metadata(obj),
            tags={"domain": obj.group},
        )

    @dg.multi_asset(
        name=current_scd2_op_name(obj),
        specs=[
            spec(current_key, CURRENT_DOC.format(**doc)),
            spec(scd2_key, SCD2_DOC.format(**doc)),
        ],
        partitions_def=daily_partitions(settings.partitions_start),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=apply_pool(obj),
        # Sync runs select every check but reconciled_with_salesforce (keys.run_checks),
        # reconciliation runs select it too: without subsetting the daemon cannot build
        # either job. The apply writes both tables whichever of them is selected.
        can_subset=True,
        retry_policy=RETRY,
        required_resource_keys={WAREHOUSE, LANDING},
        check_specs=[
            dg.AssetCheckSpec(
                CURRENT_ID_UNIQUE,
                asset=current_key,
                blocking=True,
                description=(
                    f"sfdc.{obj.key_name} has one row per Id, among the ids this run "
                    "touched (O(batch); current_id_unique_full checks the whole table "
                    "nightly)."
                ),
            ),
            dg.AssetCheckSpec(
                CDC_LAG,
                asset=current_key,
                description=(
                    "Now minus the newest CDC commit this run applied, against the "
                    f"{target or 60}-minute target (warn)."
                ),
            ),
            dg.AssetCheckSpec(
                RECONCILED,
                asset=current_key,
                description=(
                    f"A reconciliation run's proof for sfdc.{obj.key_name}: records compared "
                    "with a Bulk listing of Salesforce, how many differed (stale, missing, "
                    "purged, formula values), how many were repaired, and how many still "
                    "differ after the repair (the same listing compared again). Warns when "
                    "something had to be repaired; fails when drift remains."
                ),
            ),
        ],
    )
    def _current_scd2(context: dg.AssetExecutionContext) -> Iterator[Any]:
        warehouse = context.resources.warehouse
        landing = context.resources.landing.store()
        start, end = window_of(context)
        spec = registry_spec(warehouse, obj.name)
        outcome = ApplyOutcome()
        checks = context.selected_asset_check_keys
        unique_key = dg.AssetCheckKey(current_key, CURRENT_ID_UNIQUE)
        if spec is not None:
            outcome = apply_pending(
                warehouse,
                landing,
                spec,
                start.date(),
                end.date(),
                context.run.run_id,
                check_ids=unique_key in checks,
            )
        reconciled = None
        if reconciled_check(obj) in context.selected_asset_check_keys:
            if spec is not None:
                from sfdc_assets.reconcile import refold_differing

                refold_differing(warehouse, landing, spec, context.run.run_id)
            reconciled = reconciled_result(
                warehouse, landing, spec, obj.name, context.run.run_id, current_key
            )
        lag = lag_result(current_key, outcome.last_commit, target)
        if unique_key not in checks:
            unique = None
        elif spec is not None:
            unique = id_unique_result(
                current_key,
                outcome.id_rows_checked,
                outcome.duplicate_ids,
                outcome.id_check_scope or SCOPE_TOUCHED,
            )
        else:
            unique = dg.AssetCheckResult(
                check_name=CURRENT_ID_UNIQUE,
                asset_key=current_key,
                passed=True,
                metadata={"note": "nothing landed yet"},
            )
        warehouse.close()  # as in raw: release the writer lock before the events are written
        # Present (a float) only when this run applied a CDC change (lag_result).
        lag_value = lag.metadata.get("cdc_lag_seconds")
        lag_s = lag_value.value if isinstance(lag_value, dg.FloatMetadataValue) else None
        selected = context.selected_asset_keys
        if current_key in selected:
            yield dg.MaterializeResult(
                asset_key=current_key, metadata=outcome.current_metadata(lag_s)
            )
        if scd2_key in selected:
            yield dg.MaterializeResult(asset_key=scd2_key, metadata=outcome.scd2_metadata(lag_s))
        if unique is not None:
            yield unique
        if dg.AssetCheckKey(current_key, CDC_LAG) in checks:
            yield lag
        if reconciled is not None:
            yield reconciled

    return _current_scd2


def build_object_assets(
    obj: SObjectConfig, sync: SyncConfig | None = None
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The raw asset, the current+scd2 op and the reconciliation check of one object."""
    settings = (sync or load_config()).settings
    return [
        raw_asset(obj, settings),
        current_scd2_asset(obj, settings),
        live_count_check(obj.name, asset_key("current", obj), obj.key_name),
        id_unique_full_check(obj.name, asset_key("current", obj)),
    ]


def build_assets(
    sync: SyncConfig | None = None,
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """Every configured object's assets and checks."""
    sync = sync or load_config()
    out: list[dg.AssetsDefinition | dg.AssetChecksDefinition] = []
    for obj in sync.objects:
        out.extend(build_object_assets(obj, sync))
    return out
