"""The raw step of one object, in plain functions the raw asset calls in order.

1. `prepare_raw`: describe (new fields become columns, new PII columns are masked), the
   validation rules, the erased subjects, the fields awaiting a column-only fill.
2. `plan_raw`: from the run config alone, what to land: a Bulk read of the partition
   window (the default), the CDC/REST micro-batches the sensor landed (`landing_batches`),
   or a targeted re-backfill from a time (`since`); plus the fills, and whether records
   never read whole are re-read (micro-batch runs).
3. `land_raw`: carries the plan out against Salesforce and the landing store.
4. `RawWriter.process`: validates every landed part, appends the valid rows to raw,
   quarantines the rest, records each part in the ledger, and returns a `RawOutcome` the
   asset turns into its materialization and `raw_batch_valid` check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from sfdc_assets import batches
from sfdc_assets.checks import ObjectRules, validate_batch
from sfdc_assets.describe import describe_object
from sfdc_assets.fills import FILL_META, fields_to_fill, is_fill, land_fill
from sfdc_assets.incomplete import land_incomplete

if TYPE_CHECKING:  # pragma: no cover
    import polars as pl
    import pyarrow as pa

    from resources.landing import LandingStore, Manifest
    from sfdc_assets.checks import Validation
    from sfdc_assets.objects import ReconcileSettings
    from sfdc_assets.reconcile import ReconcilePlan, ReconcileReport
    from sync_engine.spec import ObjectSpec
    from sync_engine.warehouse import Warehouse

BACKFILL = "backfill"
REBACKFILL = "re-backfill"
MICRO_BATCHES = "micro-batches"
RECONCILE = "reconcile"
# A `since` re-backfill is open-ended: its read ends "now" (the reader clamps the end to
# the org's clock minus the lag), so its window end lies safely ahead.
OPEN_END = dt.timedelta(days=2)


class RawRunConfig(dg.Config):
    """What a raw materialization lands. Empty (the default): a Bulk backfill of exactly
    the partition window. The CDC sensor fills `landing_batches`; recovery fills `since`."""

    landing_batches: list[str] = []
    since: str | None = None
    lag_seconds: int | None = None
    # `recent`, `full` or `formulas`: a reconciliation (sfdc_assets/reconcile.py).
    reconcile: str | None = None


@dataclass(frozen=True)
class RawPlan:
    """What one raw run lands: a Bulk read or given micro-batches, plus fills."""

    object_name: str
    mode: str
    # The run's partition window; fills are registered on its first day.
    window: tuple[dt.datetime, dt.datetime]
    lag: dt.timedelta
    # The Bulk read `[start, end)`; None for a micro-batch run.
    read: tuple[dt.datetime, dt.datetime] | None = None
    batches: tuple[batches.PartRef, ...] = ()
    fill_fields: tuple[str, ...] = ()
    reconcile: ReconcilePlan | None = None

    @property
    def rereads_incomplete(self) -> bool:
        """Micro-batches may change records raw never held whole: re-read those by Id."""
        return self.mode == MICRO_BATCHES

    @property
    def fill_day(self) -> dt.date:
        """The ledger day of a fill (dated 1970, below every version): applied by this run."""
        return self.window[0].date()


def parse_landing_batch(name: str, text: str) -> batches.PartRef:
    """A `kind/object/day/batch_id` reference from the sensor's run config, of `name`."""
    kind, obj, day, batch_id = text.split("/")
    if obj != name:
        raise ValueError(f"landing batch {text} is not a {name} batch")
    return batches.PartRef(kind, obj, dt.date.fromisoformat(day), batch_id, 0)


def plan_raw(
    name: str,
    run: RawRunConfig,
    window: tuple[dt.datetime, dt.datetime],
    default_lag_seconds: int,
    now: dt.datetime,
    fill_fields: Sequence[str] = (),
    reconcile: ReconcileSettings | None = None,
    formula_fields: Sequence[str] = (),
) -> RawPlan:
    """Decide what a raw run of `name` lands, from its run config alone (no I/O).

    `window` is the run's partition window and `now` an aware UTC time; `reconcile` and
    `formula_fields` (the object's) are what a reconciliation run needs.
    """
    lag_s = default_lag_seconds if run.lag_seconds is None else run.lag_seconds
    mode = BACKFILL
    read: tuple[dt.datetime, dt.datetime] | None = window
    refs: tuple[batches.PartRef, ...] = ()
    rec: ReconcilePlan | None = None
    if run.reconcile:
        from sfdc_assets.objects import ReconcileSettings
        from sfdc_assets.reconcile import plan_reconcile

        mode, read = RECONCILE, None
        rec = plan_reconcile(
            name, run.reconcile, reconcile or ReconcileSettings(), now, formula_fields
        )
    elif run.landing_batches:
        mode, read = MICRO_BATCHES, None
        refs = tuple(parse_landing_batch(name, text) for text in run.landing_batches)
    elif run.since:
        start = dt.datetime.fromisoformat(run.since).astimezone(dt.UTC).replace(microsecond=0)
        mode, read = REBACKFILL, (start, now.astimezone(dt.UTC).replace(microsecond=0) + OPEN_END)
    return RawPlan(
        object_name=name,
        mode=mode,
        window=window,
        lag=dt.timedelta(seconds=lag_s),
        read=read,
        batches=refs,
        fill_fields=tuple(fill_fields),
        reconcile=rec,
    )


@dataclass(frozen=True)
class RawSchema:
    """The object as this run sees it: merge spec, describe, rules, erased subjects."""

    spec: ObjectSpec
    describe: Any
    # `sync_schema`'s result: `.change.added` / `.change.removed` fields.
    synced: Any
    rules: ObjectRules
    suppressed: Any
    fill_fields: tuple[str, ...]


def prepare_raw(
    client: Any,
    landing: LandingStore,
    warehouse: Warehouse,
    name: str,
    pii_fields: tuple[str, ...],
) -> RawSchema:
    """Describe, evolve the tables' schema and gather what validation needs."""
    from sync_engine.erasure import suppressed_hashes
    from sync_engine.masking import apply_masking
    from sync_engine.registry import sync_schema

    spec, describe = describe_object(client, landing, name, pii_fields)
    to_fill = fields_to_fill(warehouse, landing, name, spec)
    synced = sync_schema(warehouse, spec)
    # New PII columns are masked the day they appear (docs/security.md).
    apply_masking(warehouse, synced.spec, pii_fields)
    batches.ensure_ledger(warehouse)
    return RawSchema(
        spec=synced.spec,
        describe=describe,
        synced=synced,
        rules=ObjectRules.from_describe(describe, synced.spec),
        # Erased data subjects stay erased when Salesforce still serves them.
        suppressed=suppressed_hashes(warehouse, name),
        fill_fields=tuple(to_fill),
    )


def ensure_lookup_fields(
    warehouse: Warehouse, spec: ObjectSpec, lookup_fields: tuple[str, ...], plan: RawPlan
) -> None:
    """objects.yaml `lookup_fields`: an index each on current (DuckDB) or search
    optimization (Snowflake), so dbt reads a parent's children by value (docs/engine.md
    "Lookup columns"). Left to the next run by one that reads more than a day (the
    bootstrap, a re-backfill range): an index is built faster over loaded rows than kept
    up while loading them, and the bootstrap's apply is the one with the most memory at
    stake (DuckDB's indexes are held in memory, ~60 bytes a row each)."""
    from sync_engine.registry import ensure_lookups

    start, end = plan.window
    if lookup_fields and end - start <= dt.timedelta(days=1):
        ensure_lookups(warehouse, spec, lookup_fields)


@dataclass(frozen=True)
class LandedWork:
    """What a run validates: every landed batch, and how it was read."""

    manifests: list[Manifest]
    # Run metadata of the read: mode, Bulk window and jobs.
    read_meta: dict[str, Any]
    # Records re-read whole by REST (`incomplete.py`).
    reread_records: int = 0
    reconcile: ReconcileReport | None = None


def land_raw(
    plan: RawPlan,
    client: Any,
    landing: LandingStore,
    warehouse: Warehouse,
    schema: RawSchema,
    run_id: str = "",
) -> LandedWork:
    """Land (Bulk) or look up (micro-batches) what the plan names, then fills and re-reads."""
    if plan.reconcile is not None:
        return _reconcile(plan, plan.reconcile, client, landing, warehouse, schema, run_id)
    if plan.read is None:
        manifests = [batches.manifest_of(landing, ref) for ref in plan.batches]
        read_meta: dict[str, Any] = {"mode": plan.mode}
    else:
        manifests, read_meta = _bulk_read(plan, client, landing, schema.describe)
    fills = land_fill(client, landing, plan.object_name, schema.describe, list(plan.fill_fields))
    manifests = fills + manifests
    repairs: list[Manifest] = []
    if plan.rereads_incomplete:
        repairs = land_incomplete(
            client, landing, warehouse, plan.object_name, schema.spec, schema.describe, manifests
        )
    return LandedWork(manifests + repairs, read_meta, sum(m.rows for m in repairs))


def _reconcile(
    plan: RawPlan,
    rec: ReconcilePlan,
    client: Any,
    landing: LandingStore,
    warehouse: Warehouse,
    schema: RawSchema,
    run_id: str,
) -> LandedWork:
    from sfdc_assets.reconcile import reconcile

    if not run_id:
        raise ValueError("a reconciliation needs the run id (its report is named by it)")
    manifests, report = reconcile(
        rec, client, landing, warehouse, schema.spec, schema.describe, plan.lag, run_id
    )
    fills = land_fill(client, landing, plan.object_name, schema.describe, list(plan.fill_fields))
    meta = {"mode": plan.mode, **report.metadata()}
    return LandedWork(fills + manifests, meta, report.reread, report)


def _bulk_read(
    plan: RawPlan, client: Any, landing: LandingStore, describe: Any
) -> tuple[list[Manifest], dict[str, Any]]:
    from resources.salesforce.bulk import BulkOptions

    assert plan.read is not None
    start, end = plan.read
    reader = client.bulk(landing, BulkOptions(lag=plan.lag))
    result = reader.backfill(plan.object_name, start, end, describe=describe)
    meta = {
        "mode": plan.mode,
        "window_start": start.isoformat(),
        "window_end": result.window.end.isoformat() if result.window else start.isoformat(),
        "bulk_jobs": len(result.jobs),
        "bulk_job_ids": ", ".join(result.jobs),
    }
    return result.manifests, meta


@dataclass(frozen=True)
class PartOutcome:
    """What validating and appending one landed part did."""

    key: str
    accepted: bool
    rows_landed: int
    rows_appended: int
    rows_quarantined: int
    rate_pct: float
    reasons: Mapping[str, int] = field(default_factory=dict)
    schema_errors: tuple[str, ...] = ()


@dataclass
class RawOutcome:
    """Totals of a raw run over its parts, for its materialization and check."""

    parts: int = 0
    rows_landed: int = 0
    rows_appended: int = 0
    rows_quarantined: int = 0
    worst_pct: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)

    def add(self, part: PartOutcome) -> None:
        """Count one part in."""
        self.parts += 1
        self.rows_landed += part.rows_landed
        self.rows_appended += part.rows_appended
        self.rows_quarantined += part.rows_quarantined
        self.worst_pct = max(self.worst_pct, part.rate_pct)
        for reason, n in part.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        if not part.accepted:
            self.rejected.append(part.key)
            self.schema_errors.extend(part.schema_errors)

    @property
    def passed(self) -> bool:
        """No part was rejected (the blocking check passes)."""
        return not self.rejected

    def totals(self) -> dict[str, int]:
        """Parts and row counts, as run metadata."""
        return {
            "parts": self.parts,
            "rows_landed": self.rows_landed,
            "rows_appended": self.rows_appended,
            "rows_quarantined": self.rows_quarantined,
        }


def accepts(schema_errors: Sequence[str], rate_pct: float, threshold_pct: float) -> bool:
    """A part is appended when it has no schema-level failure and few enough bad rows."""
    return not schema_errors and rate_pct <= threshold_pct


def ledger_days(
    change_days: Sequence[dt.date],
    part_day: dt.date,
    fill: bool,
    fill_day: dt.date,
) -> tuple[dt.date, dt.date]:
    """The change days a part covers in the ledger (the apply step selects parts by them).

    An empty part covers its landing day. A fill's rows are dated 1970 (below every
    version), so it is registered on the run's own first day: this run applies it.
    """
    if fill:
        return fill_day, fill_day
    return min(change_days, default=part_day), max(change_days, default=part_day)


def replay_range(manifests: Iterable[Manifest]) -> tuple[str, str] | None:
    """The lowest first and highest last replay id of the CDC batches, if any."""
    replays = [
        (m.meta["first_replay"], m.meta["last_replay"])
        for m in manifests
        if m.meta.get("first_replay")
    ]
    if not replays:
        return None
    return min(r[0] for r in replays), max(r[1] for r in replays)


def to_changes(spec: ObjectSpec, manifest: Manifest, frame: pl.DataFrame) -> pa.Table:
    """Landed rows -> engine change rows: Bulk parts are snapshots (or fills of new fields,
    when the manifest names them), micro-batches already are change rows (CDC events or
    REST snapshots)."""
    from resources.salesforce.to_changes import fill_batch, snapshot_batch
    from sync_engine.changes import conform_batch

    if manifest.kind == "backfill" and is_fill(manifest):
        return fill_batch(spec, frame, manifest.meta[FILL_META])
    if manifest.kind == "backfill":
        return snapshot_batch(spec, frame, source=manifest.meta.get("source", "bulk"))
    return conform_batch(spec, frame.to_arrow())


def whole_batch(
    changes: pa.Table, checked: Validation, rate_pct: float, threshold_pct: float
) -> pl.DataFrame:
    """Every row of a rejected batch, for quarantine: failing rows keep their reasons, the
    others say why the batch as a whole was refused."""
    import polars as pl

    from sfdc_assets.checks import BATCH_REJECTED

    if checked.schema_errors:
        return checked.quarantine
    frame = pl.from_arrow(changes)
    assert isinstance(frame, pl.DataFrame)
    reason = (
        f"{BATCH_REJECTED}: {rate_pct:.1f}% of rows failed validation (threshold {threshold_pct}%)"
    )
    rest = frame.filter(~pl.col("change_id").is_in(checked.quarantine["change_id"].implode()))
    rest = rest.select(
        pl.col("change_id"), pl.col("record_id"), pl.lit(reason).alias("reason"), pl.col("payload")
    )
    return pl.concat([checked.quarantine, rest], how="vertical_relaxed")


@dataclass(frozen=True)
class RawWriter:
    """Validates landed parts and writes them: raw, quarantine, the ledger."""

    object_name: str
    warehouse: Warehouse
    landing: LandingStore
    schema: RawSchema
    # Naive UTC: the validating clock and every row's ingest time.
    now: dt.datetime
    threshold_pct: float
    run_id: str
    fill_day: dt.date

    def process(self, manifests: Iterable[Manifest]) -> RawOutcome:
        """Every part of every manifest, in order."""
        outcome = RawOutcome()
        for manifest in manifests:
            for index in range(len(manifest.parts)):
                outcome.add(self.part(manifest, index))
        return outcome

    def part(self, manifest: Manifest, index: int) -> PartOutcome:
        """Validate one part; append it whole or quarantine it whole; record it."""
        from sync_engine.apply import append_raw
        from sync_engine.erasure import without_suppressed

        spec = self.schema.spec
        ref = batches.PartRef.of(manifest, index)
        frame = batches.read_part(self.landing, manifest, index)
        changes, _ = without_suppressed(to_changes(spec, manifest, frame), self.schema.suppressed)
        checked = validate_batch(self.schema.rules, changes, self.now)
        rate = checked.rate_pct()
        ok = accepts(checked.schema_errors, rate, self.threshold_pct)
        appended = 0
        quarantined = checked.quarantine
        if ok:
            batches.write_validated(self.landing, ref, checked.good)
            appended = append_raw(
                self.warehouse,
                spec,
                checked.good,
                batch_id=ref.label,
                now=self.now,
                read_id=ref.read_id,
            )
        else:
            quarantined = whole_batch(changes, checked, rate, self.threshold_pct)
        batches.quarantine(self.warehouse, spec.table, quarantined, ref.label, self.now)
        day_min, day_max = ledger_days(
            changes.column("change_date").to_pylist(), ref.day, is_fill(manifest), self.fill_day
        )
        batches.register(
            self.warehouse,
            batches.LedgerRow(
                self.object_name,
                ref,
                "valid" if ok else "rejected",
                day_min,
                day_max,
                changes.num_rows,
                appended,
                quarantined.height,
                manifest.meta.get("source", manifest.kind),
                self.run_id,
                self.now,
            ),
        )
        return PartOutcome(
            key=ref.key,
            accepted=ok,
            rows_landed=changes.num_rows,
            rows_appended=appended,
            rows_quarantined=quarantined.height,
            rate_pct=rate,
            reasons=dict(checked.reasons),
            schema_errors=tuple(checked.schema_errors),
        )
