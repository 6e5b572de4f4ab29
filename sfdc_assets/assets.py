"""The per-object asset factory: raw, current and scd2 of every configured object.

`build_object_assets(obj)` returns, for one `objects.yaml` entry:

- `salesforce/raw/<object>`: lands changes (a Bulk backfill of the partition window, given
  CDC/REST micro-batches, or a targeted re-backfill from a time), validates them, appends
  the valid rows to `sfdc_raw.<object>`; blocking check `raw_batch_valid`.
- `salesforce/current/<object>` + `salesforce/scd2/<object>`: one op (the engine writes
  both in one transaction) applying every validated batch of the window not applied yet;
  checks `current_id_unique` (blocking) and `cdc_lag` (warn).
- `live_count_matches_salesforce`: the reconciliation check on current (warn, scheduled).

Partitions are UTC days of the change date; `BackfillPolicy.single_run()` turns a
partition-range backfill into one run, hence one Bulk job (split by Id keyset only when
large), not one per day.
"""

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import dagster as dg

from sfdc_assets import batches
from sfdc_assets.checks import (
    CDC_LAG,
    CURRENT_ID_UNIQUE,
    RAW_VALID,
    ObjectRules,
    id_unique_result,
    lag_result,
    live_count_check,
    validate_batch,
)
from sfdc_assets.objects import SObjectConfig, SyncConfig, load_config
from sfdc_assets.partitions import BEGINNING, daily_partitions, window_of
from sfdc_assets.resources import LANDING, SALESFORCE, WAREHOUSE, warehouse_kind

SALESFORCE_POOL = "salesforce_api"
LAYERS = ("raw", "current", "scd2")
# Transient failures (HTTP 503, gRPC UNAVAILABLE, a DuckDB file lock held too long) are
# retried inside the clients first; this covers what escapes them: ~10 s, 20 s, 40 s.
RETRY = dg.RetryPolicy(
    max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
OBJECT_TAG = "sfdc/object"
DESCRIBE_CHECKPOINT = "describe/{name}"
# Fields added to an object whose existing rows still await their column-only fill
# (DESIGN §5): written before the column is added, cleared once the fill is in raw.
FILL_CHECKPOINT = "fill/{name}"
FILL_META = "fill_fields"
# The fill reads every row: the reader takes a window, so its end lies two days ahead of
# the client's estimate of the org's clock (a lower bound, up to seconds behind).
FILL_LOOKAHEAD = dt.timedelta(days=2)


def asset_key(layer: str, obj: SObjectConfig | str) -> dg.AssetKey:
    """`["salesforce", <layer>, <object lower-case>]`."""
    name = obj.key_name if isinstance(obj, SObjectConfig) else obj.lower()
    return dg.AssetKey(["salesforce", layer, name])


def apply_pool(obj: SObjectConfig) -> str:
    """The pool that serializes one object's applies (the engine needs one writer)."""
    return f"sfdc_apply_{obj.key_name}"


class RawRunConfig(dg.Config):
    """What a raw materialization lands. Empty (the default): a Bulk backfill of exactly
    the partition window. The CDC sensor fills `landing_batches`; recovery fills `since`."""

    landing_batches: list[str] = []
    since: str | None = None
    lag_seconds: int | None = None


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


def _describe(client: Any, landing: Any, obj: SObjectConfig) -> tuple[Any, Any]:
    """(engine spec, extraction describe) from one describe call; cached for the sensor."""
    from resources.salesforce.rest import parse_describe
    from sync_engine.spec import ObjectSpec

    body = client.rest.describe_body(obj.name)
    landing.write_checkpoint(
        DESCRIBE_CHECKPOINT.format(name=obj.name),
        {"name": body["name"], "keyPrefix": body.get("keyPrefix"), "fields": body["fields"]},
    )
    return ObjectSpec.from_describe(body), parse_describe(body, obj.pii_fields)


def registry_spec(warehouse: Any, name: str) -> Any:
    """The merge spec from `sfdc_meta.schema_registry` (no Salesforce call): described and
    removed fields, as `sync_schema` returned it to the raw step."""
    from sync_engine.spec import FieldSpec, ObjectSpec
    from sync_engine.warehouse import qualified, quote

    q = lambda n: quote(warehouse, n)  # noqa: E731
    reg = qualified(warehouse, warehouse.schema_names.meta, "schema_registry")
    try:
        rows = warehouse.query(
            f"SELECT {q('field_name')}, {q('sf_type')}, {q('warehouse_type')} FROM {reg} "
            f"WHERE {q('object_name')} = '{name}' ORDER BY {q('first_seen_at')}, "
            f"{q('field_name')}"
        )
    except Exception:  # no registry yet: nothing was ever landed
        return None
    fields = []
    for field_name, sf_type, label in rows:
        scale = int(label.rstrip(")").split(",")[1]) if label.startswith("decimal(") else None
        fields.append(FieldSpec(field_name, sf_type, scale))
    return ObjectSpec(name, tuple(fields)) if fields else None


def _to_changes(spec: Any, manifest: Any, frame: Any) -> Any:
    """Landed rows -> engine change rows: Bulk parts are snapshots (or fills of new fields,
    when the manifest names them), micro-batches already are change rows (CDC events or
    REST snapshots)."""
    from resources.salesforce.to_changes import fill_batch, snapshot_batch
    from sync_engine.changes import conform_batch

    if manifest.kind == "backfill" and manifest.meta.get(FILL_META):
        return fill_batch(spec, frame, manifest.meta[FILL_META])
    if manifest.kind == "backfill":
        return snapshot_batch(spec, frame, source=manifest.meta.get("source", "bulk"))
    return conform_batch(spec, frame.to_arrow())


def _fields_to_fill(warehouse: Any, landing: Any, name: str, spec: Any) -> list[str]:
    """Described fields whose existing rows need a column-only fill: the ones the registry
    does not know yet when the object's tables hold rows, plus any a crashed run left.

    Recorded in a checkpoint before `sync_schema` adds the columns: once a field is
    registered it is no longer new, so a crash before the fill landed would lose it.
    """
    from sync_engine.warehouse import qualified

    saved = landing.read_checkpoint(FILL_CHECKPOINT.format(name=name)) or {}
    described = {f.name for f in spec.fields}
    fields = [f for f in saved.get("fields", []) if f in described]
    registered = registry_spec(warehouse, name)
    if registered is not None:
        current = qualified(warehouse, warehouse.schema_names.current, spec.table)
        if warehouse.query(f"SELECT COUNT(*) FROM (SELECT 1 FROM {current} LIMIT 1) t")[0][0]:
            known = {f.name for f in registered.fields}
            fields += [f.name for f in spec.fields if f.name not in known and f.name not in fields]
    if fields:
        landing.write_checkpoint(FILL_CHECKPOINT.format(name=name), {"fields": fields})
    return fields


def _land_fill(
    client: Any,
    landing: Any,
    name: str,
    describe: Any,
    fields: list[str],
) -> list[Any]:
    """The column-only Bulk queryAll (`Id`, `SystemModstamp`, the new fields) over every
    synced day, landed as manifests marked with the fields they fill."""
    from resources.salesforce.bulk import BulkOptions

    if not fields:
        return []
    end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
    # No read lag: a fill's version sorts below every real change, so reading the newest
    # state cannot undo one, and the lag would leave recently modified rows unfilled.
    reader = client.bulk(landing, BulkOptions(lag=-FILL_LOOKAHEAD))
    names = ["Id", "SystemModstamp", *fields]
    result = reader.backfill(
        name, BEGINNING, end, fields=names, describe=describe, meta={FILL_META: fields}
    )
    return result.manifests


# Change types that carry a whole record; UPDATE and DELETE events carry only what changed.
WHOLE_CHANGES = ("SNAPSHOT", "CREATE", "UNDELETE")
PARTIAL_CHANGES = ("UPDATE", "DELETE")
IN_LIST_CHUNK = 1000


def _land_incomplete(
    client: Any,
    landing: Any,
    warehouse: Any,
    obj: SObjectConfig,
    spec: Any,
    describe: Any,
    manifests: list[Any],
) -> list[Any]:
    """REST snapshots of the records these micro-batches change that were never read whole.

    A CDC UPDATE carries only the changed fields. A record whose whole image never reached
    raw (its last change fell in a backfill's read lag, or it changes faster than the lag
    so every lagged Bulk window misses it) would keep null owner, name... in current. Such
    records are re-read by Id (REST is not lagged) in the same run, so the apply gets them
    whole. After the bootstrap nearly every changed record is known: no call at all.
    """
    import hashlib

    from resources.salesforce.to_changes import land_rest_snapshots
    from sync_engine.warehouse import RECORD_ID_RE, qualified, quote

    partial: set[str] = set()
    whole: set[str] = set()
    for manifest in manifests:
        if manifest.kind == "backfill" or manifest.meta.get("source") == "rest":
            continue
        for index in range(len(manifest.parts)):
            frame = batches.read_part(landing, manifest, index)
            for kind, rid in zip(frame["change_type"], frame["record_id"], strict=True):
                if kind in WHOLE_CHANGES:
                    whole.add(rid)
                elif kind in PARTIAL_CHANGES and RECORD_ID_RE.fullmatch(rid or ""):
                    partial.add(rid)
    candidates = sorted(partial - whole)
    if not candidates:
        return []
    q = lambda n: quote(warehouse, n)  # noqa: E731
    raw = qualified(warehouse, warehouse.schema_names.raw, spec.table)
    kinds = ", ".join(f"'{k}'" for k in WHOLE_CHANGES)
    seen: set[str] = set()
    for start in range(0, len(candidates), IN_LIST_CHUNK):
        ids = ", ".join(f"'{r}'" for r in candidates[start : start + IN_LIST_CHUNK])
        seen |= {
            row[0]
            for row in warehouse.query(
                f"SELECT DISTINCT {q('record_id')} FROM {raw} WHERE {q('record_id')} IN ({ids}) "
                f"AND {q('change_type')} IN ({kinds})"
            )
        }
    missing = set(candidates) - seen
    if not missing:
        return []
    tag = hashlib.sha256(",".join(sorted(missing)).encode()).hexdigest()[:16]
    return land_rest_snapshots(
        client,
        landing,
        f"incomplete_{obj.key_name}",
        {obj.name: missing},
        {obj.name: (spec, describe)},
        tag,
        "records never read whole",
    )


def _manifests_for_run(
    context: dg.AssetExecutionContext,
    run: RawRunConfig,
    obj: SObjectConfig,
    client: Any,
    landing: Any,
    describe: Any,
    lag_s: int,
) -> tuple[list[Any], dict[str, Any]]:
    """Land (Bulk) or look up (micro-batches) what this run validates and appends."""
    from resources.salesforce.bulk import BulkOptions

    if run.landing_batches:
        manifests = []
        for ref_text in run.landing_batches:
            kind, name, day, batch_id = ref_text.split("/")
            if name != obj.name:
                raise ValueError(f"landing batch {ref_text} is not a {obj.name} batch")
            ref = batches.PartRef(kind, name, dt.date.fromisoformat(day), batch_id, 0)
            manifests.append(batches.manifest_of(landing, ref))
        return manifests, {"mode": "micro-batches"}
    if run.since:
        start = dt.datetime.fromisoformat(run.since).astimezone(dt.UTC).replace(microsecond=0)
        # Open-ended: up to now minus the lag (the reader clamps it).
        end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
        mode = "re-backfill"
    else:
        start, end = window_of(context)
        mode = "backfill"
    reader = client.bulk(landing, BulkOptions(lag=dt.timedelta(seconds=lag_s)))
    result = reader.backfill(obj.name, start, end, describe=describe)
    meta = {
        "mode": mode,
        "window_start": start.isoformat(),
        "window_end": result.window.end.isoformat() if result.window else start.isoformat(),
        "bulk_jobs": len(result.jobs),
        "bulk_job_ids": ", ".join(result.jobs),
    }
    return result.manifests, meta


def build_object_assets(
    obj: SObjectConfig, sync: SyncConfig | None = None
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The raw asset, the current+scd2 op and the reconciliation check of one object."""
    sync = sync or load_config()
    settings = sync.settings
    partitions = daily_partitions(settings.partitions_start)
    raw_key, current_key, scd2_key = (asset_key(layer, obj) for layer in LAYERS)
    kinds = {"salesforce", warehouse_kind()}
    fmt = {
        "name": obj.name,
        "table": obj.key_name,
        "group": obj.group,
        "lag": settings.bulk_lag_seconds,
    }
    meta = {"salesforce/object": obj.name, "salesforce/mode": obj.mode}
    if obj.pii_fields:
        meta["salesforce/pii_fields"] = ", ".join(obj.pii_fields)

    @dg.asset(
        key=raw_key,
        description=RAW_DOC.format(**fmt),
        group_name=obj.group,
        kinds={*kinds, "parquet"},
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=SALESFORCE_POOL,
        retry_policy=RETRY,
        metadata=meta,
        tags={"domain": obj.group},
        required_resource_keys={WAREHOUSE, SALESFORCE, LANDING},
        check_specs=[
            dg.AssetCheckSpec(
                RAW_VALID,
                asset=raw_key,
                blocking=True,
                description=(
                    "Every landed batch passes the Pandera schema of "
                    f"{obj.name}: a batch with more than "
                    f"{settings.quarantine_threshold_pct}% quarantined rows, or a schema-level "
                    "failure, is rejected and blocks current, scd2 and dbt."
                ),
            )
        ],
    )
    def _raw(context: dg.AssetExecutionContext, config: RawRunConfig) -> Iterator[Any]:
        from sync_engine.apply import append_raw
        from sync_engine.erasure import suppressed_hashes, without_suppressed
        from sync_engine.masking import apply_masking
        from sync_engine.registry import sync_schema

        warehouse = context.resources.warehouse
        landing = context.resources.landing.store()
        client = context.resources.salesforce.client({obj.name: list(obj.pii_fields)})
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        lag_s = settings.bulk_lag_seconds if config.lag_seconds is None else config.lag_seconds
        try:
            spec, describe = _describe(client, landing, obj)
            to_fill = _fields_to_fill(warehouse, landing, obj.name, spec)
            synced = sync_schema(warehouse, spec)
            spec = synced.spec
            # New PII columns are masked the day they appear (docs/security.md).
            apply_masking(warehouse, spec, obj.pii_fields)
            batches.ensure_ledger(warehouse)
            # Erased data subjects stay erased when Salesforce still serves them.
            suppressed = suppressed_hashes(warehouse, obj.name)
            rules = ObjectRules.from_describe(describe, spec)
            manifests, run_meta = _manifests_for_run(
                context, config, obj, client, landing, describe, lag_s
            )
            fills = _land_fill(client, landing, obj.name, describe, to_fill)
            manifests = fills + manifests
            repairs = []
            if config.landing_batches:
                repairs = _land_incomplete(
                    client, landing, warehouse, obj, spec, describe, manifests
                )
                manifests = manifests + repairs
            totals = {"parts": 0, "rows_landed": 0, "rows_appended": 0, "rows_quarantined": 0}
            reasons: dict[str, int] = {}
            rejected: list[str] = []
            schema_errors: list[str] = []
            worst = 0.0
            replays = [
                (m.meta.get("first_replay"), m.meta.get("last_replay"))
                for m in manifests
                if m.meta.get("first_replay")
            ]
            for manifest in manifests:
                for index in range(len(manifest.parts)):
                    ref = batches.PartRef.of(manifest, index)
                    frame = batches.read_part(landing, manifest, index)
                    changes = _to_changes(spec, manifest, frame)
                    changes, _ = without_suppressed(changes, suppressed)
                    fill = bool(manifest.meta.get(FILL_META))
                    checked = validate_batch(rules, changes, now)
                    rate = checked.rate_pct()
                    worst = max(worst, rate)
                    ok = not checked.schema_errors and rate <= settings.quarantine_threshold_pct
                    appended = 0
                    quarantined = checked.quarantine
                    if ok:
                        batches.write_validated(landing, ref, checked.good)
                        appended = append_raw(
                            warehouse, spec, checked.good, batch_id=ref.label, now=now
                        )
                    else:
                        rejected.append(ref.key)
                        schema_errors.extend(checked.schema_errors)
                        quarantined = _whole_batch(changes, checked, rate, settings)
                    batches.quarantine(warehouse, spec.table, quarantined, ref.label, now)
                    days = changes.column("change_date")
                    dmin = min(days.to_pylist(), default=None) or ref.day
                    dmax = max(days.to_pylist(), default=None) or ref.day
                    if fill:  # dated 1970 (below every version): applied by this run
                        dmin = dmax = window_of(context)[0].date()
                    batches.register(
                        warehouse,
                        batches.LedgerRow(
                            obj.name,
                            ref,
                            "valid" if ok else "rejected",
                            dmin,
                            dmax,
                            changes.num_rows,
                            appended,
                            quarantined.height,
                            manifest.meta.get("source", manifest.kind),
                            context.run_id,
                            now,
                        ),
                    )
                    for reason, n in checked.reasons.items():
                        reasons[reason] = reasons.get(reason, 0) + n
                    totals["parts"] += 1
                    totals["rows_landed"] += changes.num_rows
                    totals["rows_appended"] += appended
                    totals["rows_quarantined"] += quarantined.height
            if to_fill:  # in raw and in the ledger: the next run need not fill again
                landing.clear_checkpoint(FILL_CHECKPOINT.format(name=obj.name))
            usage = client.governor.snapshot()
        finally:
            client.close()
            # Let go of DuckDB's single-writer lock before Dagster records the results: a
            # range materialization writes one event per partition, which can take minutes.
            warehouse.close()
        metadata: dict[str, Any] = {
            **run_meta,
            **totals,
            "batches": len(manifests),
            "rejected_parts": len(rejected),
            "quarantine_reasons": dg.MetadataValue.json(reasons),
            "api_requests": usage["api_requests"],
            "bulk_jobs_created": usage["bulk_jobs"],
            "schema_added_fields": ", ".join(synced.change.added),
            "schema_removed_fields": ", ".join(synced.change.removed),
            "schema_filled_fields": ", ".join(to_fill),
            "records_reread_whole": sum(m.rows for m in repairs),
        }
        if replays:
            metadata["replay_id_first"] = min(r[0] for r in replays)
            metadata["replay_id_last"] = max(r[1] for r in replays)
        context.log.info(
            "%s raw: %d rows landed, %d appended, %d quarantined, %d part(s) rejected",
            obj.name,
            totals["rows_landed"],
            totals["rows_appended"],
            totals["rows_quarantined"],
            len(rejected),
        )
        yield dg.MaterializeResult(asset_key=raw_key, metadata=metadata)
        yield dg.AssetCheckResult(
            check_name=RAW_VALID,
            asset_key=raw_key,
            passed=not rejected,
            metadata={
                "rejected_parts": dg.MetadataValue.json(rejected),
                "worst_quarantine_pct": round(worst, 3),
                "threshold_pct": settings.quarantine_threshold_pct,
                "quarantined": totals["rows_quarantined"],
                "schema_errors": dg.MetadataValue.json(sorted(set(schema_errors))),
                "reasons": dg.MetadataValue.json(reasons),
            },
            description=(
                "every batch valid"
                if not rejected
                else f"{len(rejected)} batch part(s) rejected: see sfdc_quarantine.{obj.key_name}"
            ),
        )

    @dg.multi_asset(
        name=f"{obj.key_name}_current_scd2",
        specs=[
            dg.AssetSpec(
                current_key,
                deps=[raw_key],
                description=CURRENT_DOC.format(**fmt),
                group_name=obj.group,
                kinds=kinds,
                metadata=meta,
                tags={"domain": obj.group},
            ),
            dg.AssetSpec(
                scd2_key,
                deps=[raw_key],
                description=SCD2_DOC.format(**fmt),
                group_name=obj.group,
                kinds=kinds,
                metadata=meta,
                tags={"domain": obj.group},
            ),
        ],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=apply_pool(obj),
        retry_policy=RETRY,
        required_resource_keys={WAREHOUSE, LANDING},
        check_specs=[
            dg.AssetCheckSpec(
                CURRENT_ID_UNIQUE,
                asset=current_key,
                blocking=True,
                description=f"sfdc.{obj.key_name} has one row per Id.",
            ),
            dg.AssetCheckSpec(
                CDC_LAG,
                asset=current_key,
                description=(
                    "Now minus the newest CDC commit this run applied, against the "
                    f"{obj.freshness_minutes or 60}-minute target (warn)."
                ),
            ),
        ],
    )
    def _current_scd2(context: dg.AssetExecutionContext) -> Iterator[Any]:
        from sync_engine.apply import apply_batch

        warehouse = context.resources.warehouse
        landing = context.resources.landing.store()
        start, end = window_of(context)
        spec = registry_spec(warehouse, obj.name)
        counts = {
            k: 0
            for k in (
                "batches",
                "changes",
                "applied",
                "records",
                "inserted",
                "updated",
                "deleted",
                "noop",
                "late",
                "history_rows",
            )
        }
        last_commit: dt.datetime | None = None
        if spec is not None:
            batches.ensure_ledger(warehouse)
            for ref in batches.pending(warehouse, obj.name, start.date(), end.date()):
                table = batches.read_validated(landing, ref)
                result = apply_batch(warehouse, spec, table, batch_id=ref.label)
                batches.mark_applied(
                    warehouse,
                    obj.name,
                    ref,
                    result.batch_id,
                    dt.datetime.now(dt.UTC).replace(tzinfo=None),
                )
                counts["batches"] += 1
                for k, v in result.as_dict().items():
                    if k in counts:
                        counts[k] += int(v)
                last_commit = _newest_cdc_commit(table, last_commit)
        lag = lag_result(current_key, last_commit, obj.freshness_minutes)
        common = {
            "batches_applied": counts["batches"],
            "changes": counts["changes"],
            "changes_applied": counts["applied"],
            "records_touched": counts["records"],
            "late_changes": counts["late"],
        }
        if last_commit is not None:
            common["cdc_lag_seconds"] = lag.metadata["cdc_lag_seconds"].value
        if spec is not None:
            unique = id_unique_result(warehouse, spec, current_key)
        else:
            unique = dg.AssetCheckResult(
                check_name=CURRENT_ID_UNIQUE,
                asset_key=current_key,
                passed=True,
                metadata={"note": "nothing landed yet"},
            )
        warehouse.close()  # as in raw: release the writer lock before the events are written
        yield dg.MaterializeResult(
            asset_key=current_key,
            metadata={
                **common,
                "inserts": counts["inserted"],
                "updates": counts["updated"],
                "deletes": counts["deleted"],
                "noop_changes": counts["noop"],
            },
        )
        yield dg.MaterializeResult(
            asset_key=scd2_key, metadata={**common, "history_rows": counts["history_rows"]}
        )
        yield unique
        yield lag

    return [_raw, _current_scd2, live_count_check(obj.name, current_key, obj.key_name)]


def _whole_batch(changes: Any, checked: Any, rate: float, settings: Any) -> Any:
    """Every row of a rejected batch, for quarantine: failing rows keep their reasons, the
    others say why the batch as a whole was refused."""
    import polars as pl

    from sfdc_assets.checks import BATCH_REJECTED

    if checked.schema_errors:
        return checked.quarantine
    frame = pl.from_arrow(changes)
    assert isinstance(frame, pl.DataFrame)
    reason = (
        f"{BATCH_REJECTED}: {rate:.1f}% of rows failed validation "
        f"(threshold {settings.quarantine_threshold_pct}%)"
    )
    rest = frame.filter(~pl.col("change_id").is_in(checked.quarantine["change_id"].implode()))
    rest = rest.select(
        pl.col("change_id"), pl.col("record_id"), pl.lit(reason).alias("reason"), pl.col("payload")
    )
    return pl.concat([checked.quarantine, rest], how="vertical_relaxed")


def _newest_cdc_commit(table: Any, current: dt.datetime | None) -> dt.datetime | None:
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return current
    cdc = table.filter(pc.equal(table.column("source"), "cdc"))
    newest = pc.max(cdc.column("commit_ts")).as_py() if cdc.num_rows else None
    if newest is None:
        return current
    return newest if current is None or newest > current else current


def build_assets(
    sync: SyncConfig | None = None,
) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """Every configured object's assets and checks."""
    sync = sync or load_config()
    out: list[dg.AssetsDefinition | dg.AssetChecksDefinition] = []
    for obj in sync.objects:
        out.extend(build_object_assets(obj, sync))
    return out


def run_tags(obj: SObjectConfig | str) -> dict[str, str]:
    """Tags every run of an object carries (run-queue limit per object: dagster.yaml)."""
    name = obj.name if isinstance(obj, SObjectConfig) else obj
    return {OBJECT_TAG: name}


def describe_cache(landing: Any, name: str) -> dict[str, Any] | None:
    """The describe the raw asset last saw (the CDC sensor types events with it)."""
    return landing.read_checkpoint(DESCRIBE_CHECKPOINT.format(name=name))


def dumps(value: Any) -> str:
    """Compact JSON (run config and cursors)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
