"""Checks of the per-object assets, next to the rules they enforce (DESIGN §6).

- `raw_batch_valid` (raw, blocking): every landed batch is validated by a Pandera (polars)
  schema built from the object's describe: types, Id format and key prefix, required
  fields, sane timestamps, known change types. Rows that fail go to
  `sfdc_quarantine.<object>` with their reasons; a batch whose quarantined share passes
  the threshold, or that fails at schema level (a missing or mistyped column), is rejected
  whole and the check fails, so current, scd2 and dbt do not run.
- `current_id_unique` (current, blocking): one row per Id in `sfdc.<object>`, among the
  ids the run touched (only a write can make a duplicate, and a run writes only those):
  O(batch), not a count over the whole table on every CDC run.
- `current_id_unique_full` (current, error, nightly): the same rule over the whole table,
  run by the `sfdc_nightly_checks` schedule (a duplicate written outside the engine, e.g.
  by hand or by a restore, is found there).
- `cdc_lag` (current, warn): now minus the newest CDC commit applied, against the object's
  freshness target.
- `live_count_matches_salesforce` (current, warn, on demand / scheduled): Salesforce
  `SELECT COUNT()` of live rows against the warehouse's live rows; hourly, but for the
  `mode: polling` objects (Task/Event: ~500M rows), counted nightly (`counted_nightly`).

Pandera is imported inside the functions that use it (~0.5 s), not at definitions load.
"""

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
import pyarrow as pa

# Check names are constants in keys.py, beside the asset keys the sensors request them with.
from sfdc_assets.keys import (
    CDC_LAG,
    CURRENT_ID_UNIQUE,
    CURRENT_ID_UNIQUE_FULL,
    RECONCILE,
    RECONCILED,
    full_unique_check,
    reconcile_check,
)
from sync_engine.changes import CHANGE_TYPES, SOURCES
from sync_engine.dialect import dialect_of
from sync_engine.warehouse import RECORD_ID_RE

if TYPE_CHECKING:  # pragma: no cover
    from resources.landing import LandingStore
    from resources.salesforce.rest import ObjectDescribe
    from sync_engine.spec import ObjectSpec
    from sync_engine.warehouse import Warehouse

GAP_TYPES = ("GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW")
# Salesforce went live in 1999; anything earlier, or more than a day ahead of the
# validating clock, is a corrupt timestamp, not a change.
EARLIEST_SANE = dt.datetime(1999, 1, 1)
FUTURE_TOLERANCE = dt.timedelta(days=1)
# Only audit stamps must lie in the past: business datetimes (Event.EndDateTime, a close
# date) are legitimately in the future.
AUDIT_TIMESTAMPS = frozenset({"CreatedDate", "LastModifiedDate", "SystemModstamp"})
# Schema-level failures have no row index in pandera's failure cases.
SCHEMA_LEVEL = "schema"
BATCH_REJECTED = "batch rejected"


@dataclass(frozen=True)
class ObjectRules:
    """What a valid change row of one object looks like, from describe."""

    name: str
    key_prefix: str | None = None
    required: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    timestamps: tuple[str, ...] = ()

    @classmethod
    def from_describe(cls, describe: "ObjectDescribe", spec: "ObjectSpec") -> "ObjectRules":
        """Rules for the columns the merge spec has.

        Required = not nillable, not calculated, and not a boolean (Salesforce booleans
        are never null); checked on snapshots (Bulk/REST rows) of live records.
        """
        columns = set(spec.columns)
        required, references, stamps = [], [], []
        for f in describe.fields:
            col = f.name.lower()
            if col not in columns:
                continue
            if not f.nillable and not f.calculated and f.type != "boolean":
                required.append(col)
            if f.type == "reference":
                references.append(col)
            if f.type == "datetime" and f.name in AUDIT_TIMESTAMPS:
                stamps.append(col)
        return cls(
            describe.name, describe.key_prefix, tuple(required), tuple(references), tuple(stamps)
        )


@dataclass
class Validation:
    """One batch, validated: the rows to append and the rows to quarantine."""

    rows: int
    good: pa.Table
    quarantine: pl.DataFrame  # change_id, record_id, reason, payload
    schema_errors: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        """Rows that failed row-level checks (or all rows of a rejected batch)."""
        return self.quarantine.height

    def rate_pct(self) -> float:
        """Quarantined share of the batch, percent."""
        return 100.0 * self.quarantined / self.rows if self.rows else 0.0


def _sane(col: str, now: dt.datetime, *, fills_exempt: bool = False) -> Any:
    import pandera.polars as pa_pl

    latest = now + FUTURE_TOLERANCE
    # A fill's version sorts below every real change on purpose (epoch 0): not corrupt.
    exempt = pl.col("change_type") == "FILL" if fills_exempt else pl.lit(False)
    return pa_pl.Check(
        lambda data: data.lazyframe.select(
            pl.col(col).is_null() | pl.col(col).is_between(EARLIEST_SANE, latest) | exempt
        ),
        name=f"{col}_sane",
        error=f"{col}_sane: before 1999 or in the future",
    )


def pandera_schema(rules: ObjectRules, now: dt.datetime | None = None) -> Any:
    """The `pandera.polars.DataFrameSchema` of a change batch of `rules.name`."""
    import pandera.polars as pa_pl

    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    id_check = pa_pl.Check.str_matches(RECORD_ID_RE.pattern)
    record_checks = [id_check]
    if rules.key_prefix:
        record_checks.append(pa_pl.Check.str_startswith(rules.key_prefix))
    columns = {
        "change_id": pa_pl.Column(str, nullable=False),
        "record_id": pa_pl.Column(str, checks=record_checks, nullable=False),
        "source": pa_pl.Column(str, checks=pa_pl.Check.isin(SOURCES), nullable=False),
        "change_type": pa_pl.Column(
            str, checks=pa_pl.Check.isin(CHANGE_TYPES + GAP_TYPES), nullable=False
        ),
        "version": pa_pl.Column(str, nullable=False),
        "change_date": pa_pl.Column(pl.Date, nullable=False),
        "set_fields": pa_pl.Column(pl.List(pl.String), nullable=False),
        "commit_ts": pa_pl.Column(pl.Datetime, nullable=True),
        "system_modstamp": pa_pl.Column(pl.Datetime, nullable=True),
        "version_ts": pa_pl.Column(pl.Datetime, nullable=False),
    }
    for col in rules.references:
        columns[col] = pa_pl.Column(str, checks=id_check, nullable=True, required=False)
    frame_checks = [_sane(c, now) for c in ("commit_ts", "system_modstamp")]
    frame_checks.append(_sane("version_ts", now, fills_exempt=True))
    frame_checks += [_sane(c, now) for c in rules.timestamps]
    for col in rules.required:
        # A snapshot of a live record must carry the required fields. CDC CREATE events
        # are exempt: they carry no SystemModstamp (DESIGN §4) and omit system fields.
        frame_checks.append(
            pa_pl.Check(
                lambda data, col=col: data.lazyframe.select(
                    (pl.col("change_type") != "SNAPSHOT")
                    | pl.col("is_deleted").fill_null(False)
                    | pl.col(col).is_not_null()
                ),
                name=f"{col}_required",
                error=f"{col}_required: null in a snapshot of a live record",
            )
        )
    return pa_pl.DataFrameSchema(
        columns, checks=frame_checks, strict=False, coerce=False, name=rules.name
    )


def _reason(column: Any, check: str) -> str:
    return f"{column}: {check}" if column else check


def validate_batch(
    rules: ObjectRules, batch: pa.Table, now: dt.datetime | None = None
) -> Validation:
    """Validate a change batch; split it into good rows and quarantined rows with reasons.

    Reasons name the column and the check, never the value (it can be personal data).
    """
    import pandera.errors as pa_errors

    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    empty = pl.DataFrame(
        schema={
            "change_id": pl.String,
            "record_id": pl.String,
            "reason": pl.String,
            "payload": pl.String,
        }
    )
    try:
        pandera_schema(rules, now).validate(frame, lazy=True)
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases
    except pa_errors.SchemaError as exc:  # non-lazy paths (defensive)
        return _rejected(frame, batch, [str(exc.reason_code or exc)], empty)
    else:
        return Validation(frame.height, batch, empty)
    schema_level = cases.filter(pl.col("index").is_null())
    if schema_level.height:
        errors = sorted(
            {
                _reason(c, k)
                for c, k in zip(schema_level["column"], schema_level["check"], strict=True)
            }
        )
        return _rejected(frame, batch, errors, empty)
    by_row = (
        cases.with_columns(
            pl.struct("schema_context", "column", "check")
            .map_elements(
                lambda s: _reason(
                    None if s["schema_context"] == "DataFrameSchema" else s["column"], s["check"]
                ),
                return_dtype=pl.String,
            )
            .alias("reason")
        )
        .group_by("index")
        .agg(pl.col("reason").unique().sort().str.join("; "))
    )
    indexed = frame.with_row_index("index").with_columns(pl.col("index").cast(pl.Int32))
    bad = indexed.join(by_row, on="index", how="inner").sort("index")
    good_mask = ~indexed["index"].is_in(bad["index"].implode())
    reasons: dict[str, int] = {}
    for text in bad["reason"]:
        for part in text.split("; "):
            reasons[part] = reasons.get(part, 0) + 1
    return Validation(
        rows=frame.height,
        good=batch.filter(pa.array(good_mask.to_list())),
        quarantine=bad.select("change_id", "record_id", "reason", "payload"),
        reasons=reasons,
    )


def _rejected(
    frame: pl.DataFrame, batch: pa.Table, errors: list[str], empty: pl.DataFrame
) -> Validation:
    reason = f"{BATCH_REJECTED}: schema-level failure ({'; '.join(errors)})"
    cols = [c for c in ("change_id", "record_id", "payload") if c in frame.columns]
    q = frame.select([pl.col(c).cast(pl.String) for c in cols]).with_columns(
        pl.lit(reason).alias("reason")
    )
    for c in empty.columns:
        if c not in q.columns:
            q = q.with_columns(pl.lit(None, dtype=pl.String).alias(c))
    return Validation(
        rows=frame.height,
        good=batch.slice(0, 0),
        quarantine=q.select(empty.columns),
        schema_errors=errors,
        reasons={reason: frame.height},
    )


# The temp table of a run's touched ids where the dialect has no index (Snowflake).
CHECK_IDS_TABLE = "sfdc_tmp_check_ids"


def touched_id_counts(
    warehouse: "Warehouse", spec: "ObjectSpec", record_ids: pa.Array | pa.ChunkedArray
) -> tuple[int, int]:
    """(current rows, duplicated ids) among `record_ids` (a batch's, repeats allowed).

    Reads only those ids: on DuckDB inlined `id IN (...)` lists of at most
    `LITERAL_ID_LIMIT` ids, answered from current's PRIMARY KEY index; on Snowflake a
    temp table of the ids, which search optimization on current's `id` prunes by.
    Ids that are not record ids (a gap event's wildcard) are left out: no row has them.
    """
    import pyarrow.compute as pc

    from sync_engine import statements as st
    from sync_engine.apply import LITERAL_ID_LIMIT

    d = dialect_of(warehouse)
    ids = pc.unique(pc.drop_null(record_ids))
    ids = ids.filter(pc.match_substring_regex(ids, f"^(?:{RECORD_ID_RE.pattern})$"))
    if len(ids) == 0:
        return 0, 0
    s = warehouse.schema_names
    if not d.point_lookups:
        warehouse.load_temp_table(
            CHECK_IDS_TABLE, f"{d.q('id')} VARCHAR(18)", pa.table({"id": ids})
        )
        rows, dupes = warehouse.query(
            st.id_counts(d, spec, s, f"SELECT {d.q('id')} FROM {d.q(CHECK_IDS_TABLE)}")
        )[0]
        return int(rows), int(dupes or 0)
    rows = dupes = 0
    values = ids.to_pylist()
    for start in range(0, len(values), LITERAL_ID_LIMIT):
        chunk = values[start : start + LITERAL_ID_LIMIT]
        # Distinct ids per chunk: a duplicate is two rows of one id, so chunks add up.
        r, k = warehouse.query(st.id_counts(d, spec, s, d.id_list(chunk)))[0]
        rows, dupes = rows + int(r), dupes + int(k or 0)
    return rows, dupes


# A run that touched at least this share of current's rows is checked by one count over
# the whole table instead: at most 1/share times the batch's rows, so still O(batch), and
# far cheaper than the id lists at that size (a 1M-row bootstrap spent 24.8 s of its
# 120 s in 20 parts' lists of 20,000 ids; the whole count takes ~0.3 s).
WHOLE_TABLE_CHECK_SHARE = 0.1
SCOPE_TOUCHED = "ids this run touched"
SCOPE_WHOLE = "whole table (the run touched at least a tenth of it)"


def current_rows(warehouse: "Warehouse", spec: "ObjectSpec") -> int:
    """Rows of the object's current table, from metadata: Snowflake answers `COUNT(*)` of
    a table from its micro-partition metadata; DuckDB's would scan, so its catalog's
    estimate (the engine's own sizing, `apply.table_rows_estimate`)."""
    d = dialect_of(warehouse)
    if d.name == "duckdb":
        from sync_engine.apply import table_rows_estimate

        return table_rows_estimate(warehouse, warehouse.schema_names.current, spec)
    table = d.table(warehouse.schema_names.current, spec.table)
    return int(warehouse.query(f"SELECT COUNT(*) FROM {table}")[0][0])


def run_id_counts(
    warehouse: "Warehouse",
    spec: "ObjectSpec",
    touched: int,
    id_arrays: Callable[[], Iterable[pa.Array | pa.ChunkedArray]],
) -> tuple[int, int, str]:
    """`current_id_unique` of a whole run: (rows checked, duplicated ids, scope).

    `touched`: how many ids the run's parts touched (an upper bound: a record in two parts
    counts twice); `id_arrays()`: those ids, read only when the check is scoped. A run that
    touched at least `WHOLE_TABLE_CHECK_SHARE` of current (a bootstrap, a large re-backfill)
    is checked over the whole table, in one count.
    """
    from sync_engine import statements as st

    if touched == 0:
        return 0, 0, SCOPE_TOUCHED
    if touched >= WHOLE_TABLE_CHECK_SHARE * current_rows(warehouse, spec):
        d = dialect_of(warehouse)
        rows, dupes = warehouse.query(st.id_counts(d, spec, warehouse.schema_names, None))[0]
        return int(rows), int(dupes or 0), SCOPE_WHOLE
    rows = dupes = 0
    for ids in id_arrays():
        r, k = touched_id_counts(warehouse, spec, ids)
        rows, dupes = rows + r, dupes + k
    return rows, dupes, SCOPE_TOUCHED


def id_unique_result(
    asset_key: dg.AssetKey, rows: int, duplicates: int, scope: str = SCOPE_TOUCHED
) -> dg.AssetCheckResult:
    """`current_id_unique` of a run: no id the run touched appears twice in current."""
    return dg.AssetCheckResult(
        check_name=CURRENT_ID_UNIQUE,
        asset_key=asset_key,
        passed=duplicates == 0,
        metadata={
            "scope": scope,
            "rows_checked": rows,
            "duplicate_ids": duplicates,
        },
    )


def full_id_unique_result(
    warehouse: "Warehouse", object_name: str, asset_key: dg.AssetKey
) -> dg.AssetCheckResult:
    """`current_id_unique_full`: no Id appears twice anywhere in the current table."""
    from sync_engine import statements as st
    from sync_engine.spec import ObjectSpec

    # id_counts reads only the spec's table name.
    spec = ObjectSpec(object_name, ())
    schema, table = warehouse.schema_names.current, spec.table
    if not table_exists(warehouse, schema, table):
        return dg.AssetCheckResult(
            check_name=CURRENT_ID_UNIQUE_FULL,
            asset_key=asset_key,
            passed=True,
            description=f"{schema}.{table} does not exist yet: nothing to check",
            metadata={"rows": 0, "duplicate_ids": 0},
        )
    d = dialect_of(warehouse)
    rows, dupes = warehouse.query(st.id_counts(d, spec, warehouse.schema_names, None))[0]
    return dg.AssetCheckResult(
        check_name=CURRENT_ID_UNIQUE_FULL,
        asset_key=asset_key,
        passed=int(dupes or 0) == 0,
        metadata={"scope": "whole table", "rows": int(rows), "duplicate_ids": int(dupes or 0)},
    )


def id_unique_full_check(object_name: str, asset_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """`current_id_unique_full` on an object's current table, run nightly (error severity).

    The per-run `current_id_unique` reads only the ids the run touched; this one counts
    distinct ids over the whole table, once a night (`sfdc_nightly_checks`).
    """

    @dg.asset_check(
        asset=asset_key,
        name=CURRENT_ID_UNIQUE_FULL,
        description=(
            f"Every Id of {object_name} appears once in the whole current table (a full "
            "scan: run nightly by sfdc_nightly_checks; each sync run checks the ids it "
            "touched in current_id_unique)."
        ),
        required_resource_keys={"warehouse"},
        blocking=False,
    )
    def _full_unique(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        warehouse = context.resources.warehouse
        try:
            return full_id_unique_result(warehouse, object_name, asset_key)
        finally:
            warehouse.close()

    return _full_unique


def lag_result(
    asset_key: dg.AssetKey,
    last_commit: dt.datetime | None,
    target_minutes: int | None,
    now: dt.datetime | None = None,
) -> dg.AssetCheckResult:
    """`cdc_lag`: age of the newest CDC commit applied by this run vs the freshness target."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if last_commit is None:
        return dg.AssetCheckResult(
            check_name=CDC_LAG,
            asset_key=asset_key,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"note": "no CDC change applied by this run"},
        )
    lag = max((now - last_commit).total_seconds(), 0.0)
    limit = (target_minutes or 60) * 60
    return dg.AssetCheckResult(
        check_name=CDC_LAG,
        asset_key=asset_key,
        passed=lag <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"cdc_lag_seconds": round(lag, 3), "target_seconds": limit},
    )


def live_count_check(
    object_name: str, asset_key: dg.AssetKey, table: str
) -> dg.AssetChecksDefinition:
    """`live_count_matches_salesforce` on an object's current table (warn severity).

    One `SELECT COUNT()` API call; run it on a schedule, not with every micro-batch:
    hourly (`reconcile_schedule`), nightly for the polled objects (`counted_nightly`: a
    COUNT() over 500M activities risks the query timeout). Changes in flight (the CDC lag)
    make small transient differences normal.
    """

    @dg.asset_check(
        asset=asset_key,
        name=RECONCILE,
        description=(
            f"Live {object_name} rows in the warehouse equal Salesforce's queryAll "
            "SELECT COUNT() WHERE IsDeleted = false (archived activities included, as the "
            "warehouse holds them; warn: changes in flight make brief differences normal, "
            "a lasting one is drift that `reconciled_with_salesforce` finds and repairs)."
        ),
        required_resource_keys={"warehouse", "salesforce"},
        pool="salesforce_api",
        blocking=False,
    )
    def _reconcile(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        client = context.resources.salesforce.client()
        try:
            return live_count_result(
                context.resources.warehouse,
                object_name,
                table,
                lambda: client.rest.count(object_name, "IsDeleted = false", include_deleted=True),
            )
        finally:
            client.close()

    return _reconcile


def table_exists(warehouse: "Warehouse", schema: str, table: str) -> bool:
    """Whether `schema.table` exists. Compared case-insensitively: Snowflake's
    information_schema holds the upper-case names the engine creates (quoted upper case),
    DuckDB's the lower-case ones."""
    d = dialect_of(warehouse)
    return bool(
        warehouse.query(
            "SELECT COUNT(*) FROM information_schema.tables "
            f"WHERE UPPER(table_schema) = UPPER({d.string(schema)}) "
            f"AND UPPER(table_name) = UPPER({d.string(table)})"
        )[0][0]
    )


def live_count_result(
    warehouse: "Warehouse", object_name: str, table: str, salesforce_live: Callable[[], int]
) -> dg.AssetCheckResult:
    """Compare current's live rows with `salesforce_live()` (called only when synced).

    Salesforce is counted with queryAll: the warehouse keeps archived activities (queryAll
    returns them, query does not), so `query` would report them as drift.
    """
    d = dialect_of(warehouse)
    schema = warehouse.schema_names.current
    if not table_exists(warehouse, schema, table):
        # Not synced yet (its bootstrap is pending): nothing to compare, nothing drifted.
        return dg.AssetCheckResult(
            check_name=RECONCILE,
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{schema}.{table} does not exist yet: not synced, not compared",
            metadata={"compared": False},
        )
    sf_live = int(salesforce_live())
    wh_live = int(
        warehouse.query(
            f"SELECT COUNT(*) FROM {d.table(schema, table)} WHERE NOT {d.q('is_deleted')}"
        )[0][0]
    )
    return dg.AssetCheckResult(
        check_name=RECONCILE,
        passed=wh_live == sf_live,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "compared": True,
            "salesforce_live": sf_live,
            "warehouse_live": wh_live,
            "difference": wh_live - sf_live,
        },
    )


def reconciled_result(
    warehouse: "Warehouse",
    landing: "LandingStore",
    spec: "ObjectSpec | None",
    object_name: str,
    run_id: str,
    asset_key: dg.AssetKey,
) -> dg.AssetCheckResult:
    """`reconciled_with_salesforce` of a run: the report its raw step stored, and the proof
    after the apply (the same listing compared with current again).

    Passes when nothing differed; warns when drift was found and all of it repaired (the
    Slack check alert then says so once per incident); fails (error) when drift remains.
    """
    from sfdc_assets.reconcile import latest_report, load_report, remaining

    report = load_report(landing, object_name, run_id)
    if report is None:
        # A run that did not reconcile (a materialization from the UI): current as it is
        # now against the latest reconciliation's listing, which is still the truth for
        # what it listed (a newer stamp in current is a later change, not drift).
        latest = latest_report(landing, object_name)
        if latest is None or spec is None:
            return dg.AssetCheckResult(
                check_name=RECONCILED,
                asset_key=asset_key,
                passed=True,
                severity=dg.AssetCheckSeverity.WARN,
                description="never reconciled yet: nothing compared (sensor sfdc_reconcile)",
                metadata={"compared": 0},
            )
        left = remaining(warehouse, landing, spec, latest[1])
        return dg.AssetCheckResult(
            check_name=RECONCILED,
            asset_key=asset_key,
            passed=left == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"no reconciliation in this run: {left} record(s) differ from the listing of "
                f"run {latest[0]} ({latest[1].kind})"
            ),
            metadata={**latest[1].metadata(), "still_differing": left, "listing_run": latest[0]},
        )
    if spec is None:
        raise ValueError(f"{object_name}: a reconciliation ran but the registry has no spec")
    left = remaining(warehouse, landing, spec, report)
    metadata = {**report.metadata(), "still_differing": left}
    if left:
        return dg.AssetCheckResult(
            check_name=RECONCILED,
            asset_key=asset_key,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"{left} record(s) still differ from Salesforce after the repair "
                f"({report.deferred} deferred past max_rereads): docs/operations.md, "
                "Reconciliation"
            ),
            metadata=metadata,
        )
    if report.differing:
        return dg.AssetCheckResult(
            check_name=RECONCILED,
            asset_key=asset_key,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"{report.differing} of {report.compared} record(s) differed from Salesforce "
                f"({report.kind}); {report.repaired} change(s) repaired them, none differ now"
            ),
            metadata=metadata,
        )
    return dg.AssetCheckResult(
        check_name=RECONCILED,
        asset_key=asset_key,
        passed=True,
        description=f"{report.compared} record(s) compared ({report.kind}): all equal",
        metadata=metadata,
    )


def check_keys(asset_key: dg.AssetKey, names: Sequence[str]) -> list[dg.AssetCheckKey]:
    """Check keys of `names` on `asset_key`."""
    return [dg.AssetCheckKey(asset_key, n) for n in names]


RECONCILE_JOB = "sfdc_reconcile"
# Hourly: one COUNT() call per CDC object an hour is ~0.01 % of a typical org's daily API
# allowance. The polled objects' counts run nightly instead (`counted_nightly`).
RECONCILE_CRON = "17 * * * *"


NIGHTLY_CHECKS_JOB = "sfdc_nightly_checks"


def counted_nightly(sync: Any) -> list[Any]:
    """The objects whose `live_count_matches_salesforce` runs nightly, not hourly: those
    with `mode: polling` (from objects.yaml, so a newly polled object follows).

    Polled objects are the ones too big or too busy for CDC: Task and Event hold ~500M rows
    in production (issue 11), and a `SELECT COUNT()` over them every hour is a heavy query
    that risks Salesforce's query timeout. Their poll's overlap and the hourly `recent`
    reconciliation keep them right between counts; one count a night, off-peak, still finds
    a lasting difference.
    """
    return [o for o in sync.objects if o.mode == "polling"]


def nightly_checks_schedule(sync: Any) -> dg.ScheduleDefinition:
    """Runs every object's whole-table checks on the nightly cron (`settings.dbt`), and the
    live-count check of the objects `counted_nightly` (too big for an hourly COUNT())."""
    keys = [full_unique_check(o) for o in sync.objects]
    keys += [reconcile_check(o) for o in counted_nightly(sync)]
    job = dg.define_asset_job(
        NIGHTLY_CHECKS_JOB,
        selection=dg.AssetSelection.checks(*keys),
        description=(
            "Whole-table checks of every current table (a full scan each), and the "
            "Salesforce live count of the polled objects."
        ),
    )
    return dg.ScheduleDefinition(
        name=NIGHTLY_CHECKS_JOB,
        job=job,
        cron_schedule=sync.settings.dbt.nightly_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            "Nightly whole-table Id uniqueness of every current table; live count of the "
            "polled objects (an hourly COUNT() over Task/Event risks the query timeout)."
        ),
    )


def reconcile_schedule(sync: Any) -> dg.ScheduleDefinition | None:
    """Runs `live_count_matches_salesforce` hourly for every object but those
    `counted_nightly` (their COUNT() is too heavy to repeat every hour); None when no
    object is left."""
    nightly = {o.name for o in counted_nightly(sync)}
    keys = [reconcile_check(o) for o in sync.objects if o.name not in nightly]
    if not keys:
        return None
    job = dg.define_asset_job(RECONCILE_JOB, selection=dg.AssetSelection.checks(*keys))
    return dg.ScheduleDefinition(
        job=job, cron_schedule=RECONCILE_CRON, default_status=dg.DefaultScheduleStatus.RUNNING
    )
